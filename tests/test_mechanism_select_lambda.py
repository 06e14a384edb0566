"""`python -m experiments.mechanism --select-lambda`, end to end on a small CSV: each backbone's
smooth lambda_r sweep trains first, the lambda_r of best mean validation AUC (recomputed here from
the sweep's own metrics) is the one every control then trains at, the report says so, and a
`--resume --report-only` rewrites the same table without training."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from experiments.mechanism import study as mechanism
from tests.cli_support import MECHANISM_SWEEP


def best_lambda_from_metrics(sweep_dir) -> float:
    """The sweep's lambda_r of best mean (over seeds) best-epoch validation AUC, from metrics.csv alone."""
    (metrics,) = sweep_dir.glob("*/metrics.csv")
    best = pd.read_csv(metrics).groupby(["member", "lambda_r"]).valid_auc.max().reset_index()
    return float(best.groupby("lambda_r").valid_auc.mean().idxmax())


def test_every_control_trains_at_the_lambda_r_its_backbones_sweep_chose(mechanism_argv, tmp_path, monkeypatch, capsys):
    """The wiring alone (the default suite; the end-to-end run below is slow): select_lambda's value
    per backbone reaches every control's config and the report, with lambda_sweep cleared."""
    chosen = {"dcnv2": 0.8, "nfm": 0.2}
    trained, reported = [], {}

    def fake_train_control(config, control, dataset, root, candidates, progress, mesh=None):
        trained.append((config["model"], control.name, config["loss"]["lambda_r"], config["lambda_sweep"]))
        return {"control": control.name, "variant": control.variant, "chosen": "default", "dir": root,
                "final": {}, "selection": {}}

    def fake_report(results, root, command, configs, controls, dataset, lambda_chosen=False):
        reported.update(lambdas={c["model"]: c["loss"]["lambda_r"] for c in configs}, flag=lambda_chosen,
                        dataset=dataset)
        return root / "mechanism.md"

    monkeypatch.setattr(mechanism, "select_lambda", lambda config, *args: chosen[config["model"]])
    monkeypatch.setattr(mechanism, "train_control", fake_train_control)
    monkeypatch.setattr(mechanism, "analyse", lambda *args: {})
    monkeypatch.setattr(mechanism, "write_mechanism_report", fake_report)
    argv = [*mechanism_argv, "--models", "dcnv2,nfm", "--select-lambda", "--runs-dir", str(tmp_path / "runs")]
    assert mechanism.main(argv) == 0, capsys.readouterr().err
    controls = ["orig", "smooth", "aux_rating"]
    assert sorted(trained) == sorted((m, c, lam, []) for m, lam in chosen.items() for c in controls)
    assert reported == {"lambdas": chosen, "flag": True, "dataset": "mine"}
    err = capsys.readouterr().err
    assert "dcnv2: lambda_r 0.8 chosen on validation" in err and "nfm: lambda_r 0.2 chosen on validation" in err


@pytest.mark.slow  # ~55 s: a sweep, three controls and their analyses compile on a small CSV
def test_select_lambda_trains_every_control_at_the_validation_chosen_lambda(mechanism_argv, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert mechanism.main([*mechanism_argv, "--select-lambda", "--runs-dir", str(runs)]) == 0, capsys.readouterr().err
    (root,) = (runs / "mechanism_mine").iterdir()  # named after the data
    assert (root / "mechanism.md").read_text().startswith("# Mechanism study: mine\n")
    sweep_dir = root / "dcnv2" / "lambda_sweep"
    chosen = best_lambda_from_metrics(sweep_dir)
    assert json.loads((sweep_dir / "selected.json").read_text())["smooth"]["point"]["loss.lambda_r"] == chosen
    sweep_metrics = pd.read_csv(next(sweep_dir.glob("*/metrics.csv")))
    assert sorted(sweep_metrics.lambda_r.unique()) == MECHANISM_SWEEP and sweep_metrics.seed.nunique() == 2
    for control, variant in (("smooth", "smooth"), ("aux_rating", "smooth"), ("orig", "orig")):
        config = json.loads((root / "dcnv2" / control / "default" / "config.json").read_text())
        assert config["loss"]["lambda_r"] == chosen and config["lambda_sweep"] == []
        members = pd.read_csv(root / "dcnv2" / control / "default" / variant / "metrics.csv")
        assert members.seed.nunique() == 2  # the controls train one member per seed, no sweep
    assert set(pd.read_csv(root / "dcnv2" / "smooth" / "default" / "smooth" / "metrics.csv").lambda_r) == {chosen}
    report = (root / "mechanism.md").read_text()
    assert f"lambda_r: dcnv2 {chosen:g} (each chosen on validation" in report
    table = (root / "mechanism.csv").read_text()

    capsys.readouterr()
    assert mechanism.main(["--resume", str(root), "--report-only", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"dcnv2: lambda_r {chosen:g} chosen on validation" in err and "epoch" not in err.lower()
    assert (root / "mechanism.csv").read_text() == table


@pytest.mark.parametrize("extra, message", [
    (["--set", "loss.lambda_r=0.3"], "--select-lambda chooses loss.lambda_r on validation; drop --set loss.lambda_r"),
    (["--set", "lambda_sweep=[0.5, 0.5]"], "lambda_sweep"),
])
def test_select_lambda_refusals_name_the_flag_and_make_nothing(mechanism_argv, tmp_path, capsys, extra, message):
    runs = tmp_path / "runs"
    assert mechanism.main([*mechanism_argv, "--select-lambda", *extra, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not runs.exists()
