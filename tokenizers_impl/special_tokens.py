"""Which tokens of a tokenizer end (EOS) and begin (BOS) a text, resolved from the tokenizer's own
word: explicit load options first, then a `tokenizer_config.json` beside the tokenizer file, then
tokenmill's historical default (`<|endoftext|>` as EOS), then well-known special tokens."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tokenizers_impl.errors import TokenizerError
from tokenizers_impl.files import read_optional_json, sibling

log = logging.getLogger("tokenmill.tokenizers")

CONFIG_FILE = "tokenizer_config.json"
MAX_CONFIG_BYTES = 16 << 20
EOS_FALLBACK = "<|endoftext|>"
# Special tokens that name their role, looked for (in this order) among the special added tokens
# when nothing else says which is which.
KNOWN = {
    "eos": ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>"),
    "bos": ("<|begin_of_text|>", "<|startoftext|>", "<s>", "<bos>", "<|bos|>"),
}


@dataclass(frozen=True)
class SpecialTokens:
    eos_token: str | None = None
    eos_id: int | None = None
    bos_token: str | None = None
    bos_id: int | None = None


def token_text(value: Any) -> str | None:
    """A token named in tokenizer_config.json: a string or an AddedToken dict {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def read_tokenizer_config(
    path: str, storage_options: dict | None = None, option: Any = None
) -> dict[str, Any]:
    """The tokenizer_config.json of a tokenizer file: `option` is a path or URL to read (it must
    exist), False to read none, or None for the one beside `path` (if any)."""
    if option is False:
        return {}
    if option is not None and not isinstance(option, str):
        raise TokenizerError(f"tokenizer_config must be a path or false, not {option!r}")
    url = option or sibling(path, CONFIG_FILE)
    data = read_optional_json(url, storage_options, limit=MAX_CONFIG_BYTES)
    if data is None and option:
        raise TokenizerError(f"tokenizer_config {url!r} does not exist")
    if data is not None and not isinstance(data, dict):
        raise TokenizerError(f"{url!r} must hold a JSON object")
    return data or {}


def resolve_special_tokens(
    lookup: Callable[[str], int | None],
    specials: Mapping[str, int],
    config: Mapping[str, Any] | None = None,
    eos_token: Any = None,
    bos_token: Any = None,
    what: str = "this tokenizer",
) -> SpecialTokens:
    """EOS and BOS of a tokenizer: `lookup(text)` gives a token's id (None when not a token);
    `specials` are its special tokens (text -> id); `config` its tokenizer_config.json;
    `eos_token`/`bos_token` explicit load options (a token's text; TokenizerError when it is not
    a token). Each is None when nothing names one."""
    eos = _resolve("eos", eos_token, lookup, specials, config or {}, what)
    bos = _resolve("bos", bos_token, lookup, specials, config or {}, what)
    return SpecialTokens(eos[0], eos[1], bos[0], bos[1])


def _resolve(
    role: str,
    option: Any,
    lookup: Callable[[str], int | None],
    specials: Mapping[str, int],
    config: Mapping[str, Any],
    what: str,
) -> tuple[str | None, int | None]:
    if option is not None:
        if not isinstance(option, str) or not option:
            raise TokenizerError(f"{role}_token must be a token's text, not {option!r}")
        token_id = lookup(option)
        if token_id is None:
            raise TokenizerError(f"{role}_token {option!r} is not a token of {what}")
        return option, token_id
    named = token_text(config.get(f"{role}_token"))
    if named is not None:
        token_id = lookup(named)
        if token_id is not None:
            return named, token_id
        log.warning("%s of %s names %s_token %r, which it lacks", CONFIG_FILE, what, role, named)
    candidates = ([EOS_FALLBACK] if role == "eos" else []) + [
        t for t in KNOWN[role] if t in specials
    ]
    for text in candidates:
        token_id = lookup(text)
        if token_id is not None:
            return text, token_id
    return None, None


def chat_template_of(config: Mapping[str, Any] | None) -> str | None:
    """The `chat_template` of a tokenizer_config.json: a string, or from a list of
    {name, template} the one named "default"; None when there is none."""
    value = (config or {}).get("chat_template")
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default")
    return value if isinstance(value, str) and value else None
