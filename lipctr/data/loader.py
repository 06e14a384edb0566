"""`load_dataset`: read -> filter -> remap -> split -> arrays, with the on-disk cache.

The cache lives in <dataset folder>/cache/<name>-<key>.npz (see lipctr.data.cache): the only
thing ever written into a dataset folder. ML-100K is fetched from PyPI when its files are absent
from the project's own folder <datasets root>/ml-100k (DataConfig.path None); a folder the user
gave is only read, and missing files there, as for every other dataset, raise
DatasetNotFoundError naming the files and the folder.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from lipctr.data import atomic, grouplens, tabular
from lipctr.data.cache import cache_key, load_cache, save_cache
from lipctr.data.config import DATA_ENV, DataConfig, dataset_dir, datasets_root
from lipctr.data.errors import DataError, DataWarning, DatasetNotFoundError
from lipctr.data.preprocess import preprocess
from lipctr.data.raw import RawData
from lipctr.data.schema import Dataset

SOURCES = {
    "ml-1m": "GroupLens's ml-1m.zip (https://grouplens.org/datasets/movielens/1m/), or the "
    "ratings.dat, users.dat and movies.dat extracted from it (directly or in an ml-1m/ sub-folder)",
    "yelp2018": "RecBole's yelp2018 atomic files (RUCAIBox/RecSysDatasets, converted from "
    "https://www.yelp.com/dataset)",
    "amazon-book": "RecBole's Amazon_Books atomic files (RUCAIBox/RecSysDatasets, converted from "
    "http://jmcauley.ucsd.edu/data/amazon/)",
}


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
    extra = {"generator": _synthetic().GENERATOR_VERSION} if config.format == "synthetic" else None
    key = cache_key(config, source_files(config), extra)
    return dataset_dir(config) / "cache" / f"{config.name}-{key[:20]}.npz"


def read_raw(config: DataConfig) -> RawData:
    """The raw tables of `config` (format already resolved, files present)."""
    if config.format == "synthetic":
        return _synthetic().synthetic_raw(config.name, config.synthetic_seed, num_ratings=config.num_ratings)
    readers = {"atomic": atomic.read_atomic, "grouplens": grouplens.read_grouplens,
               "csv": tabular.read_tabular, "parquet": tabular.read_tabular}
    if config.field_types and config.format in ("atomic", "grouplens"):
        raise DataError(
            f"DataConfig(name={config.name!r}): field_types is for csv / parquet; {config.format} "
            "files carry their own field types"
        )
    raw = readers[config.format](config)
    loaded = {c for table in raw.tables().values() for c in table.frame.columns}
    unused = {old: new for old, new in (config.columns or {}).items() if new not in loaded}
    if unused:
        raise DataError(
            f"DataConfig(name={config.name!r}): columns renames {unused}, but no loaded table has "
            f"those raw columns; loaded fields are {sorted(loaded)}"
        )
    return raw


def resolve_format(config: DataConfig) -> DataConfig:
    """Format "auto" -> "atomic" when <stem>.inter exists, else "grouplens"."""
    if config.format != "auto":
        return config
    has_atomic = (dataset_dir(config) / f"{config.stem}.inter").is_file()
    return dataclasses.replace(config, format="atomic" if has_atomic else "grouplens")


def source_files(config: DataConfig) -> list[Path]:
    """The files the dataset is read from, else DatasetNotFoundError. ML-100K is fetched when
    absent, but only into the default folder (config.path None), never into a user's folder."""
    if config.format == "synthetic":
        return []
    if config.format == "grouplens":
        files = grouplens.source_files(config)
        if files is None:
            raise DatasetNotFoundError(not_found_message(config))
        return files
    wanted = atomic.atomic_files(config) if config.format == "atomic" else tabular.tabular_files(config)
    if fetchable(config) and not all(p.is_file() for p in wanted.values()):
        from lipctr.data.fetch import fetch_ml100k

        fetch_ml100k(dataset_dir(config))
    if not all(p.is_file() for p in wanted.values()):
        raise DatasetNotFoundError(not_found_message(config))
    return list(wanted.values())


def fetchable(config: DataConfig) -> bool:
    """Whether missing files may be fetched: ML-100K's atomic files in the default folder only."""
    return config.path is None and config.format == "atomic" and config.stem == "ml-100k"


def not_found_message(config: DataConfig) -> str:
    """Which files to put in which folder for `config`."""
    config = resolve_format(config)
    folder = dataset_dir(config)
    where = f"Put them in {folder}/" + (
        "." if config.path is not None else f" (or set DataConfig.path, or ${DATA_ENV} for the datasets root).")
    atomic_names = ", ".join(f"{config.stem}.{t}" for t in (config.load_col or {"inter": 0}))
    if config.format == "grouplens" or config.name == "ml-1m":
        return (
            f"dataset {config.name!r} not found in {folder}: expected {SOURCES['ml-1m']}, "
            f"or RecBole's atomic {atomic_names}. {where}"
        )
    wanted = atomic.atomic_files(config) if config.format == "atomic" else tabular.tabular_files(config)
    missing = ", ".join(p.name for p in wanted.values() if not p.is_file())
    lacks = f"{folder} lacks {missing}" if folder.is_dir() else f"folder {folder} does not exist (expected {missing})"
    if config.format == "atomic":
        source = SOURCES.get(config.name, "the RecBole atomic files")
        fetch = ""
        if config.stem == "ml-100k":
            fetch = (f" ML-100K is fetched automatically only into the default folder "
                     f"{datasets_root() / 'ml-100k'} (no path given); a given folder is never written.")
        return (
            f"dataset {config.name!r} not found: {lacks}. Expected {source}: "
            f"{atomic_names} (tab-separated, header name:type). {where}{fetch}"
        )
    return f"dataset {config.name!r} not found: {lacks} (DataConfig.files). {where}"


def _synthetic():
    from lipctr.data import synthetic

    return synthetic
