"""RawData -> Dataset: validate, de-duplicate, filter, remap, encode, split.

Steps, in RecBole's order: ratings validated as integers 1..N; duplicate (user, item) pairs
keep the last by timestamp (file order without one); interactions whose user / item is absent
from a loaded user / item table are dropped; iterative k-core; ids remapped to 1..n (0 =
padding) in order of first appearance; label = rating > threshold; seeded random split.
An interaction-table token feature with a different value on every interaction (an index or row
id under some name) is kept but flagged in stats["warnings"].
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lipctr.data.config import DataConfig
from lipctr.data.encode import encode_floats, token_seq_vocabulary, token_vocabulary, vocabulary_array
from lipctr.data.errors import DataError
from lipctr.data.kcore import kcore_rows
from lipctr.data.raw import RawData, RawTable, first_bad
from lipctr.data.schema import Dataset, Field, Schema, Split
from lipctr.data.split import random_split, split_sizes

KEYS = {"user": "user_id", "item": "item_id"}
RESERVED = ("rating", "timestamp", "label")


def preprocess(raw: RawData, config: DataConfig) -> tuple[Dataset, dict[str, np.ndarray]]:
    """-> (dataset, rows): rows[split] are the raw interaction-table rows of that split, in order."""
    inter = raw.inter
    _require(inter, ("user_id", "item_id", "rating"), "interaction")
    if len(inter) == 0:
        raise DataError(f"{inter.source}: no interactions")
    stats = {"raw_interactions": len(inter)}
    ratings = validate_ratings(inter, config.num_ratings)
    rows, user_codes, item_codes, tables, keys = filter_interactions(raw, config, stats)
    users, user_index = _remap(user_codes[rows])
    items, item_index = _remap(item_codes[rows])
    _check_splits(len(rows), config, inter.source)
    fields, features, vocabularies = [], {"user": {}, "item": {}, "inter": {}}, {}
    for side, index in (("user", user_index), ("item", item_index)):
        features[side][KEYS[side]] = np.arange(len(index) + 1, dtype=np.int32)
        fields.append(Field(KEYS[side], "token", side, vocab_size=len(index) + 1))
        vocabularies[KEYS[side]] = vocabulary_array(keys[side][index])
    for side, index in (("user", user_index), ("item", item_index)):
        if side in tables:
            table, positions = tables[side]
            fields += _encode_table(table, positions[index], side, config, features[side], stats, vocabularies)
    fields += _encode_table(inter, rows, "inter", config, features["inter"], stats, vocabularies)
    rating = ratings[rows].astype(np.int32)
    parts = random_split(len(rows), config.split_ratios, config.split_seed)
    splits, split_rows = {}, {}
    for name, part in zip(("train", "valid", "test"), parts):
        ids = {"user": users[part], "item": items[part], "inter": part}
        arrays = {f.name: features[f.source][f.name][ids[f.source]] for f in fields}
        label = (rating[part] > config.threshold).astype(np.float32)
        splits[name] = Split(arrays, rating[part], label)
        split_rows[name] = rows[part]
    schema = Schema(tuple(fields), num_ratings=config.num_ratings, threshold=config.threshold)
    stats.update(_summary_stats(rating, users, items, splits, config))
    dataset = Dataset(config.name, schema, splits["train"], splits["valid"], splits["test"],
                      features["user"], features["item"], stats, vocabularies)
    return dataset, split_rows


def filter_interactions(raw: RawData, config: DataConfig, stats: dict):
    """De-duplicate, drop interactions without user / item features, k-core; records the counts
    in `stats`. -> (kept rows ascending, user codes [n], item codes [n], {side: (table, row of
    each user / item code in it)}, {side: the raw id of each user / item code})."""
    inter = raw.inter
    user_codes, user_keys = _id_codes(inter, "user_id")
    item_codes, item_keys = _id_codes(inter, "item_id")
    times = _timestamps(inter)
    rows = _dedupe(user_codes, item_codes, times)
    stats["duplicates_dropped"] = len(inter) - len(rows)
    if stats["duplicates_dropped"]:
        first = int(np.flatnonzero(~np.isin(np.arange(len(inter)), rows))[0])
        kept = "the latest timestamp (equal timestamps: the later row)" if times is not None else "the later row"
        stats.setdefault("warnings", []).append(
            f"{inter.source}: {stats['duplicates_dropped']:,} duplicate (user_id, item_id) rows dropped; of each "
            f"pair the row with {kept} is kept, e.g. {inter.where(first)} (user {user_keys[user_codes[first]]!r}, "
            f"item {item_keys[item_codes[first]]!r}) was dropped")
    tables = {}
    for side, codes, keys in (("user", user_codes, user_keys), ("item", item_codes, item_keys)):
        table = getattr(raw, side)
        if table is None:
            continue
        _require(table, (KEYS[side],), side)
        positions = _feature_rows(table, KEYS[side], keys)
        kept = rows[positions[codes[rows]] >= 0]
        stats[f"missing_{side}_dropped"] = len(rows) - len(kept)
        rows, tables[side] = kept, (table, positions)
    before = len(rows)
    rows = rows[kcore_rows(user_codes[rows], item_codes[rows], config.k_core)]
    stats["kcore_dropped"] = before - len(rows)
    if len(rows) == 0:
        raise DataError(
            f"{inter.source}: no interactions left after filtering ({stats}); "
            f"lower k_core (now {config.k_core}) or check the user / item tables"
        )
    return rows, user_codes, item_codes, tables, {"user": user_keys, "item": item_keys}


def validate_ratings(table: RawTable, num_ratings: int) -> np.ndarray:
    """The rating column as int64 [n]; DataError at the first non-numeric, non-integer or
    out-of-range value, naming the file and line."""
    column = table.frame["rating"]
    values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    cells = column.to_numpy()
    first_bad(table, np.isnan(values), "rating {value} is missing or not a number", cells)
    first_bad(table, values != np.round(values),
              f"rating {{value}} is not an integer (ratings must be integers 1..{num_ratings})", cells)
    first_bad(table, (values < 1) | (values > num_ratings),
              f"rating {{value}} is outside 1..{num_ratings} (num_ratings={num_ratings})", cells)
    return values.astype(np.int64)


def _require(table: RawTable, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in table.frame.columns]
    if missing:
        raise DataError(
            f"{table.source}: the {what} table lacks column(s) {missing}; it has "
            f"{list(table.frame.columns)} (rename raw columns with DataConfig.columns)"
        )


def _id_codes(table: RawTable, key: str) -> tuple[np.ndarray, pd.Index]:
    column = table.frame[key]
    codes, uniques = pd.factorize(column)
    empty = codes < 0
    if not pd.api.types.is_numeric_dtype(column):
        empty |= (column == "").to_numpy(bool, na_value=True)
    first_bad(table, empty, f"empty {key}")
    return codes, pd.Index(uniques)


def _timestamps(table: RawTable) -> np.ndarray | None:
    """float64 [n] timestamps (missing -> -inf, i.e. oldest), or None without the column."""
    if "timestamp" not in table.frame.columns:
        return None
    column = table.frame["timestamp"]
    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(np.float64, na_value=np.nan)
    else:
        text = column.astype(str).str.strip()
        values = pd.to_numeric(text, errors="coerce").to_numpy(np.float64, na_value=np.nan)
        missing = text.isin(["", "nan", "NaN", "None", "<NA>"]).to_numpy()
        first_bad(table, np.isnan(values) & ~missing, "timestamp {value} is not a number", column.to_numpy())
    return np.where(np.isnan(values), -np.inf, values)


def _dedupe(users: np.ndarray, items: np.ndarray, times: np.ndarray | None) -> np.ndarray:
    """Rows (ascending) keeping, per (user, item), the last by timestamp (ties: file order)."""
    order = np.arange(len(users)) if times is None else np.argsort(times, kind="stable")
    pairs = users[order].astype(np.int64) * (int(items.max()) + 1) + items[order]
    last = ~pd.Series(pairs).duplicated(keep="last").to_numpy()
    return np.sort(order[last])


def _feature_rows(table: RawTable, key: str, keys: pd.Index) -> np.ndarray:
    """Row of `table` holding each interaction id (in `keys` order); -1 where absent."""
    column = table.frame[key]
    duplicated = column.duplicated(keep=False).to_numpy()
    first_bad(table, duplicated, f"{key} {{value}} appears on more than one row", column.to_numpy())
    index = pd.Index(column)
    if pd.api.types.is_numeric_dtype(index) != pd.api.types.is_numeric_dtype(keys):
        index, keys = index.astype(str), keys.astype(str)
    return index.get_indexer(keys)


def _remap(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes -> (ids 1..m in order of first appearance, the code of each id 1..m)."""
    ids, uniques = pd.factorize(codes)
    return (ids + 1).astype(np.int32), np.asarray(uniques)


