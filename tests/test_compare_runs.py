"""experiments.compare_runs: members paired by name, the paired statistics against closed forms,
config differences, and one-line errors."""

import json
import math

import numpy as np
import pytest

from experiments import compare_runs as cr


def write_run(directory, config, outputs):
    """A run directory as experiments.main writes it, with just what compare_runs reads."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    for output, (members, seconds) in outputs.items():
        (directory / output).mkdir()
        final = {"members": members, "timing": {"seconds_per_epoch": seconds}}
        (directory / output / "final.json").write_text(json.dumps(final))
        (directory / output / "metrics.csv").write_text("epoch,member\n1,x\n")
    return directory


def members(aucs, names=None):
    names = names or [f"seed{2020 + i}" for i in range(len(aucs))]
    return [{"member": n, "seed": 2020 + i, "auc": a, "logloss": 1.0 - a} for i, (n, a) in enumerate(zip(names, aucs))]


CONFIG = {"model": "nfm", "dataset": "ml100k", "train": {"learning_rate": 0.005, "compute_dtype": "float32"}}


def test_members_are_paired_by_name_and_the_statistics_match_closed_forms(tmp_path):
    base = [0.780, 0.790, 0.785]
    other = {"seed2022": 0.786, "seed2020": 0.783, "seed2021": 0.790}  # stored in another order
    a = write_run(tmp_path / "a", CONFIG, {"orig": (members(base), 2.0)})
    other_config = {**CONFIG, "train": {**CONFIG["train"], "compute_dtype": "bfloat16"}}
    b_members = [{"member": n, "seed": 0, "auc": v, "logloss": 1.0 - v} for n, v in other.items()]
    b = write_run(tmp_path / "b", other_config, {"orig": (b_members, 3.0), "smooth": (members(base), 1.0)})
    differences, table = cr.compare_runs(a, b, ["auc"])
    assert differences == ["train.compute_dtype: float32 -> bfloat16"]
    assert list(table["output"]) == ["orig"]  # smooth is in one run only
    row = table.iloc[0]
    d = np.array([other["seed2020"], other["seed2021"], other["seed2022"]]) - np.array(base)
    assert row["delta_mean"] == pytest.approx(d.mean(), abs=1e-12)
    assert row["max_abs_delta"] == pytest.approx(np.abs(d).max(), abs=1e-12)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    assert row["p_value"] == pytest.approx(1.0 - abs(t) / math.sqrt(2.0 + t * t), rel=1e-6)  # Student t, df = 2
    half = 4.302652729911275 * d.std(ddof=1) / math.sqrt(3)  # t_{0.975, 2}
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-6)
    assert row["baseline_std"] == pytest.approx(np.std(base, ddof=1))
    assert row["within_seed_std"] == (abs(d.mean()) <= np.std(base, ddof=1))
    assert row["epoch_time_ratio"] == pytest.approx(1.5)


def test_a_grid_run_is_compared_at_its_chosen_point_paired_by_seed(tmp_path):
    """A tuned grid run (selected.json): only the chosen point's members count, paired by seed."""
    base = [0.780, 0.790, 0.785]
    a = write_run(tmp_path / "a", CONFIG, {"orig": (members(base), 2.0)})
    grid = []
    for rate, aucs in ((0.01, [0.70, 0.71, 0.72]), (0.1, [0.781, 0.793, 0.784])):
        grid += [{"member": f"elr{rate:g}_seed{2020 + i}", "seed": 2020 + i, "auc": v, "logloss": 1 - v}
                 for i, v in enumerate(aucs)]
    b = write_run(tmp_path / "b", CONFIG, {"orig": (grid, 2.0)})
    chosen = [{"output": "orig", "member": f"elr0.1_seed{2020 + i}"} for i in range(3)]
    (b / "selected.json").write_text(json.dumps({"orig": {"point": {"train.embedding_learning_rate": 0.1},
                                                          "members": chosen}}))
    _, table = cr.compare_runs(a, b, ["auc"])
    row = table.iloc[0]
    assert row["members"] == 3
    assert row["delta_mean"] == pytest.approx(np.mean(np.array([0.781, 0.793, 0.784]) - base), abs=1e-12)


def test_a_shift_beyond_the_seed_noise_is_flagged(tmp_path):
    a = write_run(tmp_path / "a", CONFIG, {"orig": (members([0.780, 0.782, 0.781, 0.783]), 1.0)})
    b = write_run(tmp_path / "b", CONFIG, {"orig": (members([0.790, 0.793, 0.791, 0.792]), 1.0)})
    differences, table = cr.compare_runs(a, b, ["auc", "logloss"])
    assert differences == []
    auc = table[table["metric"] == "auc"].iloc[0]
    assert not auc["within_seed_std"] and auc["p_value"] < 0.01 and auc["ci_low"] > 0
    logloss = table[table["metric"] == "logloss"].iloc[0]
    assert logloss["delta_mean"] == pytest.approx(-auc["delta_mean"])


def test_config_differences_flatten_nested_tables_and_name_absent_keys():
    got = cr.config_differences({"train": {"lr": 1, "wd": 0}, "seeds": [1, 2]},
                                {"train": {"lr": 2}, "seeds": [1, 2], "mesh": "2x1"})
    assert got == ["mesh: (absent) -> 2x1", "train.lr: 1 -> 2", "train.wd: 0 -> (absent)"]


def test_bad_input_is_one_error_line(tmp_path, capsys):
    a = write_run(tmp_path / "a", CONFIG, {"orig": (members([0.78, 0.79]), 1.0)})
    b = write_run(tmp_path / "b", CONFIG, {"smooth": (members([0.78, 0.79]), 1.0)})
    c = write_run(tmp_path / "c", CONFIG, {"orig": (members([0.78, 0.79], ["x", "y"]), 1.0)})
    cases = [([str(a), str(b)], "no output in common"), ([str(a), str(c)], "orig: no member name in common"),
             ([str(a), str(a), "--metrics", "ndcg@10"], "metric 'ndcg@10' is not in both"),
             ([str(a), str(tmp_path / "missing")], "config.json"),
             ([str(a), str(a / "config.json")], "config.json"),  # a file, not a run directory
             ([str(a), str(a), "--csv", str(tmp_path / "no" / "t.csv")], "does not exist")]
    for argv, message in cases:
        assert cr.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_the_cli_prints_differences_and_writes_the_csv(tmp_path, capsys):
    a = write_run(tmp_path / "a", CONFIG, {"orig": (members([0.78, 0.79]), 1.0)})
    assert cr.main([str(a), str(a), "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "config differences (baseline -> other):\n  none" in out
    written = (tmp_path / "t.csv").read_text().splitlines()
    assert written[0].startswith("output,metric,members") and len(written) == 3
