"""The preprocessed, device-ready form of a rating dataset that every model and trainer consumes.

A `Dataset` holds three `Split`s of dense numpy arrays and a `Schema` describing the model
input fields. Feature arrays are keyed by field name:

- token:     int32 [n]       ids in 0..vocab_size-1, 0 reserved for padding / unknown
- token_seq: int32 [n, L]    ids padded with 0 on the right (L = field.max_len)
- float:     float32 [n]     min-max normalised to [0, 1]

Ratings are int32 in 1..N; labels are float32 in {0, 1} (rating > threshold).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

FieldKind = Literal["token", "token_seq", "float"]
FieldSource = Literal["inter", "user", "item"]


@dataclasses.dataclass(frozen=True)
class Field:
    """One model input field."""

    name: str
    kind: FieldKind
    source: FieldSource
    vocab_size: int = 0  # number of ids including the padding id 0; 0 for float fields
    max_len: int = 1  # padded length of a token_seq field; 1 otherwise


@dataclasses.dataclass(frozen=True)
class Schema:
    """The model input fields (hashable, so it can be a static attribute of a flax module)."""

    fields: tuple[Field, ...]
    num_ratings: int = 5
    threshold: int = 3
    user_field: str = "user_id"
    item_field: str = "item_id"

    def __getitem__(self, name: str) -> Field:
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(f"no field {name!r} in schema; fields are {self.names}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    def to_dict(self) -> dict:
        """Plain JSON-able form; `Schema.from_dict` inverts it."""
        return {"fields": [dataclasses.asdict(f) for f in self.fields], "num_ratings": self.num_ratings,
                "threshold": self.threshold, "user_field": self.user_field, "item_field": self.item_field}

    @classmethod
    def from_dict(cls, data: dict) -> Schema:
        fields = tuple(Field(**f) for f in data["fields"])
        return cls(fields, **{k: v for k, v in data.items() if k != "fields"})

    def recbole_tables(self) -> list[tuple[Field, ...]]:
        """Fields grouped as RecBole stores them: one table for all token fields, one for all float
        fields (a row each), one per token_seq field (empty groups left out)."""
        token = tuple(f for f in self.fields if f.kind == "token")
        floats = tuple(f for f in self.fields if f.kind == "float")
        groups = [token, floats, *((f,) for f in self.fields if f.kind == "token_seq")]
        return [group for group in groups if group]


@dataclasses.dataclass
class Split:
    """One split: `features[name]` arrays as described in the module docstring, plus targets."""

    features: dict[str, np.ndarray]
    rating: np.ndarray  # int32 [n], 1..N
    label: np.ndarray  # float32 [n], 1.0 iff rating > threshold

    def __len__(self) -> int:
        return int(self.rating.shape[0])


@dataclasses.dataclass
class Dataset:
    """A preprocessed dataset.

    `user_features` / `item_features` map each user-side / item-side field (the id field
    included) to an array indexed by the remapped user / item id, so that features of an
    arbitrary (user, item) pair can be assembled, e.g. for sampled ranking candidates.
    `vocabularies[name]` of a token / token_seq field holds the raw value of each id 1..V-1
    (int64 or str [V-1]); a field without one has ids that are their own raw values.
    """

    name: str
    schema: Schema
    train: Split
    valid: Split
    test: Split
    user_features: dict[str, np.ndarray]
    item_features: dict[str, np.ndarray]
    stats: dict = dataclasses.field(default_factory=dict)
    vocabularies: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "valid": self.valid, "test": self.test}