def _encode_table(table: RawTable, positions: np.ndarray, side: str, config: DataConfig, out: dict,
                  stats: dict, vocabularies: dict) -> list[Field]:
    """Encode the feature columns of `table` at rows `positions` into `out` (user / item tables
    get the padding row 0 prepended) and token vocabularies into `vocabularies`; -> their fields."""
    fields = []
    for name, kind in table.kinds.items():
        if name in RESERVED or name in KEYS.values():
            continue
        if kind == "float_seq":
            raise DataError(
                f"{table.source}: field {name!r} is float_seq, which is not supported as a model "
                "input; leave it out of load_col"
            )
        column = table.frame[name]
        values = column.to_numpy()[positions]
        if kind == "token":
            array, vocabularies[name] = token_vocabulary(values)
            field = Field(name, "token", side, vocab_size=len(vocabularies[name]) + 1)
            if side == "inter" and len(values) > 1 and len(vocabularies[name]) == len(values):
                stats.setdefault("warnings", []).append(_unique_message(table, name, len(values)))
        elif kind == "token_seq":
            array, vocabularies[name] = token_seq_vocabulary(values, config.max_seq_len)
            field = Field(name, "token_seq", side, vocab_size=len(vocabularies[name]) + 1,
                          max_len=array.shape[1])
        else:
            array, missing = encode_floats(values)
            if missing:
                stats.setdefault("float_missing", {})[name] = missing
            field = Field(name, "float", side)
        out[name] = array if side == "inter" else _pad_row(array)
        fields.append(field)
    return fields


