"""Turning raw columns into model arrays: token ids, padded token sequences, normalised floats.

Id 0 is reserved for padding / unknown in every vocabulary: real tokens get ids 1..V-1 in
order of first appearance, so vocab_size V = number of distinct tokens + 1.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd


def encode_tokens(values) -> tuple[np.ndarray, int]:
    """Token column [n] -> (int32 ids [n], vocab size); "" and missing values get id 0."""
    ids, tokens = token_vocabulary(values)
    return ids, len(tokens) + 1


def token_vocabulary(values) -> tuple[np.ndarray, np.ndarray]:
    """Token column [n] -> (int32 ids [n], the raw token of each id 1..V-1 [V-1])."""
    codes, uniques = pd.factorize(pd.Series(values).replace("", None), use_na_sentinel=True)
    return (codes + 1).astype(np.int32), vocabulary_array(uniques)


def vocabulary_array(tokens) -> np.ndarray:
    """Raw tokens as a numpy array that .npz stores without pickle: integers stay int64,
    anything else becomes str."""
    array = np.asarray(tokens)
    if array.dtype.kind in "iub":
        return array.astype(np.int64)
    return np.asarray([str(t) for t in array], dtype=str) if len(array) else np.zeros(0, str)


def encode_token_seq(values, max_len: int | None) -> tuple[np.ndarray, int]:
    """Column of token lists [n] -> (int32 ids [n, L] right-padded with 0, vocab size).

    L = the longest list, capped at max_len (longer lists keep their first L tokens); L >= 1.
    """
    ids, tokens = token_seq_vocabulary(values, max_len)
    return ids, len(tokens) + 1


def token_seq_vocabulary(values, max_len: int | None) -> tuple[np.ndarray, np.ndarray]:
    """As `encode_token_seq`, -> (ids [n, L], the raw token of each id 1..V-1 [V-1])."""
    lists = list(values)
    lengths = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
    flat = list(itertools.chain.from_iterable(lists))
    codes, uniques = pd.factorize(pd.Series(flat, dtype=object))
    width = max(1, int(lengths.max()) if len(lengths) else 1)
    width = min(width, max_len) if max_len is not None else width
    rows = np.repeat(np.arange(len(lists)), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.arange(len(flat)) - starts
    keep = positions < width
    ids = np.zeros((len(lists), width), np.int32)
    ids[rows[keep], positions[keep]] = codes[keep] + 1
    return ids, vocabulary_array(uniques)


def sequence_lengths(ids: np.ndarray) -> np.ndarray:
    """Lengths int32 [n] of right-padded id sequences [n, L] (ids are never 0 inside a sequence)."""
    return (ids != 0).sum(axis=-1).astype(np.int32)


def encode_floats(values) -> tuple[np.ndarray, int]:
    """Float column [n] -> (float32 min-max normalised to [0, 1], number of missing values).

    Missing (NaN) values take the mean of the present ones; a constant column becomes all 0.
    """
    x = np.asarray(values, dtype=np.float64)
    missing = np.isnan(x)
    if missing.all():
        return np.zeros(len(x), np.float32), int(missing.sum())
    low, high = np.nanmin(x), np.nanmax(x)
    scaled = (x - low) / (high - low) if high > low else np.zeros_like(x)
    scaled[missing] = np.nanmean(scaled) if high > low else 0.0
    return scaled.astype(np.float32), int(missing.sum())
