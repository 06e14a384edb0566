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
from tests.test_sharding import SEEDS, tiny_config
from tests.tiny_data import tiny_dataset

config, ds = tiny_config(), tiny_dataset()
candidates = ranking_candidates(ds, "test", 20, 0, "positive")
facts = {"process_count": jax.process_count(), "device_count": jax.device_count()}


def run(name, spec):
    return run_variant(config, ds, "smooth", out / name, candidates, progress=False, mesh=sharding.make_mesh(spec))


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

    def save_then_interrupt(self, epoch, tree, info=None):
        save(self, epoch, tree, info)
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
    state, stopping = trainer.init(train["features"], [2020, 2021, 2022], [0.5] * 3)
    leaf = jax.tree.leaves(state.params)[0]
    facts["padded_members"] = int(leaf.shape[0])
    facts["padding_stopped"] = sharding.to_host(stopping.stopped).tolist()
    facts["member_spec"] = list(leaf.sharding.spec)
    facts["shard_rows"] = sorted({s.data.shape[0] for s in leaf.addressable_shards})
    hlo = trainer.train_epoch.lower(state, stopping, train).compile().as_text()
    facts["epoch_all_reduce"] = "all-reduce" in hlo

    import numpy as np
    from lipctr.checkpoint import load_tree

    plain = build_trainer(config, ds, "smooth")  # no mesh: restore onto one device
    state, stopping = plain.init(to_device(ds.train)["features"], SEEDS, [0.5] * len(SEEDS))
    like = {"state": state.saved(), "es": stopping}  # what run_variant checkpoints (lipctr.train.SavedState)
    restored = {name: StateCheckpoints(out / name / "smooth" / "state") for name in ("seeds4", "unsharded")}
    facts["state_epochs"] = [c.latest_epoch() for c in restored.values()]
    a, b = (c.restore(like) for c in restored.values())
    facts["state_devices"] = sorted({x.sharding.num_devices for x in jax.tree.leaves(a)})
    facts["state_members"] = sorted({x.shape[0] for x in jax.tree.leaves(a)})
    facts["state_max_diff"] = max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                                  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    best_like = jax.tree.map(lambda x: x[0], {"params": stopping.best_params, **stopping.best_model_state})
    diffs, devices = [], set()
    for seed in SEEDS:
        x, y = (load_tree(out / name / "smooth" / "checkpoints" / f"seed{seed}", best_like)
                for name in ("seeds4", "unsharded"))
        devices |= {u.sharding.num_devices for u in jax.tree.leaves(x)}
        diffs += [float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
                  for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y))]
    facts["best_devices"], facts["best_max_diff"] = sorted(devices), max(diffs)
else:
    from experiments.evaluable import test_candidates
    from experiments.run_config import run_config
    from experiments.rundir import open_run_dir

    facts["broadcast"] = sharding.broadcast_text(f"from process {jax.process_index()}")
    mesh = sharding.make_mesh("seeds=2,data=2")
    run_dir, _ = open_run_dir(config, "widedeep_ml100k", str(out / "runs"), None)
    run_config(config, ds, run_dir, test_candidates(config, ds), False, mesh)
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
    """CPU only; LLVM optimisation off (compiles 2-4x faster; the GSPMD partitioning under test
    happens before it, and every run compared is compiled the same way)."""
    flags = ["--xla_backend_optimization_level=0"]
    if devices:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    return dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags))


def _start(tmp: Path, args: list[str], devices: int | None, log: str) -> subprocess.Popen:
    script = tmp / "worker.py"
    script.write_text(WORKER)
    with open(tmp / log, "w") as stream:
        return subprocess.Popen([sys.executable, str(script), *args], cwd=ROOT, env=_worker_env(devices),
                                stdout=stream, stderr=subprocess.STDOUT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workers(tmp_path_factory) -> dict[str, Path]:
    """Runs WORKER "layouts" (4 devices) and the two "multihost" processes side by side."""
    layouts, multihost = tmp_path_factory.mktemp("layouts"), tmp_path_factory.mktemp("multihost")
    port = str(_free_port())
    jobs = [(layouts, ["layouts", str(layouts)], 4, "layouts.log")]
    jobs += [(multihost, ["multihost", str(multihost), port, str(i)], None, f"process{i}.log") for i in (0, 1)]
    processes = [_start(*job) for job in jobs]
    try:
        for p in processes:
            p.wait(timeout=TIMEOUT)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (tmp, _, _, log) in zip(processes, jobs):
        assert p.returncode == 0, f"worker {log} exited {p.returncode}:\n" + (tmp / log).read_text()[-4000:]
    return {"layouts": layouts, "multihost": multihost}


@pytest.fixture(scope="module")
def layouts(workers) -> Path:
    return workers["layouts"]


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
    """A seeds=2,data=2 run cut at epoch 2 resumes unsharded; a seeds=4 run's resumable state and
    best params restore onto one device, equal to the unsharded run's."""
    _assert_same_members(layouts / "unsharded", layouts / "seeds2data2_then_unsharded")
    facts = json.loads((layouts / "facts0.json").read_text())
    assert facts["state_epochs"] == [3, 3]
    assert facts["state_devices"] == facts["best_devices"] == [1]
    assert facts["state_members"] == [len(SEEDS)]  # the padding members were never saved
    assert facts["state_max_diff"] < 1e-5 and facts["best_max_diff"] < 1e-5


def test_two_process_run_on_localhost_writes_one_set_of_outputs(workers):
    tmp_path = workers["multihost"]
    facts = [json.loads((tmp_path / f"facts{i}.json").read_text()) for i in (0, 1)]
    assert [(f["process_count"], f["device_count"]) for f in facts] == [(2, 4), (2, 4)]
    assert [f["broadcast"] for f in facts] == ["from process 0", "from process 0"]
    runs = list((tmp_path / "runs").rglob("config.json"))
    assert len(runs) == 1, runs  # one run directory, created by process 0
    run = runs[0].parent
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "smooth"]
    assert sorted(p.name for p in (run / "smooth").iterdir()) == [
        "checkpoints", "final.json", "metrics.csv", "predictions.npz", "run_schema.json", "run_tables.npz", "state"]
    assert not [p for p in run.rglob("*") if p.name.startswith(".") and p.suffix == ".tmp"]
    _assert_same_members(workers["layouts"] / "unsharded", run)
