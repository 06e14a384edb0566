"""Where a dataset's files are: the format "auto" resolves to, the files each format reads, and
the message naming what to put where when they are missing. Never fetches or writes anything."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lipctr.data import atomic, grouplens, tabular
from lipctr.data.config import DATA_ENV, DataConfig, dataset_dir, datasets_root
from lipctr.data.errors import DatasetNotFoundError

SOURCES = {
    "ml-1m": "GroupLens's ml-1m.zip (https://grouplens.org/datasets/movielens/1m/), or the "
    "ratings.dat, users.dat and movies.dat extracted from it (directly or in an ml-1m/ sub-folder)",
    "yelp2018": "RecBole's yelp2018 atomic files (RUCAIBox/RecSysDatasets, converted from "
    "https://www.yelp.com/dataset)",
    "amazon-book": "RecBole's Amazon_Books atomic files (RUCAIBox/RecSysDatasets, converted from "
    "http://jmcauley.ucsd.edu/data/amazon/)",
}


def resolve_format(config: DataConfig) -> DataConfig:
    """Format "auto" -> "atomic" when <stem>.inter exists, else "grouplens"."""
    if config.format != "auto":
        return config
    has_atomic = (dataset_dir(config) / f"{config.stem}.inter").is_file()
    return dataclasses.replace(config, format="atomic" if has_atomic else "grouplens")


def wanted_files(config: DataConfig) -> dict[str, Path]:
    """table -> the file an atomic / csv / parquet config reads (format resolved)."""
    return atomic.atomic_files(config) if config.format == "atomic" else tabular.tabular_files(config)


def present_files(config: DataConfig) -> list[Path]:
    """The files the dataset is read from (format resolved), else DatasetNotFoundError."""
    if config.format == "synthetic":
        return []
    if config.format == "grouplens":
        files = grouplens.source_files(config)
        if files is None:
            raise DatasetNotFoundError(not_found_message(config))
        return files
    wanted = wanted_files(config)
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
    wanted = wanted_files(config)
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
