"""The registry of data sources: every named dataset lipctr knows, by one name and its aliases.

  PRESETS            the paper's real datasets (DataConfig: files, filtering, fields), read from
                     their folders under the datasets root (lipctr.data.config.datasets_root)
  SYNTHETIC_PRESETS  the planted-preference generator's sizes (lipctr.data.synthetic), loaded as
                     DataConfig(format="synthetic", name=<preset>) like any other source
  ALIASES            other spellings of a name ("ml-1m" -> "ml1m"), one table for both kinds

A user's own folder is no preset: a DataConfig with `path` and `format` (lipctr.data.locate).
"""

from __future__ import annotations

import dataclasses

from lipctr.data.config import DataConfig
from lipctr.data.errors import DataError


@dataclasses.dataclass(frozen=True)
class SyntheticSizes:
    """Scale of a synthetic dataset; `features` picks the paper dataset whose fields it mimics
    ("movielens", "yelp" or "amazon"); `k_core` is the preset's filter; `noise` the standard
    deviation of the preference noise."""

    users: int
    items: int
    interactions: int
    features: str = "movielens"
    k_core: int = 0
    noise: float = 1.0


_INTER = ("user_id", "item_id", "rating", "timestamp")
PRESETS: dict[str, DataConfig] = {
    "ml100k": DataConfig(
        name="ml-100k",
        load_col={
            "inter": _INTER,
            "user": ("user_id", "age", "gender", "occupation"),
            "item": ("item_id", "release_year", "class"),
        },
    ),
    "ml1m": DataConfig(
        name="ml-1m",
        format="auto",
        k_core=10,
        load_col={
            "inter": _INTER,
            "user": ("user_id", "age", "gender", "occupation"),
            "item": ("item_id", "release_year", "genre"),
        },
    ),
    "yelp2018": DataConfig(
        name="yelp2018",
        k_core=10,
        load_col={
            "inter": _INTER,
            "user": ("user_id", "user_review_count"),
            "item": ("item_id", "item_review_count", "categories"),
        },
    ),
    "amazon_book": DataConfig(
        name="amazon-book",
        file_stem="Amazon_Books",
        k_core=15,
        load_col={
            "inter": _INTER,
            "item": ("item_id", "sales_type", "sales_rank", "categories", "price", "brand"),
        },
    ),
}

SYNTHETIC_PRESETS: dict[str, SyntheticSizes] = {
    "tiny": SyntheticSizes(300, 200, 8_000),
    "small": SyntheticSizes(2_000, 1_000, 100_000, k_core=5),
    "ml1m": SyntheticSizes(6_040, 3_706, 1_000_209, k_core=10),
    "yelp2018": SyntheticSizes(77_000, 46_000, 2_000_000, "yelp", k_core=10),
    "amazon_book": SyntheticSizes(68_000, 66_000, 3_000_000, "amazon", k_core=15),
}
ALIASES = {"ml-100k": "ml100k", "ml-1m": "ml1m", "amazon-book": "amazon_book"}


def _key(name: str) -> str:
    return ALIASES.get(name.lower(), name.lower())


def preset_key(name: str) -> str:
    """Canonical key of a real preset name or alias (case-insensitive)."""
    key = _key(name)
    if key not in PRESETS:
        known = sorted(PRESETS) + sorted(ALIASES)
        raise DataError(f"unknown dataset preset {name!r}; known: {', '.join(known)}")
    return key


def get_preset(name: str, **overrides) -> DataConfig:
    """The preset config for `name` (aliases "ml-100k", "ml-1m", "amazon-book" accepted),
    with any DataConfig field overridden, e.g. get_preset("ml1m", path="/data/ml-1m")."""
    unknown = set(overrides) - {f.name for f in dataclasses.fields(DataConfig)}
    if unknown:
        raise DataError(f"get_preset({name!r}): unknown DataConfig field(s) {sorted(unknown)}")
    return dataclasses.replace(PRESETS[preset_key(name)], **overrides)


def synthetic_preset(preset: str | SyntheticSizes) -> tuple[str, SyntheticSizes]:
    """(canonical name, sizes) of a synthetic preset name / alias, or ("custom", explicit sizes)."""
    if isinstance(preset, SyntheticSizes):
        return "custom", preset
    key = _key(preset)
    if key not in SYNTHETIC_PRESETS:
        raise DataError(f"unknown synthetic preset {preset!r}; known: {', '.join(SYNTHETIC_PRESETS)}")
    return key, SYNTHETIC_PRESETS[key]
