"""Reader of users' own CSV / Parquet tables: an interaction table of (user, item, rating
[, timestamp, other fields]) plus optional user and item feature tables.

DataConfig.files names the files (default {"inter": "<stem>.csv"} or ".parquet"),
DataConfig.columns renames raw columns to field names (user_id, item_id, rating, timestamp),
DataConfig.field_types gives the kinds of feature fields (default token).
Every loaded column needs a name: an empty or pandas-made name ("Unnamed: 0", a written index)
is an error naming its position. A leading UTF-8 byte-order mark is ignored.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from lipctr.data.config import DataConfig, dataset_dir
from lipctr.data.errors import DataError
from lipctr.data.raw import RawData, RawTable, first_bad, parse_float_seq, split_tokens
from lipctr.data.text import MISSING, check_fields, line_layout, quoted_layout, read_columns, separator_hint, strip_bom

NUMERIC_FIELDS = ("rating", "timestamp")
PANDAS_NAMES = re.compile(r"Unnamed: \d+(_level_\d+)?")  # pandas' name for a nameless column


def tabular_files(config: DataConfig) -> dict[str, Path]:
    """table -> path of the files this config reads (present or not)."""
    extension = "csv" if config.format == "csv" else "parquet"
    files = config.files or {"inter": f"{config.stem}.{extension}"}
    if "inter" not in files:
        raise DataError(f"DataConfig(name={config.name!r}): files must name the 'inter' table, got {files}")
    folder = dataset_dir(config)
    return {table: folder / name for table, name in files.items()}


def read_tabular(config: DataConfig) -> RawData:
    """Read the CSV / Parquet tables of `config` into RawData."""
    renames = config.columns or {}
    tables = {}
    for table, path in tabular_files(config).items():
        columns = None if config.load_col is None else config.load_col.get(table)
        if config.load_col is not None and columns is None:
            continue
        reader = _read_csv if config.format == "csv" else _read_parquet
        tables[table] = reader(path, columns, renames, config)
    known = {c for t in tables.values() for c in t.frame.columns}
    unknown = sorted(set(config.field_types or {}) - known)
    if unknown:
        raise DataError(
            f"DataConfig(name={config.name!r}): field_types names field(s) {unknown} found in no "
            f"loaded table; loaded fields are {sorted(known)}"
        )
    return RawData(**tables)


def _kind(field: str, config: DataConfig) -> str:
    return "float" if field in NUMERIC_FIELDS else (config.field_types or {}).get(field, "token")


def _check_named(path: Path, header: list[str], columns) -> None:
    """DataError at the first loaded column whose name is empty, or made up by pandas and not
    asked for by name in load_col."""
    for position, name in enumerate(header, start=1):
        unnamed = not name.strip() or (columns is None and PANDAS_NAMES.fullmatch(name))
        if unnamed and (columns is None or name in columns):
            what = "has an empty name" if not name.strip() else f"has no real name ({name!r})"
            raise DataError(
                f"{path}: column {position} of the header {what}: an index written by pandas' to_csv "
                "(write with index=False) or a trailing separator? Name or delete the column, or "
                "list the columns to read with load_col"
            )


def _wanted(path: Path, header: list[str], columns, renames) -> list[str]:
    _check_named(path, header, columns)
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise DataError(f"{path}: column(s) {duplicated} appear more than once in the header")
    wanted = list(header) if columns is None else list(columns)
    unknown = [c for c in wanted if c not in header]
    if unknown:
        raise DataError(f"{path}: load_col asks for column(s) {unknown}; the file's columns are {header}")
    fields = [renames.get(c, c) for c in wanted]
    clash = sorted({f for f in fields if fields.count(f) > 1})
    if clash:
        raise DataError(f"{path}: after renaming {renames}, field(s) {clash} appear more than once")
    return wanted


def _read_csv(path: Path, columns, renames: dict, config: DataConfig) -> RawTable:
    encoding = config.encoding or "utf-8"
    data = strip_bom(path.read_bytes(), encoding)
    separator = config.delimiter or ","
    quoted = b'"' in data
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not valid {encoding} text ({error})") from None
    if quoted:
        lines, counts = quoted_layout(text, separator)
    else:
        lines, counts = line_layout(data, separator)
    if len(lines) == 0:
        raise DataError(f"{path}: empty file, expected a header line of column names")
    first_line = text.split("\n", 1)[0].rstrip("\r")
    header = next(csv.reader([first_line], delimiter=separator))
    other = separator_hint(first_line, separator) if len(header) == 1 else None
    if other:
        raise DataError(f"{path} line 1: {other}, not {separator!r}-separated; set DataConfig.delimiter")
    wanted = _wanted(path, header, columns, renames)
    hint = f"{separator!r}-separated, header has {len(header)} columns"
    check_fields(str(path), lines, counts, len(header), hint)
    fields = [renames.get(c, c) for c in wanted]
    numeric = {f for f in fields if _kind(f, config) == "float"}
    frame = read_columns(
        data, source=str(path), separator=separator, encoding=encoding, skip_records=1,
        positions=[header.index(c) for c in wanted], names=fields, numeric=numeric,
        quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
    )
    table = RawTable(frame, {f: _kind(f, config) for f in fields}, str(path), lines[1:], tuple(header))
    return _convert_sequences(table, config)


def _read_parquet(path: Path, columns, renames: dict, config: DataConfig) -> RawTable:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'lipctr[parquet]')") from None
    if not path.is_file():
        raise DataError(f"{path}: missing")
    try:
        header = list(pq.ParquetFile(path).schema_arrow.names)
        wanted = _wanted(path, header, columns, renames)
        frame = pd.read_parquet(path, columns=wanted)
    except (OSError, ValueError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{path}: cannot be read as Parquet ({error})") from None
    frame.columns = [renames.get(c, c) for c in wanted]
    table = RawTable(frame.reset_index(drop=True), {f: _kind(f, config) for f in frame.columns}, str(path),
                     raw_columns=tuple(header))
    for field, kind in table.kinds.items():
        if kind == "float":
            table.frame[field] = _parquet_floats(table, field)
        elif kind == "token":
            column = table.frame[field]
            table.frame[field] = column.astype("string").fillna("").astype(str)
    return _convert_sequences(table, config)


def _parquet_floats(table: RawTable, field: str) -> np.ndarray:
    column = table.frame[field]
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(np.float64, na_value=np.nan)
    text = column.astype("string").fillna("").str.strip()
    missing = text.isin(MISSING).to_numpy()
    parsed = pd.to_numeric(text.where(~text.isin(MISSING), None), errors="coerce").to_numpy(np.float64)
    message = f"field {field!r} value {{value}} is not a number"
    first_bad(table, np.isnan(parsed) & ~missing, message, text.to_numpy())
    return parsed


def _convert_sequences(table: RawTable, config: DataConfig) -> RawTable:
    for field, kind in table.kinds.items():
        if kind == "token_seq":
            table.frame[field] = split_tokens(table.frame[field], config.seq_separator)
        elif kind == "float_seq":
            table.frame[field] = parse_float_seq(table, field, config.seq_separator)
    return table
