"""The real MovieLens-100K, downloaded once per session from PyPI (the recbole 1.2.1 wheel) into
a temporary folder: the summary the README promises, idempotent fetch, auto-fetch, the CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lipctr.data import fetch as fetch_module
from lipctr.data import get_preset, load_dataset
from lipctr.data.fetch import CHECKSUMS, download_wheel, fetch_ml100k


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheel")
    return download_wheel(folder, folder)


@pytest.fixture(scope="session")
def root(tmp_path_factory, wheel):
    root = tmp_path_factory.mktemp("datasets")
    fetch_ml100k(root / "ml-100k", wheel=wheel, log=lambda _: None)
    return root


def test_fetched_files_match_the_recorded_checksums(root):
    for name, digest in CHECKSUMS.items():
        assert hashlib.sha256((root / "ml-100k" / name).read_bytes()).hexdigest() == digest


def test_fetch_is_idempotent(root, monkeypatch):
    def no_download(*args):
        raise AssertionError("pip must not run when verified files are present")

    monkeypatch.setattr(fetch_module, "download_wheel", no_download)
    stamp = (root / "ml-100k" / "ml-100k.inter").stat().st_mtime_ns
    assert fetch_ml100k(root / "ml-100k", log=lambda _: None) == root / "ml-100k"
    assert (root / "ml-100k" / "ml-100k.inter").stat().st_mtime_ns == stamp


def test_summary_numbers(root):
    dataset = load_dataset(get_preset("ml-100k", path=str(root / "ml-100k")), cache=False)
    s = dataset.stats
    assert (s["interactions"], s["users"], s["items"], s["positives"]) == (100_000, 943, 1_682, 55_375)
    assert round(100 * s["positive_rate"], 1) == 55.4
    assert (s["train"], s["valid"], s["test"]) == (80_000, 10_000, 10_000)
    assert s["rating_counts"] == {"1": 6110, "2": 11370, "3": 27145, "4": 34174, "5": 21201}
    assert dataset.schema.names == ("user_id", "item_id", "age", "gender", "occupation", "release_year", "class")
    assert dataset.schema["user_id"].vocab_size == 944 and dataset.schema["item_id"].vocab_size == 1683
    assert dataset.schema["gender"].vocab_size == 3 and dataset.schema["occupation"].vocab_size == 22
    labels = np.concatenate([sp.label for sp in dataset.splits.values()])
    ratings = np.concatenate([sp.rating for sp in dataset.splits.values()])
    assert labels.sum() == 55_375 and np.array_equal(labels, (ratings >= 4).astype(np.float32))


def test_load_dataset_fetches_when_absent(tmp_path, wheel, monkeypatch):
    copied = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    shutil.copy(wheel, copied)
    monkeypatch.setattr(fetch_module, "download_wheel", lambda destination, folder: copied)
    monkeypatch.setenv("LIPCTR_DATA", str(tmp_path))  # auto-fetch only into <datasets root>/ml-100k
    dataset = load_dataset(get_preset("ml100k"))
    assert dataset.stats["interactions"] == 100_000 and dataset.stats["cache"] == "written"
    assert sorted(p.name for p in (tmp_path / "ml-100k").iterdir()) == sorted([*CHECKSUMS, "cache"])


def test_cli_prints_the_summary_then_hits_the_cache(root):
    env = {**os.environ, "LIPCTR_DATA": str(root)}
    outputs = [
        subprocess.run([sys.executable, "-m", "lipctr.data", "ml100k"], capture_output=True, text=True, env=env,
                       check=True).stdout
        for _ in range(2)
    ]
    for text in ("100,000 interactions, 943 users, 1,682 items", "positives: 55,375 (55.4%)",
                 "train 80,000 / valid 10,000 / test 10,000",
                 "fields (7): user_id, item_id, age, gender, occupation, release_year, class"):
        assert text in outputs[0]
    assert "cache: written" in outputs[0] and "cache: hit" in outputs[1]
