"""Analyses of a finished run: restore, weight norms, noise robustness, Lipschitz, softmax norms."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import configs
from experiments.report import analysis
from experiments.run import run_variant
from lipctr.inference import load_run
from lipctr.io import write_json_atomic
from lipctr.models import embedding_table
from lipctr.ranking import ranking_candidates
from lipctr.softmax_jacobian import jacobian_norm_distribution
from tests.tiny_data import tiny_dataset


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    ds = tiny_dataset()
    config = configs.validate(configs.merge(configs.named_config("widedeep_ml100k"), {
        "model_hparams": {"mlp_hidden_size": [16, 16]},
        "train": {"batch_size": 512, "max_epochs": 3},
        "seeds": [2020, 2021],
    }))
    run_dir = tmp_path_factory.mktemp("run")
    write_json_atomic(run_dir / "config.json", config)
    candidates = ranking_candidates(ds, "test", 20, 0, "positive")
    finals = {v: run_variant(config, ds, v, run_dir, candidates, progress=False) for v in ("orig", "smooth")}
    return ds, run_dir, finals


def test_restored_members_reproduce_test_metrics_and_zero_noise(finished_run):
    ds, run_dir, finals = finished_run
    for variant in ("orig", "smooth"):
        tv = load_run(run_dir, variant)
        noise = analysis.noise_robustness(tv, ds, stds=(0.05,), draws=2)
        clean = noise[noise["std"] == 0.0].sort_values("seed")
        expected = [m["auc"] for m in finals[variant]["members"]]
        np.testing.assert_allclose(clean["auc"].to_numpy(), expected, atol=1e-6)
        np.testing.assert_allclose(clean["logloss"].to_numpy(), [m["logloss"] for m in finals[variant]["members"]],
                                   atol=1e-6)
        noisy = noise[noise["std"] == 0.05]
        assert len(noisy) == 4 and not np.allclose(noisy["auc"].to_numpy(), np.repeat(expected, 2))


def test_weight_norms_match_numpy(finished_run):
    ds, run_dir, _ = finished_run
    tv = load_run(run_dir, "smooth")
    table = analysis.weight_norms(tv)
    for i in range(2):
        user = np.asarray(embedding_table(tv.params, "user_id"))[i]
        np.testing.assert_allclose(table["user_weight_norm"][i], np.sqrt((user.astype(np.float64) ** 2).sum()),
                                   rtol=1e-5)


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_run_analyses_writes_every_table(finished_run):
    ds, run_dir, _ = finished_run
    analysis.run_analyses(run_dir, ds, ("orig", "smooth"), noise_draws=1, lipschitz_examples=16)
    out = run_dir / "analysis"
    lip = __import__("pandas").read_csv(out / "lipschitz.csv")
    assert set(lip["variant"]) == {"orig", "smooth"} and (lip["grad_norm_mean"] > 0).all()
    np.testing.assert_allclose(lip["spectral_probs_fd_mean"], lip["spectral_probs_mean"], rtol=1e-2)
    soft = __import__("pandas").read_csv(out / "softmax_norms.csv")
    assert len(soft) == 2 and ((soft["fraction_above_bound"] >= 0) & (soft["fraction_above_bound"] <= 1)).all()
    assert json.loads((run_dir / "smooth" / "final.json").read_text())["lambda_sweep"] == []


def test_paired_t_test_matches_closed_form_values():
    from experiments.report.stats import paired_t_test

    # d = [1, 2, 3]: mean 2, sd 1, t = 2 sqrt(3); two-sided p for df = 2 is 1 - t / sqrt(2 + t^2)
    t, p = paired_t_test([0, 0, 0], [1, 2, 3])
    assert t == pytest.approx(2 * np.sqrt(3))
    assert p == pytest.approx(1 - t / np.sqrt(2 + t * t), rel=1e-9)
    # df = 4, t = 2.776445 is the textbook 5% two-sided critical value
    base = np.zeros(5)
    d = np.array([-1.0, 0.0, 1.0, 2.0, 3.0])  # mean 1, sd sqrt(2.5)
    t, p = paired_t_test(base, d)
    assert t == pytest.approx(1 / (np.sqrt(2.5) / np.sqrt(5)))
    t_crit = 2.776445
    _, p_crit = paired_t_test(base, d - d.mean() + t_crit * np.sqrt(2.5) / np.sqrt(5))
    assert p_crit == pytest.approx(0.05, abs=1e-5)


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_report_tables_and_figures(finished_run, tmp_path):
    import pandas as pd

    from experiments.report.paper import write_report

    ds, run_dir, finals = finished_run
    analysis.run_analyses(run_dir, ds, ("orig", "smooth"), noise_draws=1, lipschitz_examples=8)
    path = write_report([run_dir], tmp_path)
    text = path.read_text()
    assert "Table 1" in text and "widedeep" in text
    table1 = pd.read_csv(tmp_path / "table1.csv")
    auc = table1[table1["metric"] == "auc"].iloc[0]
    assert auc["orig_mean"] == pytest.approx(np.mean([m["auc"] for m in finals["orig"]["members"]]))
    assert auc["smooth_mean"] == pytest.approx(np.mean([m["auc"] for m in finals["smooth"]["members"]]))
    for png in ("fig2_widedeep_ml100k.png", "fig3_widedeep_ml100k.png", "fig_theorem1.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_analysis_summary_equals_direct_means(finished_run, tmp_path):
    import pandas as pd

    from experiments.report.tables import analysis_summary, read_run

    ds, run_dir, _ = finished_run
    analysis.run_analyses(run_dir, ds, ("orig", "smooth"), noise_draws=1, lipschitz_examples=8)
    summary = analysis_summary([read_run(run_dir)]).set_index("variant")
    noise = pd.read_csv(run_dir / "analysis" / "noise.csv")
    lipschitz = pd.read_csv(run_dir / "analysis" / "lipschitz.csv")
    for variant in ("orig", "smooth"):
        history = pd.read_csv(run_dir / variant / "metrics.csv")
        row = summary.loc[variant]
        assert row["user_grad_norm_epoch"] == pytest.approx(np.mean(history["user_grad_norm"]))
        mine = lipschitz[lipschitz["variant"] == variant]
        assert row["grad_norm_max"] == pytest.approx(np.mean(mine["grad_norm_max"]))
        at = noise[noise["variant"] == variant]
        clean = np.mean(at[at["std"] == 0.0]["auc"])
        noisiest = np.mean(at[at["std"] == at["std"].max()]["auc"])
        assert row["auc_drop_pct"] == pytest.approx(100 * (clean - noisiest) / clean)


@pytest.mark.slow  # ~11 s (suite time)
def test_aux_rating_run_loads_with_its_click_head(tmp_path):
    """lipctr.load_run of an aux_rating variant scores clicks from the BCE column only: its test
    probabilities are the run's saved ones and the analyses' clean AUC is the run's."""
    ds = tiny_dataset()
    config = configs.validate(configs.merge(configs.named_config("dcnv2_ml100k"), {
        "model_hparams": {"mlp_hidden_size": [16], "embedding_dim": 4}, "controls": {"aux_rating": True},
        "train": {"batch_size": 512, "max_epochs": 1}, "seeds": [2020]}))
    write_json_atomic(tmp_path / "config.json", config)
    final = run_variant(config, ds, "smooth", tmp_path, ranking_candidates(ds, "test", 20, 0, "positive"),
                        progress=False)
    run = load_run(tmp_path, "smooth")
    assert run.loss_config.aux_rating and run.num_outputs == 1 + ds.schema.num_ratings
    saved = np.load(tmp_path / "smooth" / "predictions.npz")
    probability = run.probabilities(saved["logits"])
    np.testing.assert_array_equal(probability["member_probability"], saved["probability"])
    assert probability["ratings"].shape == (len(ds.test), ds.schema.num_ratings)
    clean = analysis.noise_robustness(run, ds, stds=(), draws=1)
    np.testing.assert_allclose(clean["auc"], [m["auc"] for m in final["members"]], atol=1e-6)
    # the softmax-norm analysis reads the rating head's N columns, not the click column
    norms = analysis.trained_softmax_norms(tmp_path, "smooth", aux_rating=True)
    expected = jacobian_norm_distribution(jnp.asarray(saved["logits"][0][:, 1:])).summary()
    assert norms.iloc[0].drop("member").to_dict() == pytest.approx(expected)
