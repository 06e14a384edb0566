"""On-disk cache of preprocessed datasets: one uncompressed .npz per (files, config) key.

The key hashes the contents of the source files, the preprocessing config (its folder path
excluded) and CACHE_VERSION, so a changed file or config gives a new key. Files are written to a
temporary name in the cache folder and renamed into place, so a failed or interrupted write
never leaves a partial cache entry behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from lipctr.data.config import DataConfig
from lipctr.data.schema import Dataset, Schema, Split
from lipctr.io import write_atomically

CACHE_VERSION = 4  # 2: readers reject nameless columns and accept BOMs; stats["warnings"]. 3: raw-id vocabularies.
# 4: a warning for dropped duplicate (user, item) rows
SPLITS = ("train", "valid", "test")


def file_digest(path: Path) -> str:
    """sha256 hex digest of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(config: DataConfig, files: list[Path], extra: dict | None = None) -> str:
    """Hex key over the files' contents, the config (without path) and `extra`."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "path"}
    payload = {
        "version": CACHE_VERSION,
        "config": settings,
        "files": [[Path(f).name, file_digest(f)] for f in files],
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()


def save_cache(path: Path, dataset: Dataset, rows: dict[str, np.ndarray]) -> None:
    """Write `dataset` and its split rows to `path` atomically (temp file + os.replace)."""
    arrays, layout = {}, {}

    def put(group: str, name: str, array: np.ndarray) -> None:
        key = f"a{len(arrays)}"
        arrays[key] = np.ascontiguousarray(array)
        layout.setdefault(group, {})[name] = key

    for name, array in dataset.user_features.items():
        put("user", name, array)
    for name, array in dataset.item_features.items():
        put("item", name, array)
    for name, array in dataset.vocabularies.items():
        put("vocab", name, array)
    for split_name, split in dataset.splits.items():
        for name, array in split.features.items():
            put(f"{split_name}.features", name, array)
        put(split_name, "rating", split.rating)
        put(split_name, "label", split.label)
        put(split_name, "rows", rows[split_name])
    meta = {
        "version": CACHE_VERSION,
        "name": dataset.name,
        "schema": dataset.schema.to_dict(),
        "stats": dataset.stats,
        "layout": layout,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    write_atomically(path, lambda handle: np.savez(handle, **arrays))


def load_cache(path: Path) -> tuple[Dataset, dict[str, np.ndarray]] | None:
    """The cached (dataset, rows), or None if the file is absent, unreadable or of another version."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes().decode())
            if meta.get("version") != CACHE_VERSION:
                return None
            layout = meta["layout"]

            def group(name: str) -> dict[str, np.ndarray]:
                return {k: archive[v] for k, v in layout.get(name, {}).items()}

            splits, rows = {}, {}
            for name in SPLITS:
                targets = group(name)
                splits[name] = Split(group(f"{name}.features"), targets["rating"], targets["label"])
                rows[name] = targets["rows"]
            user_features, item_features, vocabularies = group("user"), group("item"), group("vocab")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        return None
    schema = Schema.from_dict(meta["schema"])
    dataset = Dataset(meta["name"], schema, splits["train"], splits["valid"], splits["test"],
                      user_features, item_features, meta["stats"], vocabularies)
    return dataset, rows
