"""Reading delimited text tables fast (pandas' C parser) with exact line numbers for errors.

The field count of every line is checked first, vectorised over the raw bytes, so a ragged row
is reported with its line number; blank lines are skipped and every row keeps its file line.
"""

from __future__ import annotations

import codecs
import csv
import io

import numpy as np
import pandas as pd

from lipctr.data.errors import DataError

MISSING = ["", "nan", "NaN", "NA", "null", "None"]
OTHER_SEPARATORS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


def strip_bom(data: bytes, encoding: str) -> bytes:
    """`data` without a leading UTF-8 byte-order mark (Excel writes one) when read as UTF-8."""
    if codecs.lookup(encoding).name in ("utf-8", "utf-8-sig") and data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8):]
    return data


def separator_hint(header: str, separator: str) -> str | None:
    """'looks comma-separated' when a one-cell header holds another common separator, else None."""
    if separator in header:
        return None
    for other, name in OTHER_SEPARATORS.items():
        if other != separator and other in header:
            return f"the header has no {OTHER_SEPARATORS.get(separator, repr(separator))} but {name}s: " \
                   f"the file looks {name}-separated"
    return None


def line_layout(data: bytes, separator: str) -> tuple[np.ndarray, np.ndarray]:
    """(1-based line number, field count) of every non-blank line; no quoting.

    The separator must be one byte long (callers translate "::" to a single byte first).
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    if len(buf) and buf[-1] != 10:
        ends = np.append(ends, len(buf))
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    lengths = ends - starts
    carriage = (lengths > 0) & (buf[np.maximum(ends - 1, 0)] == 13) if len(buf) else lengths > 0
    blank = lengths - carriage == 0
    separators = np.flatnonzero(buf == ord(separator))
    fields = np.bincount(np.searchsorted(ends, separators), minlength=len(ends)) + 1
    keep = ~blank
    return np.flatnonzero(keep) + 1, fields[keep]


def quoted_layout(text: str, separator: str) -> tuple[np.ndarray, np.ndarray]:
    """(line number, field count) of every non-blank record of a CSV with quoting (csv module)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    lines, counts, previous = [], [], 0
    for record in reader:
        if record:
            lines.append(previous + 1)
            counts.append(len(record))
        previous = reader.line_num
    return np.asarray(lines, np.int64), np.asarray(counts, np.int64)


def check_fields(source: str, lines: np.ndarray, counts: np.ndarray, expected: int, hint: str) -> None:
    """Raise DataError naming the first line whose field count is not `expected`."""
    bad = np.flatnonzero(counts != expected)
    if len(bad):
        more = f" ({len(bad) - 1} more such lines)" if len(bad) > 1 else ""
        raise DataError(
            f"{source} line {lines[bad[0]]}: {counts[bad[0]]} fields, expected {expected} "
            f"({hint}){more}"
        )


def read_columns(
    data: bytes,
    *,
    source: str,
    separator: str,
    encoding: str,
    skip_records: int,
    positions: list[int],
    names: list[str],
    numeric: set[str],
    quoting: int = csv.QUOTE_NONE,
) -> pd.DataFrame:
    """Columns `positions` of the records after the first `skip_records`, named `names`.

    Columns in `numeric` are parsed as float64 (missing -> NaN); the others stay strings ("" kept).
    A non-number in a numeric column raises DataError naming the file, line and field.
    """
    numeric_names = [n for n in names if n in numeric]
    try:
        frame = _read(data, separator, encoding, skip_records, positions, names, numeric_names, quoting)
    except ValueError as error:
        if isinstance(error, UnicodeDecodeError):
            raise DataError(f"{source}: not valid {encoding} text ({error})") from None
        if not numeric_names:
            raise DataError(f"{source}: cannot be parsed ({error})") from None
        frame = _read(data, separator, encoding, skip_records, positions, names, [], quoting)
        _raise_non_numeric(frame, numeric_names, source, data, separator, skip_records, quoting, encoding)
        raise DataError(f"{source}: cannot be parsed ({error})") from None
    return frame


def _read(data, separator, encoding, skip_records, positions, names, numeric_names, quoting):
    named = dict(zip(positions, names))
    dtype = {p: (np.float64 if name in numeric_names else str) for p, name in named.items()}
    na_values = {p: MISSING for p, name in named.items() if name in numeric_names}
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            sep=separator,
            header=None,
            skiprows=skip_records,
            usecols=positions,
            dtype=dtype,
            keep_default_na=False,
            na_values=na_values,
            quoting=quoting,
            encoding=encoding,
            engine="c",
        )
    except pd.errors.EmptyDataError:
        return pd.DataFrame({name: pd.Series([], dtype=dtype[p]) for p, name in named.items()})
    frame = frame[positions]
    frame.columns = names
    return frame


def _raise_non_numeric(frame, numeric_names, source, data, separator, skip_records, quoting, encoding):
    if quoting == csv.QUOTE_NONE:
        lines, _ = line_layout(data, separator)
    else:
        lines, _ = quoted_layout(data.decode(encoding), separator)
    lines = lines[skip_records:]
    for name in numeric_names:
        text = frame[name].astype(str).str.strip()
        parsed = pd.to_numeric(text.where(~text.isin(MISSING), None), errors="coerce")
        bad = np.flatnonzero(parsed.isna().to_numpy() & ~text.isin(MISSING).to_numpy())
        if len(bad):
            more = f" ({len(bad) - 1} more such lines)" if len(bad) > 1 else ""
            raise DataError(
                f"{source} line {lines[bad[0]]}: field {name!r} value {text.iloc[bad[0]]!r} "
                f"is not a number{more}"
            )
