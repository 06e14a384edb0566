"""Sparse embedding optimizers through the experiment CLI: a run killed with SIGKILL after a
checkpoint resumes to the uninterrupted run's bits, a saved state refuses another embedding
optimizer naming the key, lipctr.load_run scores the run, grids over the optimizer run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import experiments.main as cli
import lipctr
from lipctr.checkpoint import StateCheckpoints
from lipctr.embedding_optim import SparseOptState
from lipctr.losses import LossConfig
from lipctr.models import build_model
from lipctr.train import TrainConfig, to_device
from lipctr.trainer import Trainer
from tests.tiny_data import tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
DATASET = tiny_dataset()
TINY = ["--config", "widedeep_ml100k", "--variant", "orig", "--seeds", "2020,2021", "--no-progress",
        "--set", "model_hparams.mlp_hidden_size=[8]", "--set", "train.batch_size=512", "--set", "train.patience=9",
        "--set", "eval.num_negatives=20", "--epochs", "3"]
# runs experiments.main on the tiny data; with argv[1] = N > 0 the process SIGKILLs itself right
# after the resumable state of epoch N is saved
KILLER = r'''
import os, signal, sys
import experiments.main as cli
from lipctr.checkpoint import StateCheckpoints
from tests.tiny_data import tiny_dataset
cli.data_source.load = lambda config: tiny_dataset()
kill_at = int(sys.argv[1])
save = StateCheckpoints.save
def save_then_die(self, epoch, tree, info=None):
    save(self, epoch, tree, info)
    if epoch == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
StateCheckpoints.save = save_then_die
sys.exit(cli.main(sys.argv[2:]))
'''


def flags(optimizer: str) -> list[str]:
    rate = {"sgd": ["--set", "train.embedding_learning_rate=0.5"],
            "rowwise_adagrad": ["--set", "train.embedding_learning_rate=0.05"]}.get(optimizer, [])
    return [*TINY, "--set", f"train.embedding_optimizer={optimizer!r}".replace("'", '"'), *rate]


def run_dir(runs: Path) -> Path:
    (found,) = (runs / "widedeep_ml100k").iterdir()
    return found


def killed_run(runs: Path, optimizer: str) -> Path:
    """A run of `optimizer` SIGKILLed after its epoch-2 state was saved (3 epochs asked)."""
    result = subprocess.run([sys.executable, "-c", KILLER, "2", *flags(optimizer), "--runs-dir", str(runs)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == -9, result.stderr[-2000:]
    return run_dir(runs)


def cli_main(monkeypatch, argv) -> int:
    monkeypatch.setattr(cli.data_source, "load", lambda config: DATASET)
    return cli.main(argv)


def assert_same_results(a: Path, b: Path) -> None:
    for name in ("label", "probability", "logits"):
        x, y = np.load(a / "orig" / "predictions.npz")[name], np.load(b / "orig" / "predictions.npz")[name]
        np.testing.assert_array_equal(x, y)
    members = [json.loads((d / "orig" / "final.json").read_text())["members"] for d in (a, b)]
    for x, y in zip(*members, strict=True):
        assert {k: v for k, v in x.items() if "second" not in k} == {k: v for k, v in y.items() if "second" not in k}


def check_kill_and_resume(monkeypatch, tmp_path, optimizer: str) -> Path:
    killed = killed_run(tmp_path / "killed", optimizer)
    assert not (killed / "orig" / "final.json").exists()
    assert cli_main(monkeypatch, ["--resume", str(killed), "--no-progress"]) == 0
    assert cli_main(monkeypatch, [*flags(optimizer), "--runs-dir", str(tmp_path / "whole")]) == 0
    assert_same_results(killed, run_dir(tmp_path / "whole"))
    return killed


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["lazy_adam", "rowwise_adagrad", "sgd", "adamw"])
def test_each_optimizer_resumes_after_sigkill_bit_identical(monkeypatch, tmp_path, optimizer):
    finished = check_kill_and_resume(monkeypatch, tmp_path, optimizer)
    logits = lipctr.load_run(finished, "orig").logits(DATASET.test.features)  # one chunk: rounding may differ
    np.testing.assert_allclose(logits, np.load(finished / "orig" / "predictions.npz")["logits"], rtol=1e-6, atol=1e-7)


def test_sparse_state_saved_and_restored_trains_on_to_the_same_bits(tmp_path):
    """The fast twin of the SIGKILL test: a lazy_adam ensemble's state through StateCheckpoints,
    then one more epoch from the restored and from the live state."""
    data = tiny_dataset(num_interactions=800)
    train, _valid = to_device(data.train), to_device(data.valid)
    model = build_model("widedeep", data.schema, 5, mlp_hidden_size=(8,))
    config = TrainConfig(learning_rate=0.01, batch_size=128, embedding_optimizer="lazy_adam")
    trainer = Trainer(model, LossConfig(lambda_r=0.5), config, len(data.train), len(data.valid))
    state, stopping = trainer.init(train["features"], [2020, 2021], [0.5, 0.5])
    state, _ = trainer.train_epoch(state, stopping, train)
    checkpoints = StateCheckpoints(tmp_path / "state")
    checkpoints.save(1, {"state": state.saved()})
    fresh, _ = trainer.init(train["features"], [7, 8], [0.5, 0.5])  # another seed: restore must overwrite
    restored = checkpoints.restore({"state": fresh.saved()})["state"].with_hparams(state.hparams)
    assert isinstance(restored.opt_state, SparseOptState) and int(restored.opt_state.count[0]) == 5
    live, _ = trainer.train_epoch(state, stopping, train)
    again, _ = trainer.train_epoch(restored, stopping, train)
    for a, b in zip(jax.tree.leaves(live.saved()), jax.tree.leaves(again.saved()), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_state_saved_with_one_embedding_optimizer_refuses_another(monkeypatch, capsys, tmp_path):
    argv = [*flags("rowwise_adagrad"), "--epochs", "1", "--seeds", "2020", "--runs-dir", str(tmp_path)]
    assert cli_main(monkeypatch, argv) == 0
    found = run_dir(tmp_path)
    (found / "orig" / "final.json").unlink()  # as if killed during the test evaluation
    path = found / "config.json"
    config = json.loads(path.read_text())
    config["train"]["embedding_optimizer"] = "sgd"
    path.write_text(json.dumps(config))
    capsys.readouterr()
    assert cli_main(monkeypatch, ["--resume", str(found), "--no-progress"]) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("error: ")]
    assert "Traceback" not in err
    assert "trained with train.embedding_optimizer 'rowwise_adagrad', but the config asks for 'sgd'" in line


@pytest.mark.slow
def test_grid_programs_over_the_embedding_optimizer_train_each(monkeypatch, tmp_path):
    argv = [*TINY, "--epochs", "1", "--seeds", "2020", "--grid-programs", "train.embedding_optimizer=adamw,sgd",
            "--runs-dir", str(tmp_path)]
    assert cli_main(monkeypatch, argv) == 0
    found = run_dir(tmp_path)
    outputs = sorted(p.name for p in found.iterdir() if (p / "final.json").exists())
    assert outputs == ["orig_p1", "orig_p2"]
    probs = [np.load(found / name / "predictions.npz")["probability"] for name in outputs]
    assert not np.array_equal(*probs)  # the two optimizers trained different models
