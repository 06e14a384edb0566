"""`load_dataset`: read -> filter -> remap -> split -> arrays, with the on-disk cache.

The cache lives in <dataset folder>/cache/<name>-<key>.npz (see lipctr.data.cache): the only
thing ever written into a dataset folder. ML-100K is fetched from PyPI when its files are absent
from the project's own folder <datasets root>/ml-100k (DataConfig.path None); a folder the user
gave is only read, and missing files there, as for every other dataset, raise
DatasetNotFoundError naming the files and the folder.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from lipctr.data import atomic, fetch, grouplens, synthetic, tabular
from lipctr.data.cache import cache_key, load_cache, save_cache
from lipctr.data.config import DataConfig, dataset_dir
from lipctr.data.errors import DataError, DataWarning
from lipctr.data.locate import fetchable, present_files, resolve_format, wanted_files
from lipctr.data.preprocess import preprocess
from lipctr.data.raw import RawData
from lipctr.data.schema import Dataset


def load_dataset(config: DataConfig, cache: bool = True) -> Dataset:
    """The preprocessed dataset of `config`, from <folder>/cache/ when an entry matches the
    current files and config. Dataset.stats holds the counts of every step."""
    return load_with_rows(config, cache)[0]


def load_with_rows(config: DataConfig, cache: bool = True) -> tuple[Dataset, dict[str, np.ndarray]]:
    """(dataset, rows): rows[split] = the raw interaction-table row of each example of the split.
    Each of dataset.stats["warnings"] is also issued as a DataWarning."""
    dataset, rows = _load(resolve_format(config), cache)
    for message in dataset.stats.get("warnings", []):
        warnings.warn(message, DataWarning, stacklevel=3)
    return dataset, rows


def _load(config: DataConfig, cache: bool) -> tuple[Dataset, dict[str, np.ndarray]]:
    path = None
    if cache:
        path = cache_file(config)
        cached = load_cache(path)
        if cached is not None:
            cached[0].stats.update(cache="hit", cache_file=str(path))
            return cached
    else:
        source_files(config)  # fetches ML-100K, or raises DatasetNotFoundError
    dataset, rows = preprocess(read_raw(config), config)
    dataset.stats["source"] = config.format
    if path is not None:
        save_cache(path, dataset, rows)
    dataset.stats.update(cache="written" if path else "off", cache_file=str(path) if path else None)
    return dataset, rows


def cache_file(config: DataConfig) -> Path:
    """<dataset folder>/cache/<name>-<key>.npz for the current files and config (format resolved)."""
    extra = {"generator": synthetic.GENERATOR_VERSION} if config.format == "synthetic" else None
    key = cache_key(config, source_files(config), extra)
    return dataset_dir(config) / "cache" / f"{config.name}-{key[:20]}.npz"


def read_raw(config: DataConfig) -> RawData:
    """The raw tables of `config` (format already resolved, files present)."""
    if config.format == "synthetic":
        return synthetic.synthetic_raw(config.name, config.synthetic_seed, num_ratings=config.num_ratings)
    readers = {"atomic": atomic.read_atomic, "grouplens": grouplens.read_grouplens,
               "csv": tabular.read_tabular, "parquet": tabular.read_tabular}
    if config.field_types and config.format in ("atomic", "grouplens"):
        raise DataError(
            f"DataConfig(name={config.name!r}): field_types is for csv / parquet; {config.format} "
            "files carry their own field types"
        )
    raw = readers[config.format](config)
    in_files = {c for table in raw.tables().values() for c in table.raw_columns}
    absent = sorted(set(config.columns or {}) - in_files)
    if in_files and absent:
        raise DataError(f"DataConfig(name={config.name!r}): columns (--columns, data.columns) renames {absent}, "
                        f"but no file has such a column; the files' columns are {sorted(in_files)}")
    loaded = {c for table in raw.tables().values() for c in table.frame.columns}
    unused = {old: new for old, new in (config.columns or {}).items() if new not in loaded}
    if unused:
        raise DataError(
            f"DataConfig(name={config.name!r}): columns renames {unused}, but no loaded table has "
            f"those raw columns; loaded fields are {sorted(loaded)}"
        )
    return raw


def source_files(config: DataConfig) -> list[Path]:
    """The files the dataset is read from, else DatasetNotFoundError. ML-100K is fetched when
    absent, but only into the default folder (config.path None), never into a user's folder."""
    if fetchable(config) and not all(p.is_file() for p in wanted_files(config).values()):
        fetch.fetch_ml100k(dataset_dir(config))
    return present_files(config)


def synthetic_dataset(preset: str | synthetic.SyntheticSizes = "tiny", seed: int = 0, *, num_ratings: int = 5,
                      threshold: int | None = None, proportions=None, return_preference: bool = False,
                      cache: bool = False, **overrides):
    """The synthetic preset through the normal preprocessing -> Dataset.

    With return_preference, -> (dataset, {split: continuous preference float64 [n]}) aligned with
    each split's rows (e.g. to re-bucket into other numbers of classes). `overrides` are
    DataConfig fields (k_core, split_ratios, split_seed, ...); cache=True uses the on-disk cache
    (named presets with default proportions only).
    """
    config = synthetic.synthetic_config(preset, seed, num_ratings, threshold, **overrides)
    if isinstance(preset, str) and proportions is None and not return_preference:
        return load_with_rows(config, cache)[0]
    raw, preference = synthetic.synthetic_raw(preset, seed, num_ratings=num_ratings, proportions=proportions,
                                    return_preference=True)
    dataset, rows = preprocess(raw, config)
    dataset.stats["source"] = "synthetic"
    if not return_preference:
        return dataset
    return dataset, {name: preference[part] for name, part in rows.items()}
