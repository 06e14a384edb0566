"""The on-disk cache: hits give identical arrays; a changed config or file invalidates it; a
corrupt entry is rebuilt; a failed write leaves nothing behind."""

from __future__ import annotations

import numpy as np
import pytest

from lipctr.data import DataConfig, load_dataset
from lipctr.data import cache as cache_module
from tests.data_files import item_rows, random_interactions, user_rows, write_atomic_dataset


@pytest.fixture
def folder(tmp_path):
    return write_atomic_dataset(tmp_path, "toy", random_interactions(30, 20, 300, seed=2), user_rows(30), item_rows(20))


def _entries(folder):
    cache = folder / "cache"
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def assert_same(a, b):
    assert a.schema == b.schema and a.name == b.name
    for name in ("train", "valid", "test"):
        x, y = a.splits[name], b.splits[name]
        np.testing.assert_array_equal(x.rating, y.rating)
        np.testing.assert_array_equal(x.label, y.label)
        assert x.features.keys() == y.features.keys()
        for field in x.features:
            assert x.features[field].dtype == y.features[field].dtype
            np.testing.assert_array_equal(x.features[field], y.features[field])
    for side in ("user_features", "item_features"):
        for field, array in getattr(a, side).items():
            np.testing.assert_array_equal(array, getattr(b, side)[field])


def test_second_load_hits_and_matches_a_fresh_build(folder):
    config = DataConfig("toy", path=str(folder))
    first = load_dataset(config)
    assert first.stats["cache"] == "written" and len(_entries(folder)) == 1
    second = load_dataset(config)
    assert second.stats["cache"] == "hit"
    assert_same(first, second)
    assert_same(second, load_dataset(config, cache=False))
    def without_cache(stats):
        return {k: v for k, v in stats.items() if k != "cache"}

    assert without_cache(second.stats) == without_cache(first.stats)


@pytest.mark.parametrize("change", [{"split_seed": 7}, {"k_core": 5}, {"threshold": 4}, {"max_seq_len": 1}])
def test_a_changed_config_invalidates(folder, change):
    load_dataset(DataConfig("toy", path=str(folder)))
    changed = load_dataset(DataConfig("toy", path=str(folder), **change))
    assert changed.stats["cache"] == "written" and len(_entries(folder)) == 2
    assert_same(changed, load_dataset(DataConfig("toy", path=str(folder), **change), cache=False))


def test_a_changed_file_invalidates(folder):
    config = DataConfig("toy", path=str(folder))
    before = load_dataset(config)
    inter = folder / "toy.inter"
    lines = inter.read_text().splitlines()
    user, item, _, time = lines[1].split("\t")
    lines[1] = "\t".join([user, item, "1" if lines[1].split("\t")[2] != "1" else "5", time])
    inter.write_text("\n".join(lines) + "\n")
    after = load_dataset(config)
    assert after.stats["cache"] == "written"
    assert after.stats["rating_counts"] != before.stats["rating_counts"]
    assert_same(after, load_dataset(config, cache=False))


def test_a_corrupt_entry_is_rebuilt(folder):
    config = DataConfig("toy", path=str(folder))
    load_dataset(config)
    entry = folder / "cache" / _entries(folder)[0]
    entry.write_bytes(entry.read_bytes()[:200])
    rebuilt = load_dataset(config)
    assert rebuilt.stats["cache"] == "written"
    assert load_dataset(config).stats["cache"] == "hit"


def test_a_failed_write_leaves_nothing(folder, monkeypatch):
    def broken_savez(handle, **arrays):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        load_dataset(DataConfig("toy", path=str(folder)))
    assert _entries(folder) == []
