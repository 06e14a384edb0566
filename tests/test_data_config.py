"""DataConfig presets (the paper's filtering and fields), aliases, overrides, the datasets root."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lipctr.data import PRESETS, DataConfig, dataset_dir, datasets_root, get_preset


def test_presets_follow_the_paper():
    assert {k: PRESETS[k].k_core for k in PRESETS} == {"ml100k": 0, "ml1m": 10, "yelp2018": 10, "amazon_book": 15}
    assert PRESETS["ml1m"].load_col["item"] == ("item_id", "release_year", "genre")
    assert PRESETS["ml100k"].load_col["user"] == ("user_id", "age", "gender", "occupation")
    assert "zip_code" not in PRESETS["ml100k"].load_col["user"]
    assert "movie_title" not in PRESETS["ml100k"].load_col["item"]
    assert PRESETS["yelp2018"].load_col["item"] == ("item_id", "item_review_count", "categories")
    assert set(PRESETS["amazon_book"].load_col["item"]) == {
        "item_id", "sales_type", "sales_rank", "categories", "price", "brand"}
    for config in PRESETS.values():
        assert (config.num_ratings, config.threshold, config.split_ratios) == (5, 3, (0.8, 0.1, 0.1))


def test_aliases_overrides_and_value_semantics():
    assert get_preset("ML-100K") == PRESETS["ml100k"]
    assert get_preset("amazon-book") == PRESETS["amazon_book"]
    moved = get_preset("ml-1m", path="/data/ml1m", k_core=5)
    assert (moved.path, moved.k_core, moved.name) == ("/data/ml1m", 5, "ml-1m")
    assert hash(get_preset("ml1m")) == hash(get_preset("ml-1m")) and moved != PRESETS["ml1m"]
    lists = DataConfig("x", load_col={"inter": ["user_id", "item_id", "rating"]})
    assert lists.load_col == {"inter": ("user_id", "item_id", "rating")}
    assert dataclasses.replace(lists, k_core=2).load_col == lists.load_col


def test_datasets_root_and_folders(monkeypatch, tmp_path):
    monkeypatch.setenv("LIPCTR_DATA", str(tmp_path))
    assert datasets_root() == tmp_path
    assert dataset_dir(get_preset("amazon_book")) == tmp_path / "amazon-book"
    assert dataset_dir(DataConfig("tiny", format="synthetic")) == tmp_path / "synthetic-tiny"
    assert dataset_dir(get_preset("ml1m", path="/elsewhere")) == Path("/elsewhere")
    monkeypatch.delenv("LIPCTR_DATA")
    assert datasets_root() == Path(__file__).resolve().parents[1] / "datasets"
