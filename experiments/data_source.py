"""Which data a run trains on: the config's `data_path` and `[data]` table -> lipctr.data.DataConfig,
and the command-line flags that fill them in (--data, --format, --inter, --user, --item,
--columns, --field-types).

Without `data.format` the config's preset dataset is read (its files, filtering and fields), from
`data_path` when given. With `data.format` the files in `data_path` are the user's own: a plain
DataConfig (no k-core, integer ratings 1..5, label = rating > 3, seeded 0.8/0.1/0.1 split) named
after the folder, with the [data] table's keys (DataConfig fields) written over it. A given folder
is only read; only its cache/ sub-folder is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path

from lipctr import sharding
from lipctr.data import DataConfig, DataError, Dataset, DatasetNotFoundError, DataWarning, get_preset, load_dataset

KEY_TYPES = {  # [data] key -> the type its value must have
    "format": str, "name": str, "file_stem": str, "delimiter": str, "encoding": str, "seq_separator": str,
    "k_core": int, "num_ratings": int, "threshold": int, "split_seed": int, "max_seq_len": int,
    "split_ratios": list, "files": dict, "columns": dict, "field_types": dict, "load_col": dict,
    "placement": str,  # not a DataConfig field: where the training split lives on a mesh (`placement`)
}
FORMATS = ("csv", "parquet", "atomic", "grouplens")
OWN_DATA_HINT = ("To train on your own files give --format csv|parquet|atomic (and --inter FILE); "
                 "datasets/README.md, 'Your own data', lists the columns")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The data flags (a group of `parser`)."""
    g = parser.add_argument_group("data (datasets/README.md: 'Your own data')")
    g.add_argument("--data", metavar="DIR", help="dataset folder; only read (its cache/ is written). Without "
                   "--format it holds the config's preset files, e.g. ml-100k.inter/.user/.item")
    g.add_argument("--format", choices=FORMATS, help="DIR holds your own data in this format (data.format)")
    g.add_argument("--inter", metavar="FILE", help="--format csv/parquet: the interaction file in DIR (columns "
                   "user_id, item_id, rating[, timestamp, features]; data.files.inter); --format atomic: NAME.inter "
                   "(NAME.user / NAME.item beside it are read too)")
    for table in ("user", "item"):
        g.add_argument(f"--{table}", metavar="FILE", help=f"--format csv/parquet: the {table} feature file in DIR, "
                       f"keyed by {table}_id (data.files.{table})")
    g.add_argument("--columns", metavar="RAW=FIELD,...",
                   help="rename raw columns, e.g. userId=user_id,movieId=item_id")
    g.add_argument("--field-types", metavar="FIELD=KIND,...",
                   help="csv/parquet feature kinds (token, token_seq, float, float_seq; default token), "
                        "e.g. genres=token_seq")


def apply_flags(config: dict, args: argparse.Namespace) -> dict:
    """`config` with the data flags written into data_path and the [data] table."""
    table = dict(config.get("data", {}))
    if args.data:
        config = {**config, "data_path": args.data}
    if args.format:
        table["format"] = args.format
    files = {t: getattr(args, t) for t in ("inter", "user", "item") if getattr(args, t)}
    if files and table.get("format") == "atomic":
        table["file_stem"] = _atomic_stem(files)
    elif files:
        table["files"] = {**table.get("files", {}), **files}
    for flag, key in (("--columns", "columns"), ("--field-types", "field_types")):
        text = getattr(args, key)
        if text is not None:
            table[key] = {**table.get(key, {}), **_pairs(flag, text)}
    return {**config, "data": table}


