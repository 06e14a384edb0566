"""The committed study reports agree with the run files committed beside them.

Each row of a mechanism study's mechanism.csv is recomputed from its run's final.json (per-member
test AUC): the mean and standard deviation over seeds, and the paired difference to orig (matched
by seed) with its 95% t interval and paired t-test p-value, by scipy. For the new backbones'
lambda_r tuning, the chosen point is recomputed from the grid's members and must be the lambda_r
the study ran and the one the configs ship (experiments/configs/defaults.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments.configs.defaults import MODEL_SETTINGS

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"
STUDIES = ["mechanism", "mechanism_new_backbones", "mechanism_new_backbones/dcn_patience10"]
NEW = RESULTS / "mechanism_new_backbones"


def member_aucs(study: Path, row) -> pd.Series:
    final = study / "run_files" / row.model / row.control / row.chosen / row.variant / "final.json"
    members = json.loads(final.read_text())["members"]
    return pd.Series({m["seed"]: m["auc"] for m in members}).sort_index()


@pytest.mark.parametrize("name", STUDIES)
def test_mechanism_table_recomputed_from_its_run_files(name):
    study = RESULTS / name
    table = pd.read_csv(study / "mechanism.csv")
    assert len(table) >= 4
    for row in table.itertuples():
        auc = member_aucs(study, row)
        assert len(auc) == row.seeds == 5
        assert row.auc_mean == pytest.approx(auc.mean(), rel=1e-9)
        assert row.auc_std == pytest.approx(auc.std(ddof=1), rel=1e-9)
        if row.control == "orig":
            assert np.isnan(row.d_auc_vs_orig)
            continue
        orig = member_aucs(study, next(table[(table.model == row.model) & (table.control == "orig")].itertuples()))
        assert list(orig.index) == list(auc.index)  # paired by seed
        diff = (auc - orig).to_numpy()
        half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
        assert row.d_auc_vs_orig == pytest.approx(diff.mean(), abs=1e-9)
        assert row.d_auc_vs_orig_low == pytest.approx(diff.mean() - half, abs=1e-7)
        assert row.d_auc_vs_orig_high == pytest.approx(diff.mean() + half, abs=1e-7)
        assert row.d_auc_vs_orig_p == pytest.approx(stats.ttest_rel(auc, orig).pvalue, rel=1e-5)


def tuned_models() -> list[str]:
    return sorted(p.name for p in (NEW / "tuning").iterdir())  # the patience-10 rerun of DCN reuses DCN's


def test_new_backbones_were_tuned():
    assert set(tuned_models()) == set(pd.read_csv(NEW / "mechanism.csv").model)


@pytest.mark.parametrize("model", tuned_models())
def test_tuned_lambda_is_the_best_validation_point_the_study_ran_and_the_config_ships(model):
    tuning = NEW / "tuning" / model
    members = pd.DataFrame(json.loads((tuning / "smooth" / "final.json").read_text())["members"])
    valid = members.groupby("lambda_r")["best_valid_auc"].mean()
    assert len(valid) == 5 and (members.groupby("lambda_r").size() == 3).all()
    grid = pd.read_csv(tuning / "grid.csv").set_index("loss.lambda_r")["valid_auc_mean"]
    np.testing.assert_allclose(grid.sort_index().to_numpy(), valid.sort_index().to_numpy(), rtol=1e-9)
    chosen = json.loads((tuning / "selected.json").read_text())["smooth"]["point"]["loss.lambda_r"]
    assert chosen == valid.idxmax()
    for control in ("smooth", "aux_rating", "within_label"):
        config = json.loads((NEW / "run_files" / model / control / "default" / "config.json").read_text())
        assert config["loss"]["lambda_r"] == chosen
    assert MODEL_SETTINGS[model]["loss"]["lambda_r"] == chosen


def test_sparse_optimizer_summary_regenerates_from_its_run_files():
    """summary.csv of the sparse-optimizer study is what its summarize.py makes of its run files."""
    import importlib.util

    study = RESULTS / "sparse_optimizers"
    spec = importlib.util.spec_from_file_location("sparse_summarize", study / "summarize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    frame, table = module.summarize(study / "run_files")
    assert frame.to_csv(index=False, float_format="%.4f") == (study / "summary.csv").read_text()
    assert table == (study / "summary.md").read_text()
