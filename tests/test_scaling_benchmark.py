"""benchmarks/scaling.py: its exponent fit on synthetic numbers, and one tiny series end to end
(no timings are checked: they depend on the machine)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import scaling


@pytest.mark.parametrize("exponent", [0.0, 0.05, 1.0, 1.5])
def test_exponent_fit_recovers_a_power_law(exponent):
    x = np.array([1e3, 1e4, 1e5, 1e6])
    assert scaling.fit_exponent(x, 0.7 * x ** exponent) == pytest.approx(exponent, abs=1e-9)
    noisy = 0.7 * x ** exponent * np.array([1.02, 0.98, 1.01, 0.99])  # +-2%: the slope moves by < 0.01
    assert scaling.fit_exponent(x, noisy) == pytest.approx(exponent, abs=0.01)


def test_synthetic_dataset_has_the_asked_rows_and_ids():
    ds = scaling.synthetic_dataset(5000, 300)
    assert len(ds.train) == 5000 and ds.schema["user_id"].vocab_size == ds.schema["item_id"].vocab_size == 301
    ids = ds.train.features["user_id"]
    assert ids.min() >= 1 and ids.max() <= 300 and set(np.unique(ds.train.rating)) == {1, 2, 3, 4, 5}


def test_a_tiny_vocab_series_runs_and_writes_its_table_and_figure(tmp_path, capsys):
    argv = ["--series", "vocab", "--sizes", "50,500", "--rows", "2048", "--curves", "adamw", "--epochs", "1",
            "--batch-size", "512", "--in-process", "--out", str(tmp_path)]
    assert scaling.main(argv) == 0
    results = json.loads((tmp_path / "vocab.json").read_text())
    assert [(r["optimizer"], r["vocab"]) for r in results] == [("adamw", 50), ("adamw", 500)]
    assert all(r["epoch_seconds"] > 0 and r["rows_per_device"] == 2048 for r in results)
    assert results[1]["state_bytes"] > results[0]["state_bytes"]  # bigger tables, bigger state
    text = (tmp_path / "vocab.md").read_text()
    assert text in capsys.readouterr().out and "| adamw |" in text and "exponent" in text
    assert (tmp_path / "vocab.png").read_bytes()[:4] == b"\x89PNG"


def test_a_shuffle_curve_sets_train_shuffle():
    """`--curves lazy_adam,lazy_adam+feistel`: one point each with its train.shuffle, named apart."""
    args = scaling.parse_args(["--series", "rows", "--sizes", "100", "--curves", "lazy_adam,lazy_adam+feistel"])
    points = scaling.points(args)
    assert [(p["optimizer"], p["shuffle"]) for p in points] == [("lazy_adam", "sort"), ("lazy_adam", "feistel")]
    assert [scaling.curve_name(p, "rows") for p in points] == ["lazy_adam", "lazy_adam+feistel"]


@pytest.mark.parametrize("argv, message", [
    (["--series", "vocab", "--sizes", "1k"], "--sizes: expected comma-separated integers"),
    (["--series", "devices", "--curves", "lazy_adam"], "--curves: devices takes replicated, sharded"),
    (["--series", "rows", "--curves", "lazy_adam+random"], "--curves: rows takes adamw"),
    ([], "--series is required"),
    (["--series", "devices", "--optimizer", "adam"], "--optimizer: one of adamw"),
])
def test_bad_arguments_are_one_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        scaling.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err
