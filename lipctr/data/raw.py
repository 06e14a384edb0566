"""The in-memory raw form every reader (and the synthetic generator) produces.

A `RawTable` is a DataFrame with one column per field plus each column's raw kind:

- token:      str (or int) values; "" is missing
- token_seq:  a list of tokens per row
- float:      float64, NaN is missing
- float_seq:  a list of floats per row

The columns "rating" and "timestamp" of the interaction table are kept as read (numbers, or
strings that failed to parse) and validated by the preprocessing. `RawData` groups the
interaction table ("user_id", "item_id", "rating", optional "timestamp", other fields) with
the optional user table (keyed by "user_id") and item table (keyed by "item_id").
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from lipctr.data.errors import DataError


@dataclasses.dataclass
class RawTable:
    """One table. `lines[r]` is the file line of row r (None: rows are reported as "row r+1");
    `raw_columns`: the file's column names before DataConfig.columns renamed them (() if none)."""

    frame: pd.DataFrame
    kinds: dict[str, str]
    source: str
    lines: np.ndarray | None = None
    raw_columns: tuple[str, ...] = ()

    def where(self, row: int) -> str:
        """Location of frame row `row` for error messages, e.g. "ml-1m/ratings.dat line 17"."""
        if self.lines is None:
            return f"{self.source} row {row + 1}"
        return f"{self.source} line {int(self.lines[row])}"

    def __len__(self) -> int:
        return len(self.frame)


@dataclasses.dataclass
class RawData:
    """The tables of one dataset, before preprocessing."""

    inter: RawTable
    user: RawTable | None = None
    item: RawTable | None = None

    def tables(self) -> dict[str, RawTable]:
        found = {"inter": self.inter, "user": self.user, "item": self.item}
        return {name: table for name, table in found.items() if table is not None}


def first_bad(table: RawTable, mask: np.ndarray, message: str, values=None) -> None:
    """Raise DataError at the first True row of `mask`: "<file> line N: <message>", where
    "{value}" in `message` is replaced by repr(values[N])."""
    bad = np.flatnonzero(mask)
    if len(bad):
        row = int(bad[0])
        text = message
        if values is not None:
            value = values[row]
            text = message.format(value=repr(value.item() if isinstance(value, np.generic) else value))
        more = f" ({len(bad) - 1} more such rows)" if len(bad) > 1 else ""
        raise DataError(f"{table.where(row)}: {text}{more}")


def split_tokens(values: pd.Series, separator: str) -> pd.Series:
    """Cells "a b c" -> lists ["a", "b", "c"] (empty pieces dropped); list cells pass through."""
    def split(cell):
        if isinstance(cell, str):
            return [t for t in cell.split(separator) if t]
        if cell is None or (isinstance(cell, float) and np.isnan(cell)):
            return []
        return [t for t in cell if t != ""]

    return pd.Series([split(c) for c in values], index=values.index, dtype=object)


def parse_float_seq(table: RawTable, name: str, separator: str) -> pd.Series:
    """A float_seq column of strings or lists -> lists of floats; errors name file and line."""
    tokens = split_tokens(table.frame[name], separator)
    lengths = tokens.map(len).to_numpy()
    flat = pd.to_numeric(pd.Series([t for row in tokens for t in row], dtype=object), errors="coerce")
    bad_rows = np.zeros(len(tokens), bool)
    bad_rows[np.repeat(np.arange(len(tokens)), lengths)[np.isnan(flat.to_numpy(float))]] = True
    cells = table.frame[name].to_numpy()
    first_bad(table, bad_rows, f"float_seq field {name!r} holds a non-number in {{value}}", cells)
    values = np.split(flat.to_numpy(float), np.cumsum(lengths)[:-1]) if len(lengths) else []
    return pd.Series([list(v) for v in values], index=tokens.index, dtype=object)
