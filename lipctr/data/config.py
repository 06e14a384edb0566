"""`DataConfig`: what to read and how to preprocess it; the datasets root (the presets are in
lipctr.data.registry).

A config is plain, frozen data. Its mappings (`load_col`, `files`, `columns`, `field_types`) are
normalised to dicts of tuples / strings; equality and hashing go by value.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

from lipctr.data.errors import DataError

TABLES = ("inter", "user", "item")
FORMATS = ("atomic", "grouplens", "csv", "parquet", "synthetic", "auto")
RAW_KINDS = ("token", "token_seq", "float", "float_seq")
DATA_ENV = "LIPCTR_DATA"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How to read one dataset and preprocess it into a `Dataset`.

    format: "atomic" (RecBole <stem>.inter/.user/.item), "grouplens" (ML-1M ratings.dat /
      users.dat / movies.dat or ml-1m.zip), "csv" / "parquet" (users' own tables, see `files`),
      "synthetic" (`name` is a synthetic preset), "auto" (atomic if <stem>.inter exists, else
      grouplens).
    path: the dataset folder; None = <datasets root>/<name>. Caches go to <path>/cache/.
    file_stem: base name of the atomic files; None = name.
    load_col: per table ("inter", "user", "item"), the columns to load (RecBole's load_col);
      a table left out is not read; None = every column of every table present.
      Loaded columns other than rating / timestamp / label are model inputs.
    files: csv / parquet: table -> file name inside `path` (default {"inter": "<stem>.csv"}).
    columns: renames raw column -> field name, e.g. {"userId": "user_id"} (csv / parquet).
    field_types: csv / parquet: field -> kind ("token", "token_seq", "float", "float_seq");
      fields not listed are tokens (ids, rating and timestamp are always handled as such).
    delimiter / encoding: None = the format's default ("\\t" / utf-8 atomic, "," / utf-8 csv).
    seq_separator: separator of the tokens of a token_seq value (a str cell).
    k_core: iterative filter keeping users and items with >= k_core interactions (0 = none).
    num_ratings / threshold: ratings must be integers 1..N; label = rating > threshold.
    split_ratios / split_seed: seeded random split of the interactions into train/valid/test.
    max_seq_len: token_seq fields keep their first max_seq_len tokens (None = the longest).
    synthetic_seed: seed of the synthetic generator (format "synthetic" only).
    """

    name: str
    format: str = "atomic"
    path: str | None = None
    file_stem: str | None = None
    load_col: Mapping[str, tuple[str, ...]] | None = None
    files: Mapping[str, str] | None = None
    columns: Mapping[str, str] | None = None
    field_types: Mapping[str, str] | None = None
    delimiter: str | None = None
    encoding: str | None = None
    seq_separator: str = " "
    k_core: int = 0
    num_ratings: int = 5
    threshold: int = 3
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 2020
    max_seq_len: int | None = None
    synthetic_seed: int = 0

    def __post_init__(self):
        where = f"DataConfig(name={self.name!r})"
        if not isinstance(self.name, str) or not self.name:
            raise DataError(f"DataConfig: name must be a non-empty string, got {self.name!r}")
        if self.format not in FORMATS:
            raise DataError(f"{where}: format {self.format!r} unknown; expected one of {FORMATS}")
        if self.load_col is not None:
            _check_tables(where, "load_col", self.load_col)
            load_col = {t: tuple(_as_names(where, t, c)) for t, c in self.load_col.items()}
            object.__setattr__(self, "load_col", load_col)
        if self.files is not None:
            _check_tables(where, "files", self.files)
            object.__setattr__(self, "files", {t: str(f) for t, f in self.files.items()})
        if self.columns is not None:
            object.__setattr__(self, "columns", {str(k): str(v) for k, v in self.columns.items()})
        if self.field_types is not None:
            bad = {k: v for k, v in self.field_types.items() if v not in RAW_KINDS}
            if bad:
                raise DataError(f"{where}: field_types {bad} not in {RAW_KINDS}")
            object.__setattr__(self, "field_types", dict(self.field_types))
        _check_int(where, "k_core", self.k_core, 0)
        _check_int(where, "num_ratings", self.num_ratings, 2)
        _check_int(where, "threshold", self.threshold, 1)
        if self.threshold >= self.num_ratings:
            raise DataError(
                f"{where}: threshold {self.threshold} must be below num_ratings {self.num_ratings} "
                "(label = rating > threshold)"
            )
        if self.max_seq_len is not None:
            _check_int(where, "max_seq_len", self.max_seq_len, 1)
        _check_int(where, "split_seed", self.split_seed, 0)
        _check_int(where, "synthetic_seed", self.synthetic_seed, 0)
        ratios = tuple(float(r) for r in self.split_ratios)
        if len(ratios) != 3 or min(ratios) <= 0 or not math.isclose(sum(ratios), 1.0):
            raise DataError(
                f"{where}: split_ratios must be 3 positive numbers summing to 1, "
                f"got {self.split_ratios}"
            )
        object.__setattr__(self, "split_ratios", ratios)
        if not self.seq_separator:
            raise DataError(f"{where}: seq_separator must be a non-empty string")

    def __hash__(self) -> int:
        return hash(json.dumps(dataclasses.asdict(self), sort_keys=True, default=list))

    @property
    def stem(self) -> str:
        return self.file_stem or self.name


def _check_tables(where: str, key: str, mapping) -> None:
    if not isinstance(mapping, Mapping):
        raise DataError(f"{where}: {key} must be a mapping of table -> value, got {mapping!r}")
    unknown = sorted(set(mapping) - set(TABLES))
    if unknown:
        raise DataError(f"{where}: {key} has unknown table(s) {unknown}; tables are {TABLES}")


def _as_names(where: str, table: str, columns) -> list[str]:
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise DataError(f"{where}: load_col[{table!r}] must be a list of column names, got {columns!r}")
    return list(columns)


def _check_int(where: str, key: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"{where}: {key} must be an int >= {minimum}, got {value!r}")


def datasets_root() -> Path:
    """$LIPCTR_DATA if set, else <repo>/datasets (or ./datasets outside a source checkout)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    repo = Path(__file__).resolve().parents[2]
    return repo / "datasets" if (repo / "pyproject.toml").exists() else Path.cwd() / "datasets"


def dataset_dir(config: DataConfig) -> Path:
    """The folder holding the dataset's files and its cache/ folder."""
    if config.path is not None:
        return Path(config.path).expanduser()
    folder = f"synthetic-{config.name}" if config.format == "synthetic" else config.name
    return datasets_root() / folder
