"""Reading and writing tokenizer files through fsspec, with size limits (tokenizer files are
untrusted), and the one `url_to_fs` of the plugin layer."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import fsspec

from tokenizers_impl.errors import TokenizerError

MAX_TOKENIZER_FILE_BYTES = 512 << 20


def url_to_fs(
    url: str, storage_options: dict[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path for a URL (plain paths are local), as pipeline's storage wrapper
    makes them; the plugin layer sits below `pipeline` and does not import it."""
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


def read_file(
    url: str, storage_options: dict | None = None, limit: int = MAX_TOKENIZER_FILE_BYTES
) -> bytes:
    """Bytes of a tokenizer file; refuses missing files, folders and files over `limit`."""
    fs, path = url_to_fs(url, storage_options)
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        raise TokenizerError(f"tokenizer file {url!r} does not exist") from exc
    if info.get("type") != "file":
        raise TokenizerError(f"tokenizer path {url!r} is not a file")
    if int(info.get("size") or 0) > limit:
        raise TokenizerError(
            f"tokenizer file {url!r} is {info['size']} bytes, over the {limit}-byte limit"
        )
    return fs.cat_file(path)


def write_file(url: str, data: bytes, storage_options: dict | None = None) -> None:
    fs, path = url_to_fs(url, storage_options)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, data)


def read_json(url: str, storage_options: dict | None = None) -> Any:
    data = read_file(url, storage_options)
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"tokenizer file {url!r} is not valid JSON: {exc}") from exc


def read_optional_json(
    url: str, storage_options: dict | None = None, limit: int = MAX_TOKENIZER_FILE_BYTES
) -> Any:
    """`read_json` of a file that may be missing (None then)."""
    fs, path = url_to_fs(url, storage_options)
    if not fs.exists(path):
        return None
    data = read_file(url, storage_options, limit=limit)
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"{url!r} is not valid JSON: {exc}") from exc


def sibling(url: str, name: str) -> str:
    """The URL of file `name` in the folder of `url`."""
    return f"{url.rsplit('/', 1)[0]}/{name}" if "/" in url else name


@lru_cache(maxsize=1)
def probe_texts() -> tuple[str, ...]:
    """Multilingual probe texts used to check fast encoding paths and losslessness at load time."""
    return tuple(
        json.loads((Path(__file__).parent / "probe_texts.json").read_text(encoding="utf-8"))
    )
