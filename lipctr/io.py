"""Atomic writes: a file either exists whole or not at all.

The one writer of the project's output and data files: a temporary file beside the target,
fsync'ed, given the usual permissions (0666 less the umask, as `open` would give; mkstemp's
0600 would not be), then renamed onto the target.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call write(handle) on a temporary file beside `path`, fsync it, then os.replace it onto
    `path`. On any error the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    write_atomically(path, lambda handle: handle.write(data))


def write_text_atomic(path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def _to_jsonable(value):
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_json_atomic(path, value) -> None:
    write_text_atomic(path, json.dumps(_to_jsonable(value), indent=2) + "\n")


def save_npz_atomic(path, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


class OutputPathError(ValueError):
    """An output path that would overwrite an input, or that cannot be created."""


def check_output(flag: str, out, inputs: dict | None = None, folder: bool = False) -> None:
    """OutputPathError naming `flag` unless `out` can be written without touching an input.

    inputs: {name (a flag): a file or folder path, or None}. An output file may not be (after
    resolving links) an input file, an existing file inside an input folder, or a folder; an
    output folder (folder=True) may not be a file. Neither may lie below an existing file."""
    out = Path(out)
    target = out.resolve()
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"{flag} {out}: {parent} is a file, not a folder")
            break
    if folder:
        if target.exists() and not target.is_dir():
            raise OutputPathError(f"{flag} {out}: is a file, not a folder; give a folder (it is created if missing)")
        return
    if target.is_dir():
        raise OutputPathError(f"{flag} {out}: is a folder; give a file name")
    for name, path in (inputs or {}).items():
        if path is None:
            continue
        source = Path(path).resolve()
        if target == source:
            raise OutputPathError(f"{flag} {out}: is the input {name} {path} (the same file after resolving "
                                  "links); inputs are never overwritten: choose another output file")
        if source.is_dir() and target.exists() and source in target.parents:
            raise OutputPathError(f"{flag} {out}: is a file inside the input {name} {path}; inputs are never "
                                  "overwritten: choose another output file")
