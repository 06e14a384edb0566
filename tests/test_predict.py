"""Using a finished run (lipctr.load_run, lipctr.load_exported, python -m lipctr.predict):
predictions.npz reproduced bit for bit from raw ids, recommend against brute force, the export
against the in-process model, unknown ids and bad inputs, runs without their schema."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

import lipctr
from experiments import configs
from experiments.run import run_variant
from lipctr import predict as cli
from lipctr.data.cache import load_cache, save_cache
from lipctr.data.preprocess import preprocess
from lipctr.data.synthetic import synthetic_config, synthetic_raw
from lipctr.encoding import InputError, UnknownIdWarning
from lipctr.losses import click_probability
from lipctr.ranking import ranking_candidates
from lipctr.run_files import RunFileError

ROOT = Path(__file__).resolve().parents[1]
FIVE_SEEDS = [2020, 2021, 2022, 2023, 2024]


def string_id_dataset():
    """The synthetic tiny preset through the real preprocessing, with raw ids "u<n>" / "i<n>"."""
    raw = synthetic_raw("tiny", 0)
    for table, column, prefix in ((raw.inter, "user_id", "u"), (raw.inter, "item_id", "i"),
                                  (raw.user, "user_id", "u"), (raw.item, "item_id", "i")):
        table.frame[column] = prefix + table.frame[column].astype(str)
    return preprocess(raw, synthetic_config("tiny", 0))


def small_config(seeds) -> dict:
    config = configs.merge(configs.named_config("widedeep_ml100k"), {
        "model_hparams": {"mlp_hidden_size": [8]},
        "train": {"batch_size": 1024, "max_epochs": 1, "eval_batch_size": 256},
        "seeds": list(seeds), "eval": {"num_negatives": 10},
    })
    return configs.validate(config)


@pytest.fixture(scope="module")
def data():
    dataset, rows = string_id_dataset()
    return dataset, rows


def train(dataset, run_dir: Path, seeds) -> Path:
    """A run of `seeds`, orig and smooth, one epoch (eval chunks of 256 < the test split's 800)."""
    candidates = ranking_candidates(dataset, "test", 10, 0, "positive")
    for variant in ("orig", "smooth"):
        run_variant(small_config(seeds), dataset, variant, run_dir, candidates, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def run5(data, tmp_path_factory) -> Path:
    return train(data[0], tmp_path_factory.mktemp("run5"), FIVE_SEEDS)


@pytest.fixture(scope="module")
def run1(data, tmp_path_factory) -> Path:
    return train(data[0], tmp_path_factory.mktemp("run1"), [2020])


def raw_pairs(dataset, split) -> pd.DataFrame:
    vocab = dataset.vocabularies
    return pd.DataFrame({"user_id": vocab["user_id"][split.features["user_id"] - 1],
                         "item_id": vocab["item_id"][split.features["item_id"] - 1]})


def test_vocabularies_hold_the_raw_ids_and_survive_the_cache(data, tmp_path):
    dataset, rows = data
    raw = synthetic_raw("tiny", 0)
    for split_name, split in dataset.splits.items():
        raw_users = "u" + raw.inter.frame["user_id"].astype(str).to_numpy()[rows[split_name]]
        np.testing.assert_array_equal(dataset.vocabularies["user_id"][split.features["user_id"] - 1], raw_users)
    genre = dataset.item_features["genre"]
    assert (genre[genre > 0] <= len(dataset.vocabularies["genre"])).all()
    save_cache(tmp_path / "c.npz", dataset, rows)
    cached, _ = load_cache(tmp_path / "c.npz")
    assert cached.vocabularies.keys() == dataset.vocabularies.keys()
    for name, values in dataset.vocabularies.items():
        np.testing.assert_array_equal(cached.vocabularies[name], values)


def test_lookup_matches_raw_ids_across_spellings():
    from lipctr.encoding import lookup

    ids, missing = lookup(["12", 12.0, 7, "x", None, 3.5], np.array([7, 12], np.int64))
    assert ids.tolist() == [2, 2, 1, 0, 0, 0] and missing.tolist() == [False] * 4 + [True, False]
    ids, missing = lookup([196, "196", 196.0, "", "0196"], np.array(["5", "196"]))
    assert ids.tolist() == [2, 2, 2, 0, 0] and missing.tolist() == [False, False, False, True, False]


@pytest.mark.parametrize("seeds", [5, pytest.param(1, marks=pytest.mark.slow)])
@pytest.mark.parametrize("variant", ["orig", "smooth"])
def test_predict_on_raw_test_ids_reproduces_predictions_npz_bits(request, data, variant, seeds):
    dataset, _ = data
    run_dir = request.getfixturevalue(f"run{seeds}")
    run = lipctr.load_run(run_dir, variant)
    saved = np.load(run_dir / variant / "predictions.npz")
    final = json.loads((run_dir / variant / "final.json").read_text())
    assert run.members == [m["member"] for m in final["members"]] and len(run.members) == seeds
    frame = raw_pairs(dataset, dataset.test)
    scores = run.predict(frame)
    members = np.stack([scores[f"probability_{m}"].to_numpy() for m in run.members])
    assert members.dtype == np.float32 and members.shape == saved["probability"].shape
    np.testing.assert_array_equal(members.view(np.uint32), saved["probability"].view(np.uint32))
    np.testing.assert_allclose(scores["probability"], saved["probability"].mean(0), rtol=1e-6)
    assert scores.attrs["unknown"] == {"user_id": 0, "item_id": 0}
    if variant == "smooth":
        logits = saved["logits"].astype(np.float64)
        softmax = np.exp(logits - logits.max(-1, keepdims=True))
        softmax = (softmax / softmax.sum(-1, keepdims=True)).mean(0)
        ratings = scores[[f"rating_{r}" for r in range(1, 6)]].to_numpy()
        np.testing.assert_allclose(ratings, softmax, atol=1e-6)
        np.testing.assert_allclose(scores["expected_rating"], softmax @ np.arange(1, 6), atol=1e-5)
    else:
        assert "rating_1" not in scores.columns and "expected_rating" not in scores.columns


def brute_force_top_k(run, dataset, user: str, k: int, exclude_seen: bool) -> tuple[list, np.ndarray]:
    vocab = dataset.vocabularies
    items = vocab["item_id"]
    probability = run.predict(pd.DataFrame({"user_id": user, "item_id": items}))["probability"].to_numpy()
    if exclude_seen:
        user_id = int(np.flatnonzero(vocab["user_id"] == user)[0]) + 1
        seen = dataset.train.features["item_id"][dataset.train.features["user_id"] == user_id]
        probability = np.where(np.isin(np.arange(1, len(items) + 1), seen), -np.inf, probability)
    order = np.lexsort((np.arange(len(items)), -probability))[:k]  # descending, ties by lower id
    return items[order].tolist(), probability[order]


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_recommend_equals_brute_force_top_k(run5, data, exclude_seen):
    dataset, _ = data
    run = lipctr.load_run(run5, "smooth")
    users = ["u17", "u3", "u250", "u17"]
    top = run.recommend(users, k=7, exclude_seen=exclude_seen)
    assert len(top) == 7 * len(users) and list(top.columns) == ["user_id", "rank", "item_id", "probability"]
    for position, user in enumerate(users):
        mine = top.iloc[7 * position: 7 * position + 7]
        assert (mine["user_id"] == user).all() and mine["rank"].tolist() == list(range(1, 8))
        items, probability = brute_force_top_k(run, dataset, user, 7, exclude_seen)
        assert mine["item_id"].tolist() == items
        np.testing.assert_array_equal(mine["probability"].to_numpy(), probability)


def test_recommend_leaves_out_every_training_item(run5, data):
    dataset, _ = data
    run = lipctr.load_run(run5, "orig")
    vocab = dataset.vocabularies
    train = pd.DataFrame({"user": vocab["user_id"][dataset.train.features["user_id"] - 1],
                          "item": vocab["item_id"][dataset.train.features["item_id"] - 1]})
    heavy = train["user"].value_counts().index[0]
    seen = set(train.loc[train["user"] == heavy, "item"])
    top = run.recommend([heavy], k=len(vocab["item_id"]))
    assert len(top) == len(vocab["item_id"]) - len(seen)  # every unseen item, none of the seen
    assert not seen & set(top["item_id"])


def test_exported_scores_equal_the_in_process_model(run5, data, tmp_path):
    dataset, _ = data
    for variant in ("orig", "smooth"):
        run = lipctr.load_run(run5 / variant)  # a variant directory works too
        run.export(tmp_path / variant)
        exported = lipctr.load_exported(tmp_path / variant)
        assert not hasattr(exported, "model")
        frame = raw_pairs(dataset, dataset.valid)
        pd.testing.assert_frame_equal(exported.predict(frame), run.predict(frame), check_exact=True)
        pd.testing.assert_frame_equal(exported.recommend(["u5", "u9"], k=4), run.recommend(["u5", "u9"], k=4),
                                      check_exact=True)
    program = jax.export.deserialize(bytearray((tmp_path / "smooth" / "scoring.jaxexport").read_bytes()))
    assert "b" in str(program.in_avals[0].shape)  # the batch dimension is symbolic


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_unknown_ids_are_mapped_with_a_count_or_refused(run5, data):
    dataset, _ = data
    run = lipctr.load_run(run5, "smooth")
    frame = pd.DataFrame({"user_id": ["u17", "nobody", "ghost", "nobody", "u3"],
                          "item_id": ["i4", "i4", "i4", "i9999", "i7"]})
    with pytest.warns(UnknownIdWarning) as caught:
        scores = run.predict(frame)
    messages = [str(w.message) for w in caught]
    assert any("column 'user_id': 3 of 5 values" in m for m in messages)
    assert any("column 'item_id': 1 of 5 values" in m for m in messages)
    assert scores.attrs["unknown"] == {"user_id": 3, "item_id": 1}
    # the unknown users score as the padding user 0, through the model directly
    variables = {"params": jax.tree.map(lambda x: x[0], run.params), **jax.tree.map(lambda x: x[0], run.model_state)}
    item = int(np.flatnonzero(dataset.vocabularies["item_id"] == "i4")[0]) + 1
    features = run.vocabulary.gather(np.array([0]), np.array([item]))
    logits = run.model.apply(variables, features, deterministic=True)
    expected = float(click_probability(logits)[0])
    assert scores["probability_seed2020"].iloc[1] == scores["probability_seed2020"].iloc[2]
    assert scores["probability_seed2020"].iloc[1] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(InputError, match=r"column 'user_id': 3 of 5 values .* \(first: 'nobody'\)"):
        run.predict(frame, unknown="error")
    with pytest.raises(InputError, match="column 'user_id': 1 of 2 values"):
        run.recommend(["u17", "nobody"], unknown="error")


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_feature_columns_override_the_stored_tables(run5, data):
    dataset, _ = data
    run = lipctr.load_run(run5, "smooth")
    vocab = dataset.vocabularies
    frame = raw_pairs(dataset, dataset.test).iloc[:50].reset_index(drop=True)
    base = run.predict(frame)
    genre_ids = dataset.item_features["genre"][dataset.test.features["item_id"][:50]]
    frame["genre"] = [" ".join(vocab["genre"][g[g > 0] - 1]) for g in genre_ids]  # the stored genres, spelled out
    frame["gender"] = vocab["gender"][dataset.user_features["gender"][dataset.test.features["user_id"][:50]] - 1]
    pd.testing.assert_frame_equal(run.predict(frame).drop(columns=["genre", "gender"], errors="ignore"), base)
    first, second = vocab["gender"][:2]
    flipped = frame.assign(gender=np.where(frame["gender"] == first, second, first))
    assert not np.array_equal(run.predict(flipped)["probability"], base["probability"])
    with pytest.warns(UnknownIdWarning, match="column 'gender': 50 of 50"):
        run.predict(frame.assign(gender="X"))


def test_bad_columns_and_arguments_name_the_column(run5):
    run = lipctr.load_run(run5, "orig")
    with pytest.raises(InputError, match=r"missing column\(s\) \['item_id'\]; it has \['user_id', 'item'\]"):
        run.predict(pd.DataFrame({"user_id": ["u1"], "item": ["i1"]}))
    with pytest.raises(InputError, match="unknown='maybe'"):
        run.predict(pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"]}), unknown="maybe")
    with pytest.raises(InputError, match="k must be a positive integer"):
        run.recommend(["u1"], k=0)


def test_run_without_its_schema_gives_the_message(run5, tmp_path, capsys):
    old = tmp_path / "old_run"
    shutil.copytree(run5, old)
    (old / "smooth" / "run_schema.json").unlink()
    with pytest.raises(RunFileError, match=r"smooth: no run_schema.json, so this run cannot be scored"):
        lipctr.load_run(old, "smooth")
    assert cli.main([str(old), "--recommend", "--users", "u1", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no run_schema.json" in err and "Traceback" not in err
    assert not (tmp_path / "x.csv").exists()
    tables = old / "orig" / "run_tables.npz"
    tables.write_bytes(tables.read_bytes()[:-10])
    with pytest.raises(RunFileError, match="do not match the sha256"):
        lipctr.load_run(old, "orig")
    shutil.rmtree(old / "orig" / "checkpoints" / "seed2022")
    (old / "orig" / "run_tables.npz").write_bytes((run5 / "orig" / "run_tables.npz").read_bytes())
    with pytest.raises(RunFileError, match="checkpoint of member 'seed2022' missing"):
        lipctr.load_run(old, "orig")
    with pytest.raises(RunFileError, match="no variant 'lambda_sweep' .found: orig, smooth."):
        lipctr.load_run(run5, "lambda_sweep")


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_cli_pairs_and_recommend_as_in_the_readme(run5, data, tmp_path, capsys):
    dataset, _ = data
    run = lipctr.load_run(run5, "smooth")
    frame = raw_pairs(dataset, dataset.test).iloc[:40]
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    assert cli.main([str(run5), "--pairs", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "scores.csv")]) == 0
    written = pd.read_csv(tmp_path / "scores.csv", dtype={"user_id": str, "item_id": str})
    expected = run.predict(frame.reset_index(drop=True))
    pd.testing.assert_frame_equal(written, expected, check_dtype=False, atol=1e-7)
    assert cli.main([str(run5), "--recommend", "--users", "u1,u2,u3", "--k", "10",
                     "--out", str(tmp_path / "top10.parquet")]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "top10.parquet"),
                                  run.recommend(["u1", "u2", "u3"], k=10), check_dtype=False)
    assert cli.main([str(run5), "--pairs", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "s.txt")]) == 2
    assert "--out" in capsys.readouterr().err and not (tmp_path / "s.txt").exists()
    frame.assign(user_id="stranger").to_csv(tmp_path / "strangers.csv", index=False)
    assert cli.main([str(run5), "--pairs", str(tmp_path / "strangers.csv"), "--unknown", "error",
                     "--out", str(tmp_path / "s.csv")]) == 2
    assert "column 'user_id': 40 of 40 values" in capsys.readouterr().err and not (tmp_path / "s.csv").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cli.main([str(run5), "--pairs", str(tmp_path / "strangers.csv"),
                         "--out", str(tmp_path / "s.csv")]) == 0
    assert "warning: --pairs" in capsys.readouterr().err and (tmp_path / "s.csv").exists()


SHARDED_WORKER = r'''
import json, sys
from pathlib import Path
import numpy as np
import lipctr
from lipctr import sharding
from lipctr.ranking import ranking_candidates
from experiments.run import run_variant
from tests.test_predict import raw_pairs, small_config, string_id_dataset

out = Path(sys.argv[1])
dataset, _ = string_id_dataset()
config = small_config([2020, 2021, 2022])  # 3 members on seeds=2: one padding member
run_variant(config, dataset, "smooth", out, ranking_candidates(dataset, "test", 10, 0, "positive"),
            progress=False, mesh=sharding.make_mesh("seeds=2,data=2"))
frame = raw_pairs(dataset, dataset.test)
for name, mesh in (("on_mesh", sharding.make_mesh("seeds=2,data=2")), ("one_device", None)):
    scores = lipctr.load_run(out, "smooth", mesh=mesh).predict(frame)
    members = [f"probability_seed{seed}" for seed in (2020, 2021, 2022)]
    np.save(out / f"{name}.npy", scores[members].to_numpy().T)
'''


@pytest.mark.slow
def test_sharded_run_reloads_with_the_same_bits(data, tmp_path):
    """A seeds=2,data=2 run on 4 forced CPU devices, reloaded on that mesh (the same bits as its
    predictions.npz) and on one device (equal up to float rounding)."""
    dataset, _ = data
    (tmp_path / "worker.py").write_text(SHARDED_WORKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    done = subprocess.run([sys.executable, str(tmp_path / "worker.py"), str(tmp_path / "run")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = np.load(tmp_path / "run" / "smooth" / "predictions.npz")["probability"]
    assert saved.shape == (3, len(dataset.test))
    on_mesh, one_device = (np.load(tmp_path / "run" / f"{name}.npy") for name in ("on_mesh", "one_device"))
    np.testing.assert_array_equal(on_mesh.view(np.uint32), saved.view(np.uint32))
    np.testing.assert_allclose(one_device, saved, rtol=1e-6)