def check_table(table: dict) -> None:
    """DataError naming the key when the [data] table has an unknown key or a value of the wrong type."""
    for key, value in table.items():
        if key == "path":
            raise DataError("key 'data.path' is not a key: the folder is the top-level key 'data_path' (--data DIR)")
        if key not in KEY_TYPES:
            raise DataError(f"unknown key 'data.{key}'; known: {', '.join('data.' + k for k in KEY_TYPES)}")
        kind = KEY_TYPES[key]
        wrong_int = kind is int and isinstance(value, bool)
        if wrong_int or not isinstance(value, (list, tuple) if kind is list else kind):
            raise DataError(f"key 'data.{key}' must be {kind.__name__}, got {type(value).__name__} ({value!r})")
    if table.get("placement", "replicated") not in sharding.PLACEMENTS:
        raise DataError(f"key 'data.placement' must be one of {', '.join(sharding.PLACEMENTS)}, "
                        f"got {table['placement']!r}")
    if "format" in table and table["format"] not in FORMATS:
        raise DataError(f"key 'data.format' must be one of {', '.join(FORMATS)} (--format), got {table['format']!r}")


def dataset_config(config: dict) -> DataConfig:
    """The DataConfig of a validated experiment config (see the module docstring)."""
    table, folder = dict(config["data"]), config["data_path"] or None
    table.pop("placement", None)
    if "format" not in table:
        for key in ("files", "name", "file_stem"):
            if key in table:
                raise DataError(f"key 'data.{key}' describes your own files: give data.format (--format) too")
        return _replace(get_preset(config["dataset"], path=folder), table)
    if folder is None:
        raise DataError(f"data.format {table['format']!r} (--format) needs the folder of your files: "
                        "data_path (--data DIR)")
    if table["format"] == "atomic" and "files" in table:
        raise DataError("key 'data.files' (--inter/--user/--item) names csv / parquet files; atomic files are "
                        "<stem>.inter/.user/.item: give data.file_stem, or --inter NAME.inter")
    name = table.pop("name", None) or Path(folder).expanduser().resolve().name or "data"
    return _replace(DataConfig(name, format=table.pop("format"), path=folder), table)


def placement(config: dict) -> str:
    """data.placement: "replicated" (the default: every device holds the whole training split, so
    results do not depend on the mesh) or "sharded" (each device of the mesh's data axis holds
    1/D of it and draws its part of each batch from it; for a split larger than one device)."""
    return config.get("data", {}).get("placement", "replicated")


def load(config: dict) -> Dataset:
    """The dataset of a validated experiment config; data warnings are printed as 'warning: ...'."""
    data_config = dataset_config(config)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            dataset = load_dataset(data_config)
    except DatasetNotFoundError as error:
        if "format" in config["data"] or not config["data_path"]:
            raise
        raise DatasetNotFoundError(f"{error} {OWN_DATA_HINT}") from None
    if sharding.is_primary():
        for message in dataset.stats.get("warnings", []):
            print(f"warning: {message}", file=sys.stderr)
    return dataset


def data_name(config: dict, dataset: Dataset) -> str:
    """The name runs are filed under: the config's preset dataset, or for one's own files
    (data.format) the data set's name."""
    return dataset.name if "format" in config["data"] else config["dataset"]


def _replace(base: DataConfig, table: dict) -> DataConfig:
    if "split_ratios" in table:
        table = {**table, "split_ratios": tuple(table["split_ratios"])}
    try:
        return dataclasses.replace(base, **table)
    except (TypeError, ValueError) as error:  # DataError is a ValueError
        raise DataError(f"[data] table: {error}") from None


def _atomic_stem(files: dict) -> str:
    if set(files) != {"inter"} or not files["inter"].endswith(".inter"):
        raise DataError(f"--format atomic reads NAME.inter with the NAME.user / NAME.item present: give only "
                        f"--inter NAME.inter, got {', '.join(f'--{t} {f}' for t, f in files.items())}")
    return files["inter"][: -len(".inter")]


def _pairs(flag: str, text: str) -> dict[str, str]:
    pairs = {}
    for item in text.split(","):
        key, equals, value = (part.strip() for part in item.partition("="))
        if not equals or not key or not value:
            raise DataError(f"{flag} {text!r}: expected comma-separated NAME=VALUE pairs, got {item!r}")
        pairs[key] = value
    return pairs
