"""The mechanism study's statistics, table, forest plot and CLI errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from experiments.mechanism import study as mechanism
from experiments.mechanism.controls import choose, controls
from experiments.mechanism.report import forest_rows, mechanism_table
from experiments.report.figures import forest_figure
from experiments.report.stats import paired_difference, t_quantile
from experiments.report.tables import compare


def test_t_quantile_matches_closed_forms_and_scipy():
    for q in (0.6, 0.9, 0.975, 0.995):
        assert t_quantile(q, 1) == pytest.approx(math.tan(math.pi * (q - 0.5)), rel=1e-8)
        alpha = 4 * q * (1 - q)
        assert t_quantile(q, 2) == pytest.approx(2 * (q - 0.5) * math.sqrt(2 / alpha), rel=1e-8)
    assert t_quantile(0.025, 4) == pytest.approx(-2.7764451051977934, rel=1e-8)
    stats = pytest.importorskip("scipy.stats")
    for df in (3, 4, 9, 30):
        assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-8)


def scipy_paired(a, b):
    """Paired t over b - a from scipy when present, else numpy with the closed-form quantile."""
    d = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    try:
        from scipy import stats
    except ImportError:  # the 95% two-sided quantile of t with 4 degrees of freedom
        half = 2.7764451051977934 * d.std(ddof=1) / np.sqrt(d.size)
        return d.mean(), d.mean() - half, d.mean() + half, None
    result = stats.ttest_rel(b, a)
    interval = result.confidence_interval(0.95)
    return d.mean(), interval.low, interval.high, result.pvalue


def fake_results(rng) -> list[dict]:
    seeds = [2020, 2021, 2022, 2023, 2024]
    analysis = {"lipschitz": pd.DataFrame({"grad_norm_mean": [1.0, 2.0], "grad_norm_max": [3.0, 5.0],
                                           "spectral_probs_max": [4.0, 6.0]}),
                "weight_norms": pd.DataFrame({"user_weight_norm": [1.0, 3.0], "item_weight_norm": [2.0, 4.0]}),
                "noise": pd.DataFrame({"std": [0.0, 0.09, 0.0, 0.09], "auc": [0.8, 0.7, 0.8, 0.74]})}
    results = []
    for model in ("dcnv2", "nfm"):
        for control, shift in (("orig", 0.0), ("smooth", 0.008), ("within_label", 0.004), ("aux_rating", 0.001)):
            members = [{"seed": s, "auc": 0.78 + shift + 0.003 * rng.normal(),
                        "logloss": 0.55 - shift + 0.002 * rng.normal()}
                       for s in seeds]
            results.append({"model": model, "control": control, "variant": "orig" if control == "orig" else "smooth",
                            "chosen": "default", "selection": {"default": 0.8}, "final": {"members": members},
                            "analysis": analysis})
    return results


def test_mechanism_table_and_forest_intervals_equal_a_direct_paired_t():
    results = fake_results(np.random.default_rng(0))
    table = mechanism_table(results)
    assert len(table) == 8
    finals = {(r["model"], r["control"]): pd.DataFrame(r["final"]["members"]).set_index("seed") for r in results}
    for _, row in table.iterrows():
        for ref in ("orig", "smooth"):
            if row["control"] == ref:
                assert np.isnan(row[f"d_auc_vs_{ref}"])
                continue
            for metric in ("auc", "logloss"):
                a, b = finals[(row["model"], ref)][metric], finals[(row["model"], row["control"])][metric]
                mean, low, high, p = scipy_paired(a, b)
                key = f"d_{metric}_vs_{ref}"
                assert (row[key], row[f"{key}_low"], row[f"{key}_high"]) == pytest.approx((mean, low, high), abs=1e-12)
                if p is not None:
                    assert row[f"{key}_p"] == pytest.approx(p, rel=1e-6)
    assert table["lipschitz_mean"].iloc[0] == 1.5
    assert table["auc_drop_pct"].iloc[0] == pytest.approx(100 * (0.8 - 0.72) / 0.8)
    rows = forest_rows(table)
    controls_shown = ("smooth", "within_label", "aux_rating")
    assert list(rows["label"]) == [f"{m} {c}" for m in ("dcnv2", "nfm") for c in controls_shown]
    fig = forest_figure(rows, "test")
    bars = fig.axes[0].containers[0].lines[2][0].get_segments()  # the drawn horizontal intervals, top row first
    drawn = sorted((float(s[0][1]), float(s[0][0]), float(s[1][0])) for s in bars)
    assert len(drawn) == len(rows)
    for y, low, high in drawn:
        expected = rows.iloc[len(rows) - 1 - round(y)]
        a = finals[tuple(expected["label"].split(" "))[:1] + ("orig",)]["auc"]
        b = finals[tuple(expected["label"].split(" "))]["auc"]
        mean, ci_low, ci_high, _ = scipy_paired(a, b)
        assert (low, high) == pytest.approx((100 * ci_low, 100 * ci_high), abs=1e-9)


def test_study_report_compare_has_the_paired_interval():
    rng = np.random.default_rng(1)
    runs = []
    for model in ("dcnv2", "nfm"):
        finals = {v: {"members": [{"seed": s, "lambda_r": lam, "auc": 0.78 + 0.01 * rng.normal()} for s in range(5)]}
                  for v, lam in (("orig", 0.0), ("smooth", 0.5))}
        runs.append({"config": {"model": model, "dataset": "ml100k", "loss": {"lambda_r": 0.5}}, "finals": finals})
    table = compare(runs, ("auc",))
    for (_, row), run in zip(table.iterrows(), runs):
        a = [m["auc"] for m in run["finals"]["orig"]["members"]]
        b = [m["auc"] for m in run["finals"]["smooth"]["members"]]
        mean, low, high, _ = scipy_paired(a, b)
        assert (row["delta"], row["ci_low"], row["ci_high"]) == pytest.approx((mean, low, high), abs=1e-12)
    assert paired_difference([1.0], [2.0])["n"] == 1 and np.isnan(paired_difference([1.0], [2.0])["low"])


def test_control_registry_and_selection():
    known = controls()
    assert list(known)[:2] == ["orig", "smooth"]
    assert known["scalar_side"].only == ("widedeep", "xdeepfm", "autoint",
                                         "deepfm")  # the backbones with scalar side branches
    assert known["scale_penalty_off"].only == ("xdeepfm", "dcnv2", "eulernet", "dcn")  # those with their own L2 term
    assert not known["scalar_side"].applies_to("dcnv2") and known["aux_rating"].applies_to("dcnv2")
    assert [c.name for c in choose("aux_rating,classes3")] == ["orig", "smooth", "classes3", "aux_rating"]
    with pytest.raises(ValueError, match=r"--controls: unknown control\(s\) \['nope'\]"):
        choose("aux_rating,nope")


@pytest.mark.parametrize("argv, message", [
    (["--controls", "nope"], "--controls: unknown control(s) ['nope']"),
    (["--models", "dcnv4"], "--models: unknown backbone(s) ['dcnv4']"),
    (["--seeds", "a,b"], "--seeds 'a,b': 'a' is not one of the comma-separated integers"),
    (["--report-only"], "--report-only needs --resume DIR"),
    (["--set", "lambda_sweep=[0.1, 0.9]"], "key 'lambda_sweep' gives the lambda_r values --select-lambda tries"),
])
def test_cli_stops_on_bad_options_with_a_message(argv, message, capsys, tmp_path):
    assert mechanism.main([*argv, "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing half-made


def test_train_control_reports_the_candidate_with_the_best_mean_validation_auc(monkeypatch, tmp_path):
    from experiments.configs import named_config

    valid = {0.05: (0.70, 0.74), 0.1: (0.75, 0.74), 0.2: (0.73, 0.72)}  # means 0.72, 0.745, 0.725
    trained = []

    def fake_run_config(config, dataset, run_dir, candidates, progress, mesh):
        eps = config["controls"]["label_smoothing"]
        (variant,) = config["variants"]  # the control's variant alone
        trained.append((variant, eps, run_dir.name))
        return {variant: {"members": [{"seed": s, "best_valid_auc": v} for s, v in zip((1, 2), valid[eps])]}}

    monkeypatch.setattr(mechanism, "run_config", fake_run_config)
    control = controls()["label_smoothing"]
    result = mechanism.train_control(named_config("dcnv2_ml100k"), control, None, tmp_path, None, False)
    assert trained == [("orig", 0.05, "eps0.05"), ("orig", 0.1, "eps0.1"), ("orig", 0.2, "eps0.2")]
    assert result["chosen"] == "eps0.1" and result["dir"] == tmp_path / "dcnv2" / "label_smoothing" / "eps0.1"
    assert result["selection"] == pytest.approx({"eps0.05": 0.72, "eps0.1": 0.745, "eps0.2": 0.725})
    saved = json.loads((result["dir"] / "config.json").read_text())
    assert saved["controls"]["label_smoothing"] == 0.1 and saved["model"] == "dcnv2"


def test_report_only_counts_a_control_finished_when_every_candidate_is(tmp_path):
    from experiments.configs import named_config

    config, control = named_config("dcnv2_ml100k"), controls()["label_smoothing"]
    assert not mechanism.is_finished(config, control, tmp_path)
    for i, candidate in enumerate(control.candidates):
        out = tmp_path / "dcnv2" / "label_smoothing" / candidate.label / "orig"
        out.mkdir(parents=True)
        if i < len(control.candidates) - 1:
            (out / "final.json").write_text("{}")
    assert not mechanism.is_finished(config, control, tmp_path)  # the last candidate is unfinished
    (out / "final.json").write_text("{}")
    assert mechanism.is_finished(config, control, tmp_path)


def test_ctrl_c_exits_130_with_the_studys_resume_command(mechanism_argv, tmp_path, monkeypatch, capsys):  # noqa: F811
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mechanism, "select_lambda", interrupted)  # mechanism_argv's lambda_sweep needs --select-lambda
    assert mechanism.main([*mechanism_argv, "--select-lambda", "--runs-dir", str(tmp_path / "runs")]) == 130
    (root,) = (tmp_path / "runs" / "mechanism_mine").iterdir()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    resume = f"interrupted; continue with: python -m experiments.mechanism --resume {root}"
    assert err.strip().splitlines()[-1] == resume


def test_ctrl_c_while_the_data_loads_exits_130_and_makes_nothing(mechanism_argv, tmp_path, monkeypatch, capsys):  # noqa: F811
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mechanism.data_source, "load", interrupted)
    assert mechanism.main([*mechanism_argv, "--select-lambda", "--runs-dir", str(tmp_path / "runs")]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "interrupted before any training; nothing to resume"
    assert not (tmp_path / "runs").exists()
