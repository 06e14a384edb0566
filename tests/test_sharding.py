"""Sharded training (lipctr.sharding): same members' results on any mesh, checkpoints that move
between meshes, mesh errors, and a two-process multi-host run on localhost.

Multi-device runs happen in subprocesses with 4 forced CPU devices (WORKER below), so this
pytest process keeps its single device.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lipctr import sharding

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [2020, 2021, 2022, 2023, 2024]
TIMEOUT = 900  # seconds per subprocess; a healthy run takes a small fraction of it

WORKER = r'''
import json, shutil, sys
from pathlib import Path
import jax
mode, out = sys.argv[1], Path(sys.argv[2])
if mode == "multihost":
    jax.config.update("jax_num_cpu_devices", 2)
    port, pid = sys.argv[3], int(sys.argv[4])
    from lipctr import sharding
    sharding.initialize_distributed(f"127.0.0.1:{port}", 2, pid, initialization_timeout=120)
else:  # identical programs (e.g. the unsharded run and the unsharded resume) compile once
    jax.config.update("jax_compilation_cache_dir", str(out / "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

from lipctr import sharding
from lipctr.checkpoint import StateCheckpoints
from experiments.run import run_variant
from lipctr.ranking import ranking_candidates
from tests.test_sharding import tiny_config
from tests.tiny_data import tiny_dataset

config, ds = tiny_config(), tiny_dataset()
candidates = ranking_candidates(ds, "test", 20, 0, "positive")
facts = {"process_count": jax.process_count(), "device_count": jax.device_count()}


def run(name, spec, **kw):
    return run_variant(config, ds, "smooth", out / name, candidates, progress=False, mesh=sharding.make_mesh(spec), **kw)


class Interrupt(Exception):
    pass


if mode == "layouts":
    for spec in ("seeds=3", "seeds=4,data=2"):
        try:
            sharding.make_mesh(spec)
        except sharding.MeshError as error:
            facts[spec] = str(error)
    run("unsharded", "")
    run("seeds4", "seeds=4")
    save = StateCheckpoints.save

    def save_then_interrupt(self, epoch, tree):
        save(self, epoch, tree)
        if epoch == 2:
            raise Interrupt

    StateCheckpoints.save = save_then_interrupt
    try:
        run("seeds2data2", "seeds=2,data=2")
    except Interrupt:
        pass
    StateCheckpoints.save = save
    shutil.copytree(out / "seeds2data2", out / "seeds2data2_then_unsharded")
    run("seeds2data2", "seeds=2,data=2")
    run("seeds2data2_then_unsharded", "")

    from experiments.run import build_trainer
    from lipctr.train import to_device
    mesh = sharding.make_mesh("seeds=2,data=2")
    trainer = build_trainer(config, ds, "smooth", mesh)
    train = to_device(ds.train, mesh)
    state, es = trainer.init(train["features"], [2020, 2021, 2022], [0.5] * 3)
    leaf = jax.tree.leaves(state.params)[0]
    facts["padded_members"] = int(leaf.shape[0])
    facts["padding_stopped"] = sharding.to_host(es.stopped).tolist()
    facts["member_spec"] = list(leaf.sharding.spec)
    facts["shard_rows"] = sorted({s.data.shape[0] for s in leaf.addressable_shards})
    hlo = trainer.train_epoch.lower(state, es, train).compile().as_text()
    facts["epoch_all_reduce"] = "all-reduce" in hlo
else:
    import argparse
    from experiments.main import run_config

    facts["broadcast"] = sharding.broadcast_text(f"from process {jax.process_index()}")
    mesh = sharding.make_mesh("seeds=2,data=2")
    args = argparse.Namespace(resume=None, runs_dir=str(out / "runs"), no_progress=True)
    run_config(config, ds, args, (), mesh)
(out / f"facts{jax.process_index()}.json").write_text(json.dumps(facts))
'''


def tiny_config(epochs: int = 3) -> dict:
    """A tiny smooth WideDeep run of five seeds (used by WORKER too)."""
    from experiments import configs

    config = configs.merge(configs.named_config("widedeep_ml100k"), {
        "model_hparams": {"mlp_hidden_size": [16, 16]},
        "train": {"batch_size": 512, "max_epochs": epochs, "patience": 10},
        "seeds": SEEDS, "variants": ["smooth"], "loss": {"lambda_r": 0.5},
        "eval": {"num_negatives": 20},
    })
    return configs.validate(config)


def _worker_env(devices: int | None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _start(tmp: Path, args: list[str], devices: int | None, log: str) -> subprocess.Popen:
    script = tmp / "worker.py"
    script.write_text(WORKER)
    with open(tmp / log, "w") as stream:
        return subprocess.Popen([sys.executable, str(script), *args], cwd=ROOT, env=_worker_env(devices),
                                stdout=stream, stderr=subprocess.STDOUT)


def _finish(processes: list[subprocess.Popen], tmp: Path, logs: list[str]) -> None:
    try:
        for p in processes:
            p.wait(timeout=TIMEOUT)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(processes, logs):
        assert p.returncode == 0, f"worker {log} exited {p.returncode}:\n" + (tmp / log).read_text()[-4000:]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("layouts")
    _finish([_start(tmp, ["layouts", str(tmp)], 4, "layouts.log")], tmp, ["layouts.log"])
    return tmp


def _final(run: Path) -> dict:
    return json.loads((run / "smooth" / "final.json").read_text())


def _metrics(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "smooth" / "metrics.csv").drop(columns=["train_seconds", "eval_seconds"])


def _assert_same_members(a: Path, b: Path, atol: float = 1e-5) -> None:
    fa, fb = _final(a), _final(b)
    assert [m["member"] for m in fb["members"]] == [f"seed{s}" for s in SEEDS]
    for ma, mb in zip(fa["members"], fb["members"]):
        for key in ("auc", "logloss", "ndcg@10", "ndcg@20", "recall@10", "recall@20", "best_valid_auc"):
            assert ma[key] == pytest.approx(mb[key], abs=atol), (b.name, ma["member"], key)
        assert ma["best_epoch"] == mb["best_epoch"]
    pd.testing.assert_frame_equal(_metrics(a), _metrics(b), check_exact=False, atol=atol, rtol=0)
    pa, pb = np.load(a / "smooth" / "predictions.npz"), np.load(b / "smooth" / "predictions.npz")
    assert pb["probability"].shape == pa["probability"].shape == (len(SEEDS), len(pa["label"]))
    np.testing.assert_allclose(pb["logits"], pa["logits"], atol=atol)
    assert sorted(p.name for p in (b / "smooth" / "checkpoints").iterdir()) == [f"seed{s}" for s in SEEDS]


def test_parse_mesh_and_its_errors():
    assert sharding.parse_mesh("seeds=4") == {"seeds": 4, "data": 1}
    assert sharding.parse_mesh(" data=2 , seeds=3") == {"seeds": 3, "data": 2}
    for spec, message in [
        ("seeds", "cannot read 'seeds'; expected AXIS=SIZE"),
        ("seeds=two", "cannot read 'seeds=two'"),
        ("model=2", "unknown axis 'model'; known axes: seeds, data"),
        ("seeds=2,seeds=2", "axis 'seeds' given twice"),
        ("seeds=0", "axis 'seeds' has size 0"),
    ]:
        with pytest.raises(sharding.MeshError, match=message.replace("(", r"\(")):
            sharding.parse_mesh(spec)
    assert sharding.make_mesh("") is None
    assert sharding.mesh_spec(sharding.make_mesh("seeds=1")) == "seeds=1,data=1"
    with pytest.raises(sharding.MeshError, match=r"asks for 2 devices \(seeds 2 x data 1\) but only 1 exist"):
        sharding.make_mesh("seeds=2")


def test_member_padding_is_a_multiple_of_the_seeds_axis():
    for seeds_axis in (1, 2, 3, 4):
        mesh = types.SimpleNamespace(shape={"seeds": seeds_axis, "data": 1})
        for m in range(1, 10):
            padded = sharding.pad_members(list(range(m)), mesh)
            assert len(padded) % seeds_axis == 0 and 0 <= len(padded) - m < seeds_axis
            assert padded[:m] == list(range(m)) and set(padded[m:]) <= {m - 1}
    with pytest.raises(sharding.MeshError, match="at least one member"):
        sharding.pad_members([], mesh)


def test_cli_mesh_errors_exit_with_the_sizes(capsys):
    from experiments.main import main

    assert main(["--mesh", "seeds=2,data=2", "--epochs", "1"]) == 2
    assert "mesh 'seeds=2,data=2' asks for 4 devices (seeds 2 x data 2) but only 1 exist" in capsys.readouterr().err
    assert main(["--mesh", "gpus=2"]) == 2
    assert "key 'mesh': mesh spec 'gpus=2': unknown axis 'gpus'" in capsys.readouterr().err


def test_mesh_errors_with_four_devices(layouts):
    facts = json.loads((layouts / "facts0.json").read_text())
    assert facts["device_count"] == 4
    assert "mesh 'seeds=3' uses 3 devices (seeds 3 x data 1) but 4 exist" in facts["seeds=3"]
    assert "must multiply to 4" in facts["seeds=3"]
    assert "mesh 'seeds=4,data=2' asks for 8 devices (seeds 4 x data 2) but only 4 exist" in facts["seeds=4,data=2"]


def test_sharded_runs_equal_the_unsharded_run(layouts):
    _assert_same_members(layouts / "unsharded", layouts / "seeds4")
    _assert_same_members(layouts / "unsharded", layouts / "seeds2data2")  # also resumed at epoch 2


def test_members_are_padded_sharded_and_gradients_reduced_over_data(layouts):
    facts = json.loads((layouts / "facts0.json").read_text())
    assert facts["padded_members"] == 4  # 3 members on a seeds axis of 2
    assert facts["padding_stopped"] == [False, False, False, True]
    assert facts["member_spec"] == ["seeds"]
    assert facts["shard_rows"] == [2]  # each device holds 4 / 2 members
    assert facts["epoch_all_reduce"]  # the batch is split over "data": the compiler sums gradients


def test_sharded_checkpoints_restore_into_an_unsharded_run(layouts):
    """Resume unsharded from a seeds=2,data=2 checkpoint (epoch 2); load best params on 1 device."""
    import jax

    from experiments.run import build_trainer
    from lipctr.checkpoint import StateCheckpoints, load_tree
    from lipctr.train import to_device
    from tests.tiny_data import tiny_dataset

    _assert_same_members(layouts / "unsharded", layouts / "seeds2data2_then_unsharded")
    ds = tiny_dataset()
    trainer = build_trainer(tiny_config(), ds, "smooth")
    state, es = trainer.init(to_device(ds.train)["features"], SEEDS, [0.5] * len(SEEDS))
    like = {"state": state, "es": es}
    sharded = StateCheckpoints(layouts / "seeds4" / "smooth" / "state")
    plain = StateCheckpoints(layouts / "unsharded" / "smooth" / "state")
    assert sharded.latest_epoch() == plain.latest_epoch() == 3
    a, b = sharded.restore(like), plain.restore(like)
    assert jax.tree.leaves(a)[0].shape[0] == len(SEEDS)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), atol=1e-5)
    best_like = jax.tree.map(lambda x: x[0], {"params": es.best_params, **es.best_model_state})
    for seed in SEEDS:
        x = load_tree(layouts / "seeds4" / "smooth" / "checkpoints" / f"seed{seed}", best_like)
        y = load_tree(layouts / "unsharded" / "smooth" / "checkpoints" / f"seed{seed}", best_like)
        for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y)):
            assert u.sharding.num_devices == 1
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_run_on_localhost_writes_one_set_of_outputs(layouts, tmp_path):
    port = str(_free_port())
    logs = ["process0.log", "process1.log"]
    workers = [_start(tmp_path, ["multihost", str(tmp_path), port, str(i)], None, logs[i]) for i in (0, 1)]
    _finish(workers, tmp_path, logs)
    facts = [json.loads((tmp_path / f"facts{i}.json").read_text()) for i in (0, 1)]
    assert [(f["process_count"], f["device_count"]) for f in facts] == [(2, 4), (2, 4)]
    assert [f["broadcast"] for f in facts] == ["from process 0", "from process 0"]
    runs = list((tmp_path / "runs").rglob("config.json"))
    assert len(runs) == 1, runs  # one run directory, created by process 0
    run = runs[0].parent
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "smooth"]
    assert sorted(p.name for p in (run / "smooth").iterdir()) == [
        "checkpoints", "final.json", "metrics.csv", "predictions.npz", "state"]
    assert not [p for p in run.rglob("*") if p.name.startswith(".") and p.suffix == ".tmp"]
    _assert_same_members(layouts / "unsharded", run)
