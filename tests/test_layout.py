"""Numbers on any device layout (lipctr.runtime, README "Same numbers on any layout"): the XLA
flag default, and on the real MovieLens-100K every member's metrics bit-identical with 1 or 4
visible devices, and sharded or resumed-on-another-mesh runs within the measured rounding
spread (CLI runs in subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import lipctr

ROOT = Path(lipctr.__file__).resolve().parents[1]  # the code under test (PYTHONPATH=/work/main: main's)
CLI = ["--config", "dcnv2_ml100k", "--variant", "orig", "--seeds", "2020,2021,2022,2023", "--epochs", "2",
       "--no-progress"]
FOUR_DEVICES = "--xla_force_host_platform_device_count=4"
# sharded / resumed runs vs unsharded ones, measured on main: up to 4.8e-4 AUC, 3.6e-4 LogLoss (README)
AUC_SPREAD, LOGLOSS_SPREAD = 2e-3, 2e-3
INTERRUPT_AFTER_EPOCH_1 = """import sys
from lipctr.checkpoint import StateCheckpoints
from experiments.main import main
save = StateCheckpoints.save
def save_then_stop(self, epoch, tree, *args, **kwargs):
    save(self, epoch, tree, *args, **kwargs)
    if epoch == 1:
        raise SystemExit(0)
StateCheckpoints.save = save_then_stop
main(sys.argv[1:])
"""


def test_flag_default_leaves_the_users_setting_alone(monkeypatch):
    from lipctr import runtime

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    runtime.cpu_defaults()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x --xla_cpu_experimental_ynn_fusion_type=individual_dot")
    runtime.cpu_defaults()
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_cpu_experimental_ynn_fusion_type=individual_dot"


def _start(runs: Path, args: list[str], devices_flag: str = "", script: str | None = None) -> tuple:
    """Start the CLI (or `script` around it) with its runs in `runs` (ROOT's code, CPU only)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    if devices_flag:
        env["XLA_FLAGS"] = devices_flag
    head = [sys.executable, "-c", script] if script else [sys.executable, "-m", "experiments.main"]
    runs.mkdir(parents=True, exist_ok=True)
    log = open(runs / "log.txt", "w")
    return runs, log, subprocess.Popen(head + args + ["--runs-dir", str(runs)], cwd=ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT)


def _wait(*started: tuple) -> list[Path]:
    """Wait for runs from `_start` (side by side); their run directories."""
    run_dirs = []
    for runs, log, process in started:
        code = process.wait(timeout=3600)
        log.close()
        assert code == 0, (runs / "log.txt").read_text()[-3000:]
        [config] = runs.glob("*/*/config.json")
        run_dirs.append(config.parent)
    return run_dirs


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
def test_members_on_any_layout_on_ml100k(tmp_path):
    """On main, merely making 4 devices visible changed members' test AUC by up to 7.5e-4."""
    one, four, sharded, split, stopped = _wait(
        _start(tmp_path / "one_device", CLI),
        _start(tmp_path / "four_devices", CLI, FOUR_DEVICES),
        _start(tmp_path / "seeds4", CLI + ["--mesh", "seeds=4"], FOUR_DEVICES),
        _start(tmp_path / "seeds2data2", CLI + ["--mesh", "seeds=2,data=2"], FOUR_DEVICES),
        _start(tmp_path / "resumed", CLI + ["--mesh", "seeds=4"], FOUR_DEVICES, INTERRUPT_AFTER_EPOCH_1))
    _assert_identical(_run(one), _run(four), "1 vs 4 visible devices, no mesh")
    assert not (stopped / "orig" / "final.json").exists() and len(_run_metrics(stopped)) == 4
    [resumed] = _wait(_start(tmp_path / "resumed", ["--resume", str(stopped), "--mesh", "", "--no-progress"]))
    for other in (sharded, split, resumed):
        for a, b in zip(_members(_run(one)), _members(_run(other))):
            assert a["auc"] == pytest.approx(b["auc"], abs=AUC_SPREAD), (other, a, b)
            assert a["logloss"] == pytest.approx(b["logloss"], abs=LOGLOSS_SPREAD), (other, a, b)
