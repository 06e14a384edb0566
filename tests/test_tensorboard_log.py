"""TensorBoard event files (log.tensorboard), read back with the tensorboard package's own readers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# the tensorboard package's own readers (the `test` extra): independent of experiments.tensorboard_log
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from experiments import configs, tensorboard_log
from experiments.cli import parse_args, resolve_config
from experiments.configs import ConfigError, named_config, validate
from experiments.run import run_variant
from lipctr.ranking import ranking_candidates
from tests.tiny_data import tiny_dataset


def _raw_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar event of every event file in folder, in file order (no purging, no sampling)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("*tfevents*")):
        for event in event_file_loader.LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def _check_equals_csv(out: Path, labels: list[str]) -> None:
    frame = pd.read_csv(out / "metrics.csv")
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == sorted(labels)
    for label in labels:
        rows = frame[frame["member"] == label].sort_values("epoch")
        raw = _raw_scalars(out / "tensorboard" / label)
        shown = EventAccumulator(str(out / "tensorboard" / label), size_guidance={"scalars": 0})
        shown.Reload()
        assert sorted(raw) == sorted(tensorboard_log.SCALARS) == sorted(shown.Tags()["scalars"])
        for tag in tensorboard_log.SCALARS:
            expected = rows[tag].astype(float).to_numpy().astype(np.float32)  # simple_value is a float32
            for events in (raw[tag], [(s.step, s.value) for s in shown.Scalars(tag)]):
                assert [step for step, _ in events] == rows["epoch"].tolist(), (label, tag)  # each epoch once
                np.testing.assert_array_equal(np.float32([v for _, v in events]), expected, err_msg=f"{label} {tag}")


def _hparams(folder: Path) -> dict:
    shown = EventAccumulator(str(folder))
    shown.Reload()
    content = shown.PluginTagToContent("hparams")[tensorboard_log.HPARAMS_TAG]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}


def _check_hparams(out: Path, labels: list[str], config: dict, lambda_r: float) -> None:
    for label in labels:
        hparams = _hparams(out / "tensorboard" / label)
        assert hparams["member"] == label and hparams["variant"] == out.name
        assert hparams["seed"] == int(label[4:8]) and hparams["lambda_r"] == pytest.approx(lambda_r)
        assert hparams["train.learning_rate"] == config["train"]["learning_rate"]
        assert hparams["model"] == "widedeep" and hparams["log.tensorboard"] is True
        assert hparams["model_hparams.mlp_hidden_size"] == "[8]"


def _config(**update) -> dict:
    return validate(configs.merge(named_config("widedeep_ml100k"), {
        "model_hparams": {"mlp_hidden_size": [8]}, "seeds": [2020, 2021], "eval": {"num_negatives": 20},
        "train": {"batch_size": 512, "max_epochs": 2, "patience": 10}, "log": {"tensorboard": True}, **update}))


def test_event_files_equal_metrics_csv_with_the_hparams(tmp_path):
    ds = tiny_dataset()
    config = _config(checkpoint_every=2)  # orig, one state saved: the quicker run
    run_variant(config, ds, "orig", tmp_path, ranking_candidates(ds, "test", 20, 0, "positive"), progress=False)
    labels = ["seed2020", "seed2021"]
    _check_equals_csv(tmp_path / "orig", labels)
    _check_hparams(tmp_path / "orig", labels, config, 0.0)  # orig's members: lambda_r 0


class Interrupt(Exception):
    pass


@pytest.mark.slow  # two runs (about 30 s on 2 idle cores)
def test_after_a_resume_the_event_files_hold_each_epoch_of_metrics_csv_once(tmp_path, monkeypatch):
    ds = tiny_dataset()
    candidates = ranking_candidates(ds, "test", 20, 0, "positive")
    config = _config(train={"batch_size": 512, "max_epochs": 4, "patience": 10}, lambda_sweep=[0.3],
                     checkpoint_every=2)
    labels = ["seed2020_lambda0.3", "seed2021_lambda0.3"]
    write = tensorboard_log.TensorBoardLog.write

    def write_then_interrupt(self, rows):  # epoch 3 reaches metrics.csv and the event files; state 2 is saved
        write(self, rows)
        if rows[0]["epoch"] == 3:
            raise Interrupt

    monkeypatch.setattr(tensorboard_log.TensorBoardLog, "write", write_then_interrupt)
    with pytest.raises(Interrupt):
        run_variant(config, ds, "smooth", tmp_path, candidates, progress=False)
    out = tmp_path / "smooth"
    _check_equals_csv(out, labels)
    assert [s for s, _ in _raw_scalars(out / "tensorboard" / labels[0])["valid_auc"]] == [1, 2, 3]
    monkeypatch.setattr(tensorboard_log.TensorBoardLog, "write", write)

    run_variant(config, ds, "smooth", tmp_path, candidates, progress=False)  # resumes from epoch 2
    assert pd.read_csv(out / "metrics.csv")["epoch"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    _check_equals_csv(out, labels)  # epoch 3 retrained once, its old values gone
    for label in labels:
        assert len(list((out / "tensorboard" / label).glob("*tfevents*"))) == 1
    _check_hparams(out, labels, config, 0.3)


def test_start_replaces_the_event_files_with_the_resumed_history(tmp_path):
    """What run_variant does on resume: the rows of the saved state rewritten, later epochs appended."""
    def row(epoch, value):
        return {"epoch": epoch, "member": "m", **{tag: value for tag in tensorboard_log.SCALARS}}

    first = tensorboard_log.TensorBoardLog(tmp_path, {"m": {"a": 1}})
    first.start([])
    first.write([row(1, 0.25)])
    first.write([row(2, 0.5)])
    first.write([row(3, 0.75)])  # after the saved state (epoch 2): retrained on resume
    second = tensorboard_log.TensorBoardLog(tmp_path, {"m": {"a": 1}})
    second.start([row(1, 0.25), row(2, 0.5)])
    second.write([row(3, 1.0)])
    second.write([row(4, 1.25)])
    assert _raw_scalars(tmp_path / "m")["valid_auc"] == [(1, 0.25), (2, 0.5), (3, 1.0), (4, 1.25)]
    assert [p.name for p in (tmp_path / "m").iterdir()] == [second.files["m"].name]


def test_tensorboard_is_off_by_default_and_set_on_the_command_line(tmp_path):
    config = named_config("widedeep_ml100k")
    assert config["log"] == {"tensorboard": False}
    assert tensorboard_log.open_log(config, tmp_path, "orig", [], [], [], []) is None
    assert not list(tmp_path.iterdir())
    args = parse_args(["--set", "log.tensorboard=true"])
    assert resolve_config(args)["log"]["tensorboard"] is True
    with pytest.raises(ConfigError, match=r"key 'log.tensorboard' must be bool, got str"):
        resolve_config(parse_args(["--set", "log.tensorboard=yes"]))
    with pytest.raises(ConfigError, match=r"unknown key 'log.tensorbord'"):
        resolve_config(parse_args(["--set", "log.tensorbord=true"]))


def test_a_damaged_record_is_refused_by_tensorboards_reader(tmp_path):
    """The CRC-32C framing is checked by the independent reader (so a wrong checksum would fail)."""
    assert tensorboard_log.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    log = tensorboard_log.TensorBoardLog(tmp_path, {"m": {"a": 1}})
    row = {"epoch": 1, "member": "m", **{tag: 0.5 for tag in tensorboard_log.SCALARS}}
    log.start([row])
    path = log.files["m"]
    assert _raw_scalars(tmp_path / "m")["valid_auc"] == [(1, 0.5)]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last record's data checksum
    path.write_bytes(bytes(data))
    assert "valid_auc" not in _raw_scalars(tmp_path / "m")


WORKER = r"""
import json, os, sys
from pathlib import Path
import jax
jax.config.update("jax_num_cpu_devices", 2)
from lipctr import sharding
sharding.initialize_distributed(f"127.0.0.1:{sys.argv[2]}", 2, int(sys.argv[3]), initialization_timeout=120)
from experiments.run import run_variant
from lipctr.ranking import ranking_candidates
from tests.test_tensorboard_log import _config
from tests.tiny_data import tiny_dataset
out = Path(sys.argv[1])
ds = tiny_dataset()
run_variant(_config(checkpoint_every=2), ds, "orig", out / "run", ranking_candidates(ds, "test", 20, 0, "positive"),
            progress=False, mesh=sharding.make_mesh("data=4"))
