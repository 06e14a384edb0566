"""Same numbers on any device layout (lipctr.runtime, README "Same numbers on any layout"): the
XLA flag defaults, and on the real MovieLens-100K every member's metrics bit-identical with 1 or 2
visible devices, sharded or not, and resumed on another mesh (CLI runs in subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lipctr import runtime

ROOT = Path(__file__).resolve().parents[1]
CLI = ["--config", "dcnv2_ml100k", "--variant", "orig", "--seeds", "2020,2021", "--epochs", "2", "--no-progress"]
AUC_TOLERANCE_DATA_AXIS = 2e-3  # measured on this data: README "Same numbers on any layout"
TWO_DEVICES = "--xla_force_host_platform_device_count=2"
INTERRUPT_AFTER_EPOCH_1 = """import sys
from lipctr.checkpoint import StateCheckpoints
from experiments.main import main
save = StateCheckpoints.save
def save_then_stop(self, epoch, tree):
    save(self, epoch, tree)
    if epoch == 1:
        raise SystemExit(0)
StateCheckpoints.save = save_then_stop
main(sys.argv[1:])
"""


def test_flag_defaults_leave_the_users_setting_alone(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    runtime.layout_independent_cpu_ops(exact=False)
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
    runtime.layout_independent_cpu_ops(exact=True)
    assert os.environ["XLA_FLAGS"] == ("--xla_cpu_experimental_ynn_fusion_type=individual_dot "
                                       "--xla_disable_hlo_passes=algsimp")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type= --xla_disable_hlo_passes=fusion")
    runtime.layout_independent_cpu_ops(exact=True)
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type= --xla_disable_hlo_passes=fusion"


def test_exact_layout_is_on_for_mesh_runs_and_resumes():
    from experiments.main import exact_layout, parse_args

    assert exact_layout(parse_args([]), "") is False
    assert exact_layout(parse_args([]), "seeds=2") is True
    assert exact_layout(parse_args(["--resume", "runs/x"]), "") is True
    assert exact_layout(parse_args(["--exact-layout"]), "") is True
    assert exact_layout(parse_args(["--no-exact-layout"]), "seeds=2") is False


def _cli(runs: Path, args: list[str], devices_flag: str = "", script: str | None = None) -> Path:
    """Run the CLI (or `script` around it) with its runs in `runs`; the run directory."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    if devices_flag:
        env["XLA_FLAGS"] = devices_flag
    head = [sys.executable, "-c", script] if script else [sys.executable, "-m", "experiments.main"]
    done = subprocess.run(head + args + ["--runs-dir", str(runs)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    [config] = runs.glob("*/*/config.json")
    return config.parent


def _run_metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "orig" / "metrics.csv")


def _run(run_dir: Path) -> dict:
    """final.json and metrics.csv (without timings) of the orig variant."""
    out = run_dir / "orig"
    metrics = pd.read_csv(out / "metrics.csv").drop(columns=["train_seconds", "eval_seconds"])
    return {"final": json.loads((out / "final.json").read_text()), "metrics": metrics}


def _members(run: dict) -> list[dict]:
    keys = ("auc", "logloss", "ndcg@10", "ndcg@20", "recall@10", "recall@20", "best_valid_auc", "best_epoch")
    return [{k: m[k] for k in keys} for m in run["final"]["members"]]


def _assert_identical(a: dict, b: dict, what: str) -> None:
    assert _members(a) == _members(b), what
    pd.testing.assert_frame_equal(a["metrics"], b["metrics"], check_exact=True, obj=what)


@pytest.mark.slow
def test_members_are_bit_identical_on_any_layout_on_ml100k(tmp_path):
    """On main, 2 visible devices alone moved a member's test AUC and a sharded run differed."""
    one = _run(_cli(tmp_path / "one_device", CLI))
    two = _run(_cli(tmp_path / "two_devices", CLI, TWO_DEVICES))
    _assert_identical(one, two, "1 vs 2 visible devices, no mesh")
    sharded = _run(_cli(tmp_path / "seeds2", CLI + ["--mesh", "seeds=2"], TWO_DEVICES))
    stopped = _cli(tmp_path / "resumed", CLI + ["--mesh", "seeds=2"], TWO_DEVICES, INTERRUPT_AFTER_EPOCH_1)
    assert not (stopped / "orig" / "final.json").exists() and len(_run_metrics(stopped)) == 2
    resumed = _run(_cli(tmp_path / "resumed", ["--resume", str(stopped), "--mesh", "", "--no-progress"]))
    _assert_identical(sharded, resumed, "seeds=2 vs seeds=2 stopped after epoch 1 and resumed on one device")
    exact = _run(_cli(tmp_path / "exact", CLI + ["--exact-layout"]))
    _assert_identical(sharded, exact, "seeds=2 vs one device with --exact-layout")
    split = _run(_cli(tmp_path / "data2", CLI + ["--mesh", "data=2"], TWO_DEVICES))
    for a, b in zip(_members(exact), _members(split)):  # the batch sum is split over devices
        assert a["auc"] == pytest.approx(b["auc"], abs=AUC_TOLERANCE_DATA_AXIS), a
