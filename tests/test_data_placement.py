"""data.placement "sharded": each device of the mesh's data axis holds 1/D of the training split
(4 forced CPU devices), every row is drawn once per epoch, training reaches the replicated AUC
within seed noise, and two localhost processes hold disjoint halves.

Multi-device work runs in subprocesses (WORKER), so this pytest process keeps its one device.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments.configs import ConfigError, named_config, validate
from lipctr import sharding

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [2020, 2021, 2022, 2023, 2024]
WORKER = r'''
import json, sys
from pathlib import Path
import jax
import numpy as np
mode, out = sys.argv[1], Path(sys.argv[2])
if mode == "multihost":
    jax.config.update("jax_num_cpu_devices", 2)
    from lipctr import sharding
    sharding.initialize_distributed(f"127.0.0.1:{sys.argv[3]}", 2, int(sys.argv[4]), initialization_timeout=120)
from lipctr import sharding
from lipctr.train import to_device
from tests.tiny_data import tiny_dataset

ds = tiny_dataset(num_interactions=3003)  # 2402 training rows: not a multiple of 4 (padding rows)
facts = {"num_train": len(ds.train)}


def shard_facts(spec):
    """Each addressable shard of the label array: its device, global rows and whether they are the split's."""
    mesh = sharding.make_mesh(spec)
    train = to_device(ds.train, mesh, "sharded")
    shards = []
    arrays = (train["label"], train["features"]["genre"], train["present"])
    for shard, genre, present in zip(*(a.addressable_shards for a in arrays)):
        rows = np.arange(*shard.index[0].indices(train["label"].shape[0]))
        real = rows < len(ds.train)
        same = bool(np.array_equal(np.asarray(shard.data)[real], ds.train.label[rows[real]])
                    and np.array_equal(np.asarray(genre.data)[real], ds.train.features["genre"][rows[real]]))
        shards.append({"device": shard.device.id, "rows": [int(rows[0]), int(rows[-1]) + 1], "equal": same,
                       "present": np.asarray(present.data).tolist() == real.astype(np.float32).tolist()})
    return {"global_rows": int(train["label"].shape[0]), "shards": shards,
            "process_rows": sharding.process_rows(len(ds.train), mesh).tolist()}


if mode == "shapes":
    facts["data4"], facts["seeds2data2"] = shard_facts("data=4"), shard_facts("seeds=2,data=2")
elif mode == "train":
    from experiments.configs import merge, validate
    from experiments.run import run_variant
    from lipctr.ranking import ranking_candidates
    from tests.test_sharding import tiny_config
    candidates = ranking_candidates(ds, "test", 20, 0, "positive")
    for placement in ("replicated", "sharded"):
        config = validate(merge(tiny_config(epochs=6), {"data": {"placement": placement}}))
        final = run_variant(config, ds, "smooth", out / placement, candidates, progress=False,
                            mesh=sharding.make_mesh("data=4"))
        facts[placement] = [m["auc"] for m in final["members"]]
else:
    facts["process"] = jax.process_index()
    facts.update(shard_facts("data=4"))
    if sys.argv[5] == "train":  # two epochs of a lazy_adam ensemble on the sharded split
        from lipctr.losses import LossConfig
        from lipctr.models import build_model
        from lipctr.train import TrainConfig
        from lipctr.trainer import Trainer, fit
        mesh = sharding.make_mesh("data=4")
        config = TrainConfig(learning_rate=5e-3, batch_size=256, max_epochs=2, embedding_optimizer="lazy_adam")
        model = build_model("widedeep", ds.schema, 5, mlp_hidden_size=(16,))
        trainer = Trainer(model, LossConfig(lambda_r=0.5), config, len(ds.train), len(ds.valid), mesh, "sharded")
        train, valid = to_device(ds.train, mesh, "sharded"), to_device(ds.valid, mesh)
        state, stopping = trainer.init(train["features"], [2020, 2021], [0.5, 0.5])
        records = []
        fit(trainer, state, stopping, train, valid, lambda s, e, r: records.append(r))
        facts["valid_auc"] = [r.valid_auc.tolist() for r in records]