(out / f"pid{jax.process_index()}.json").write_text(json.dumps(os.getpid()))
"""


@pytest.mark.slow  # two localhost processes, one run over both (about a minute)
def test_only_process_0_of_a_multi_host_run_writes_the_event_files(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
    processes = []
    for i in (0, 1):
        with open(tmp_path / f"log{i}", "w") as stream:
            command = [sys.executable, str(tmp_path / "worker.py"), str(tmp_path), port, str(i)]
            processes.append(subprocess.Popen(command, cwd=root, env=env, stdout=stream, stderr=subprocess.STDOUT))
    try:
        for process in processes:
            process.wait(timeout=600)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for i, process in enumerate(processes):
        assert process.returncode == 0, (tmp_path / f"log{i}").read_text()[-4000:]
    pids = [json.loads((tmp_path / f"pid{i}.json").read_text()) for i in (0, 1)]
    out = tmp_path / "run" / "orig"
    files = sorted((out / "tensorboard").glob("*/*tfevents*"))
    assert [f.parent.name for f in files] == ["seed2020", "seed2021"]
    assert {f.name.split(".")[-2] for f in files} == {str(pids[0])}  # events.out.tfevents.<time>.<host>.<pid>.<ns>
    _check_equals_csv(out, ["seed2020", "seed2021"])