def _unique_message(table: RawTable, name: str, count: int) -> str:
    return (
        f"{table.source}: field {name!r} has a different value on each of its {count:,} interactions "
        "(an index or row id?); as a token feature it cannot generalise to new interactions. Leave it "
        "out with load_col unless that is intended"
    )


def _pad_row(array: np.ndarray) -> np.ndarray:
    """Prepend the all-zero row of the padding id 0."""
    return np.concatenate([np.zeros((1,) + array.shape[1:], array.dtype), array])


def _check_splits(total: int, config: DataConfig, source: str) -> None:
    sizes = split_sizes(total, config.split_ratios)
    for name, size in zip(("train", "valid", "test"), sizes):
        if size == 0:
            raise DataError(
                f"{source}: split_ratios {config.split_ratios} of {total} interactions leave the "
                f"{name} split empty (sizes {sizes}); more data or other ratios are needed"
            )


def _summary_stats(rating, users, items, splits, config: DataConfig) -> dict:
    n = len(rating)
    positives = int((rating > config.threshold).sum())
    counts = np.bincount(rating, minlength=config.num_ratings + 1)[1:]
    n_users, n_items = int(users.max()), int(items.max())
    return {
        "interactions": n,
        "users": n_users,
        "items": n_items,
        "positives": positives,
        "positive_rate": positives / n,
        "rating_counts": {str(r + 1): int(c) for r, c in enumerate(counts)},
        "density": n / (n_users * n_items),
        **{name: len(split) for name, split in splits.items()},
    }