(out / f"facts{jax.process_index()}.json").write_text(json.dumps(facts))
'''


def _run_workers(tmp: Path, jobs: list[tuple[list[str], int | None]]) -> list[dict]:
    (tmp / "worker.py").write_text(WORKER)
    processes = []
    for i, (args, devices) in enumerate(jobs):
        flags = "--xla_backend_optimization_level=0" + (f" --xla_force_host_platform_device_count={devices}"
                                                        if devices else "")
        env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
        with open(tmp / f"log{i}", "w") as stream:
            processes.append(subprocess.Popen([sys.executable, str(tmp / "worker.py"), *args], cwd=ROOT, env=env,
                                              stdout=stream, stderr=subprocess.STDOUT))
    try:
        for p in processes:
            p.wait(timeout=900)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, p in enumerate(processes):
        assert p.returncode == 0, (tmp / f"log{i}").read_text()[-4000:]
    return [json.loads(f.read_text()) for f in sorted(tmp.glob("facts*.json"))]


def test_four_devices_hold_a_quarter_of_the_split_each(tmp_path):
    (facts,) = _run_workers(tmp_path, [(["shapes", str(tmp_path)], 4)])
    n = facts["num_train"]
    assert n == 2402
    data4 = facts["data4"]
    assert data4["global_rows"] == 4 * 601  # ceil(2402 / 4) rows per device, 2 padding rows
    assert sorted(s["rows"][1] - s["rows"][0] for s in data4["shards"]) == [601] * 4
    assert sorted(tuple(s["rows"]) for s in data4["shards"]) == [(0, 601), (601, 1202), (1202, 1803), (1803, 2404)]
    assert all(s["equal"] and s["present"] for s in data4["shards"])
    assert data4["process_rows"] == list(range(n))
    both = facts["seeds2data2"]  # data=2: half of the split per device, the same half on both seeds
    assert sorted(tuple(s["rows"]) for s in both["shards"]) == [(0, 1201), (0, 1201), (1201, 2402), (1201, 2402)]


def multihost(tmp_path, train: bool) -> list[dict]:
    port, what = str(_free_port()), "train" if train else "load"
    return _run_workers(tmp_path, [(["multihost", str(tmp_path), port, str(i), what], None) for i in (0, 1)])


def test_two_processes_hold_disjoint_halves(tmp_path):
    facts = multihost(tmp_path, train=False)
    halves = [set(f["process_rows"]) for f in facts]
    assert [f["process"] for f in facts] == [0, 1]
    assert halves[0].isdisjoint(halves[1]) and halves[0] | halves[1] == set(range(2402))
    assert len(halves[0]) == 1202 and len(halves[1]) == 1200  # 2 x 601 rows each, 2 of process 1's padding
    for f, half in zip(facts, halves):  # each process's devices received exactly its half
        rows = set()
        for s in f["shards"]:
            rows |= set(range(s["rows"][0], min(s["rows"][1], 2402)))
            assert s["equal"] and s["present"]
        assert rows == half and len(f["shards"]) == 2


@pytest.mark.slow
def test_two_processes_train_on_their_halves_to_the_same_numbers(tmp_path):
    facts = multihost(tmp_path, train=True)
    aucs = [np.array(f["valid_auc"]) for f in facts]
    assert aucs[0].shape == (2, 2) and np.all(np.isfinite(aucs[0])) and aucs[0][-1].mean() > 0.5
    np.testing.assert_array_equal(aucs[0], aucs[1])  # one global program: every process reads the same


@pytest.mark.slow
def test_sharded_training_reaches_the_replicated_auc_within_seed_noise(tmp_path):
    (facts,) = _run_workers(tmp_path, [(["train", str(tmp_path)], 4)])
    replicated, sharded = np.array(facts["replicated"]), np.array(facts["sharded"])
    assert len(sharded) == len(SEEDS) and sharded.mean() > 0.55
    noise = np.sqrt(replicated.var(ddof=1) / len(SEEDS) + sharded.var(ddof=1) / len(SEEDS))
    assert abs(sharded.mean() - replicated.mean()) < 3 * noise, (replicated, sharded)


def test_shard_batches_draw_every_row_of_every_shard_once_per_epoch():
    index, weights = sharding.shard_batches(jax.random.key(4), 601, 256, 4)
    index, weights = np.asarray(index), np.asarray(weights)
    assert index.shape == weights.shape == (10, 4, 64)  # ceil(601 / 64) batches of 64 rows per shard
    for shard in range(4):
        counts = np.bincount(index[:, shard].ravel(), weights=weights[:, shard].ravel(), minlength=601)
        np.testing.assert_array_equal(counts, np.ones(601))
    assert not np.array_equal(index[:, 0], index[:, 1])  # each shard its own permutation


def test_placement_keys_are_checked_naming_the_key():
    config = named_config("widedeep_ml100k")
    config["data"] = {"placement": "spread"}
    with pytest.raises(ConfigError, match="key 'data.placement' must be one of replicated, sharded, got 'spread'"):
        validate(config, source="x")
    config["data"], config["mesh"], config["train"]["batch_size"] = {"placement": "sharded"}, "data=3", 4096
    with pytest.raises(ConfigError, match=r"x: key 'train.batch_size' \(4096\) must be a multiple of the mesh's "
                                          r"data axis \(3\) under data.placement 'sharded'"):
        validate(config, source="x")
    config["mesh"] = "data=4"
    assert validate(config)["data"] == {"placement": "sharded"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
