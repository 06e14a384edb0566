"""Raw (user, item) frames -> the model's id arrays, with a trained run's vocabularies and tables.

A frame holds raw `user_id` and `item_id` values (as in the training files), every interaction-side
field of the schema, and optionally user- or item-side feature columns that replace the stored
tables' values for those rows: token fields as raw tokens, token_seq fields as lists or
space-separated strings, float fields on the model's scale (min-max normalised as at training).

Raw values missing from a vocabulary are "unknown": with unknown="map" they get the padding /
unknown id 0 and an `UnknownIdWarning` gives their count per column; with unknown="error" an
`InputError` names the column and the count.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from lipctr.data.schema import Field, Schema

UNKNOWN_POLICIES = ("map", "error")


class InputError(ValueError):
    """A frame that cannot be scored: a missing or malformed column, or unknown ids under unknown="error"."""


class UnknownIdWarning(UserWarning):
    """Raw ids outside a run's vocabulary were scored as the unknown id 0."""


def _text(value) -> str | None:
    """A raw cell as the string the vocabulary would hold (None if missing); 7.0 -> "7"."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    text = str(value)
    return text if text != "" else None


def lookup(values, vocabulary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw values [n] -> (int32 ids [n], 0 where missing or unknown; bool [n] missing).

    vocabulary [V-1] holds the raw value of ids 1..V-1 (int64 or str); values are compared as
    integers against an integer vocabulary and as text otherwise."""
    series = pd.Series(list(values) if not isinstance(values, pd.Series) else values, dtype=object)
    keys = series.map(_text)
    missing = keys.isna().to_numpy()
    if vocabulary.dtype.kind in "iu":
        numbers = pd.to_numeric(keys, errors="coerce")
        integral = numbers.notna().to_numpy() & (numbers.fillna(0.5) % 1 == 0).to_numpy()
        keys = pd.Series(np.where(integral, numbers.fillna(0).to_numpy(), -1), dtype=np.float64).astype(np.int64)
        index = pd.Index(vocabulary).get_indexer(keys.to_numpy())
        index = np.where(integral, index, -1)
    else:
        index = pd.Index(vocabulary.astype(str)).get_indexer(keys.fillna("").to_numpy(str))
    ids = np.where(missing, 0, index + 1).astype(np.int32)
    return ids, missing


class Vocabulary:
    """A run's schema, vocabularies and user / item feature tables: encodes frames for its model."""

    def __init__(self, schema: Schema, vocabularies: dict, user_tables: dict, item_tables: dict):
        self.schema, self.vocabularies = schema, vocabularies
        self.user_tables, self.item_tables = user_tables, item_tables

    def ids(self, values, field: str, unknown: str, source: str) -> tuple[np.ndarray, int]:
        """Raw values of a token field -> (ids [n], number unknown); missing ids count as unknown
        for the user / item id fields. InputError under unknown="error"."""
        ids, missing = lookup(values, self.vocabularies[field])
        id_field = field in (self.schema.user_field, self.schema.item_field)
        bad = (ids == 0) & (~missing | id_field)
        count = int(bad.sum())
        if count:
            first = pd.Series(list(values), dtype=object).iloc[int(np.flatnonzero(bad)[0])]
            message = (f"{source}: column {field!r}: {count} of {len(ids)} values are not in the run's vocabulary "
                       f"(first: {first!r})")
            if unknown == "error":
                raise InputError(message + " (unknown='map', or --unknown map, scores them as the unknown id 0)")
            warnings.warn(UnknownIdWarning(message + "; scored as the unknown id 0"), stacklevel=3)
        return ids, count

    def features(self, frame, unknown: str = "map", source: str = "frame") -> tuple[dict, dict]:
        """A frame of n rows -> (model features {field: array [n, ...]}, {column: unknown count})."""
        if unknown not in UNKNOWN_POLICIES:
            raise InputError(f"unknown={unknown!r}: expected one of {UNKNOWN_POLICIES}")
        if not isinstance(frame, pd.DataFrame):
            raise InputError(f"{source}: expected a pandas DataFrame, got {type(frame).__name__}")
        schema = self.schema
        required = [schema.user_field, schema.item_field] + [f.name for f in schema.fields if f.source == "inter"]
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise InputError(f"{source}: missing column(s) {missing}; it has {list(frame.columns)} "
                             f"(required: {required})")
        counts = {}
        users, counts[schema.user_field] = self.ids(frame[schema.user_field], schema.user_field, unknown, source)
        items, counts[schema.item_field] = self.ids(frame[schema.item_field], schema.item_field, unknown, source)
        features = self.gather(users, items)
        for field in schema.fields:
            if field.name in frame.columns and field.name not in (schema.user_field, schema.item_field):
                features[field.name], counts[field.name] = self.column(frame[field.name], field, unknown, source)
        return features, counts

    def gather(self, users: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
        """Features of pairs (users[i], items[i]) (internal ids [n]) from the user / item tables;
        interaction-side fields are left out."""
        out = {}
        for field in self.schema.fields:
            if field.source == "user":
                out[field.name] = self.user_tables[field.name][users]
            elif field.source == "item":
                out[field.name] = self.item_tables[field.name][items]
        return out

    def column(self, values: pd.Series, field: Field, unknown: str, source: str) -> tuple[np.ndarray, int]:
        """One frame column of `field` -> (encoded array, number of unknown tokens)."""
        if field.kind == "float":
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(np.float64, na_value=np.nan)
            bad = int(np.isnan(numbers).sum())
            if bad:
                raise InputError(f"{source}: column {field.name!r}: {bad} of {len(numbers)} values are missing or not "
                                 "numbers (float fields take values on the model's min-max normalised scale)")
            return numbers.astype(np.float32), 0
        if field.kind == "token":
            return self.ids(values, field.name, unknown, source)
        lists = [_tokens(cell) for cell in values]
        flat = [token for tokens in lists for token in tokens]
        ids, count = self.ids(flat, field.name, unknown, source) if flat else (np.zeros(0, np.int32), 0)
        rows = np.repeat(np.arange(len(lists)), [len(t) for t in lists])
        known = ids != 0  # unknown tokens are left out: ids are never 0 inside a sequence
        ids, rows = ids[known], rows[known]
        lengths = np.bincount(rows, minlength=len(lists))
        positions = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        fits = positions < field.max_len  # longer lists keep their first max_len tokens, as in training
        out = np.zeros((len(lists), field.max_len), np.int32)
        out[rows[fits], positions[fits]] = ids[fits]
        return out, count


def _tokens(cell) -> list:
    """A token_seq cell (list / array, or a space-separated string) -> its tokens."""
    if isinstance(cell, str):
        return [t for t in cell.split(" ") if t]
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return []
    return [t for t in cell if _text(t) is not None]
