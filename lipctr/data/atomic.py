"""Reader of RecBole atomic files: <stem>.inter, <stem>.user, <stem>.item.

Tab-separated, utf-8 (a leading byte-order mark is ignored), first line a header of `name:type`
cells with type one of token, token_seq, float, float_seq; sequence cells are space-separated
(DataConfig.seq_separator).
"""

from __future__ import annotations

from pathlib import Path

from lipctr.data.config import RAW_KINDS, TABLES, DataConfig, dataset_dir
from lipctr.data.errors import DataError
from lipctr.data.raw import RawData, RawTable, parse_float_seq, split_tokens
from lipctr.data.text import check_fields, line_layout, read_columns, separator_hint, strip_bom

SPECIAL = ("rating", "timestamp")


def atomic_files(config: DataConfig) -> dict[str, Path]:
    """table -> path of the atomic files this config reads (present or not)."""
    folder = dataset_dir(config)
    paths = {t: folder / f"{config.stem}.{t}" for t in TABLES}
    if config.load_col is not None:
        return {t: paths[t] for t in TABLES if t in config.load_col}
    return {t: p for t, p in paths.items() if t == "inter" or p.exists()}


def read_atomic(config: DataConfig) -> RawData:
    """Read the atomic files selected by `config` (see `atomic_files`) into RawData."""
    tables = {}
    for table, path in atomic_files(config).items():
        columns = None if config.load_col is None else config.load_col[table]
        tables[table] = read_atomic_table(path, columns, config)
    return RawData(**tables)


def parse_header(path: Path, header: str) -> list[tuple[str, str]]:
    """'user_id:token<TAB>rating:float' -> [("user_id", "token"), ("rating", "float")]."""
    hint = separator_hint(header, "\t")
    if hint:
        raise DataError(
            f"{path} line 1: {hint}; RecBole atomic files are tab-separated with name:type header "
            "cells (a CSV file is read with format 'csv')"
        )
    cells = header.rstrip("\r\n").split("\t")
    fields = []
    for position, cell in enumerate(cells, start=1):
        name, colon, kind = cell.strip().rpartition(":")
        if not colon or not name or kind not in RAW_KINDS:
            raise DataError(
                f"{path} line 1, column {position}: header cell {cell!r} is not name:type with "
                f"type one of {', '.join(RAW_KINDS)}"
            )
        fields.append((name, kind))
    names = [n for n, _ in fields]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataError(f"{path} line 1: field(s) {duplicated} appear more than once in the header")
    return fields


def read_atomic_table(path: Path, columns: tuple[str, ...] | None, config: DataConfig) -> RawTable:
    """One atomic file -> RawTable with the fields `columns` (None = all), renamed by config.columns."""
    encoding = config.encoding or "utf-8"
    data = strip_bom(path.read_bytes(), encoding)
    try:
        header = data.split(b"\n", 1)[0].decode(encoding)
    except UnicodeDecodeError as error:
        raise DataError(f"{path} line 1: header is not valid {encoding} ({error})") from None
    fields = parse_header(path, header)
    kinds = dict(fields)
    wanted = list(kinds) if columns is None else list(columns)
    unknown = [c for c in wanted if c not in kinds]
    if unknown:
        raise DataError(
            f"{path}: load_col asks for field(s) {unknown} that the file lacks; "
            f"its fields are {list(kinds)}"
        )
    lines, counts = line_layout(data, "\t")
    if len(lines) == 0:
        raise DataError(f"{path}: empty file, expected a header line of name:type cells")
    check_fields(str(path), lines, counts, len(fields), f"tab-separated, header has {len(fields)} fields")
    positions = [list(kinds).index(c) for c in wanted]
    numeric = {c for c in wanted if kinds[c] == "float" or c in SPECIAL}
    frame = read_columns(
        data, source=str(path), separator="\t", encoding=encoding, skip_records=1,
        positions=positions, names=wanted, numeric=numeric,
    )
    table = RawTable(frame, {c: kinds[c] for c in wanted}, str(path), lines[1:])
    for name in wanted:
        if kinds[name] == "token_seq":
            frame[name] = split_tokens(frame[name], config.seq_separator)
        elif kinds[name] == "float_seq":
            frame[name] = parse_float_seq(table, name, config.seq_separator)
    return rename_columns(table, config.columns)


def rename_columns(table: RawTable, renames: dict[str, str] | None) -> RawTable:
    """Apply DataConfig.columns (raw name -> field name) to the columns the table has."""
    table.raw_columns = tuple(table.frame.columns)
    if not renames:
        return table
    mapping = {old: new for old, new in renames.items() if old in table.frame.columns}
    clash = sorted(set(mapping.values()) & (set(table.frame.columns) - set(mapping)))
    if clash:
        raise DataError(f"{table.source}: renaming columns {mapping} would duplicate field(s) {clash}")
    table.frame = table.frame.rename(columns=mapping)
    table.kinds = {mapping.get(k, k): v for k, v in table.kinds.items()}
    return table
