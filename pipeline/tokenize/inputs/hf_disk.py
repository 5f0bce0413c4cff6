"""A folder written by Hugging Face `datasets` `save_to_disk` as an input (local or any fsspec URL).

- A `Dataset` folder holds `state.json` (its `_data_files` name the data files, Arrow IPC streams,
  in order) and `dataset_info.json`.
- A `DatasetDict` folder holds `dataset_dict.json` (`{"splits": [...]}`) and one `Dataset` folder
  per split: every split is an input, in the listed order.

The folder expands (expand.py) into its data files, each an input file of its own with its own
canonical URL and version, planned by the `arrow` format. A dataset saved with an indices mapping
(`_indices_data_files`, from `select`/`shuffle`/`filter` without `flatten_indices` in old
`datasets` versions) is refused: its data files hold rows the dataset does not have, in another
order. Nothing here reads `dataset_info.json`: the data files' own schemas say what the columns are.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.errors import InputError
from pipeline.output.storage import with_retries

STATE = "state.json"
DATASET_DICT = "dataset_dict.json"


def _json(fs: Any, path: str) -> Any:
    """The parsed JSON file at `path`, None when there is none."""
    try:
        data = with_retries(lambda: fs.cat_file(path), f"read {path}")
    except (FileNotFoundError, IsADirectoryError):
        return None
    try:
        return json.loads(data)
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


def _plain_name(name: Any) -> bool:
    """A file or folder name inside the dataset's folder (no path, nothing that leaves it)."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
    )


def _dataset_files(folder: str, state: dict) -> list[str]:
    """The data files a `Dataset` folder's state.json lists, in its order."""
    where = f"{folder}/{STATE}"
    if state.get("_indices_data_files"):
        raise InputError(
            f"{where}: the dataset was saved with an indices mapping (_indices_data_files), so its "
            "data files do not hold its rows in order; call dataset.flatten_indices() before "
            "save_to_disk and use that folder"
        )
    names = [f.get("filename") if isinstance(f, dict) else None for f in state["_data_files"]]
    bad = [n for n in names if not _plain_name(n)]
    if bad:
        raise InputError(f"{where}: _data_files holds {bad[0]!r}, not a file name in the folder")
    return [f"{folder}/{name}" for name in names]


def _state(fs: Any, folder: str) -> dict | None:
    """A folder's state.json, when it is that of a `Dataset` (it lists `_data_files`)."""
    state = _json(fs, f"{folder}/{STATE}")
    if not isinstance(state, dict) or "_data_files" not in state:
        return None
    if not isinstance(state["_data_files"], list):
        raise InputError(f"{folder}/{STATE}: _data_files is not a list")
    return state


def saved_dataset_files(fs: Any, path: str) -> list[str] | None:
    """The data files (paths on `fs`) of a `save_to_disk` folder: a Dataset's, or those of every
    split of a DatasetDict in the order `dataset_dict.json` lists them; None when the folder is
    neither."""
    folder = path.rstrip("/") or path
    state = _state(fs, folder)
    if state is not None:
        return _dataset_files(folder, state)
    info = _json(fs, f"{folder}/{DATASET_DICT}")
    if info is None:
        return None
    splits = info.get("splits") if isinstance(info, dict) else None
    if not isinstance(splits, list) or not all(_plain_name(s) for s in splits):
        raise InputError(f"{folder}/{DATASET_DICT}: 'splits' is not a list of folder names")
    files: list[str] = []
    for split in splits:
        split_state = _state(fs, f"{folder}/{split}")
        if split_state is None:
            raise InputError(
                f"{folder}/{split}: split {split!r} of {folder}/{DATASET_DICT} has no {STATE} "
                "listing _data_files"
            )
        files.extend(_dataset_files(f"{folder}/{split}", split_state))
    return files
