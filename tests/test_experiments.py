"""Experiment configs, run outputs, and resume-after-interrupt."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import configs
from experiments.cli import parse_args, resolve_config
from experiments.configs import ConfigError, load_config, named_config, validate
from experiments.run import run_variant
from lipctr.checkpoint import StateCheckpoints
from lipctr.ranking import ranking_candidates
from tests.tiny_data import tiny_dataset


def test_every_named_config_validates_and_builds_its_model():
    from lipctr.models import build_model
    from tests.tiny_data import tiny_dataset as make

    schema = make(num_interactions=200).schema
    names = configs.config_names()
    assert len(names) == 48 and "dcnv2_ml1m" in names and "dcnv3_amazon_book" in names
    for name in names:
        config = named_config(name)
        build_model(config["model"], schema, 5, **configs.model_hparams(config))
    assert named_config("dcnv2_yelp2018")["model_hparams"]["mlp_hidden_size"] == [64, 64, 64]
    assert named_config("xdeepfm_ml1m")["train"]["learning_rate"] == 5e-4


@pytest.mark.parametrize(
    "update, message",
    [
        ({"trian": {}}, "unknown key 'trian'"),
        ({"train": {"learning_rat": 1.0}}, "unknown key 'train.learning_rat'"),
        ({"train": {"batch_size": "big"}}, "'train.batch_size' must be int"),
        ({"train": {"batch_size": 0}}, "'train.batch_size' must be >= 1"),
        ({"loss": {"scale_penalty": 1}}, "'loss.scale_penalty' must be bool"),
        ({"model_hparams": {"cross_layers": 3}}, "unknown key 'model_hparams.cross_layers'"),
        ({"model_hparams": {"dropout_prob": "x"}}, "'model_hparams.dropout_prob' must be float"),
        ({"model": "dcnv4"}, "key 'model' must be one of"),
        ({"loss": {"lambda_r": 1.5}}, "lambda_r values must lie in [0, 1]"),
        ({"variants": ["both"]}, "key 'variants'"),
    ],
)
def test_config_errors_name_the_key(update, message):
    config = configs.merge(named_config("dcnv2_ml100k"), update)
    with pytest.raises(ConfigError) as error:
        validate(config, source="my.toml")
    assert message in str(error.value) and "my.toml" in str(error.value)


def test_toml_and_command_line_overrides(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('base = "widedeep_ml1m"\nseeds = [1, 2]\n[train]\nlearning_rate = 0.01\n')
    config = load_config(str(path))
    assert config["model"] == "widedeep" and config["seeds"] == [1, 2] and config["train"]["learning_rate"] == 0.01
    args = parse_args(["--config", str(path), "--set", "train.batch_size=256", "--set", "loss.aggregation=logit_sum",
                       "--variant", "smooth", "--lambda-r", "0.3", "--epochs", "7", "--seeds", "5,6,7"])
    config = resolve_config(args)
    assert config["train"]["batch_size"] == 256 and config["loss"]["aggregation"] == "logit_sum"
    assert config["variants"] == ["smooth"] and config["loss"]["lambda_r"] == 0.3
    assert config["train"]["max_epochs"] == 7 and config["seeds"] == [5, 6, 7]
    with pytest.raises(ConfigError, match="unknown key 'train.bogus'"):
        resolve_config(parse_args(["--config", str(path), "--set", "train.bogus=1"]))
    path.write_text("seeds = [1,\n")
    with pytest.raises(ConfigError, match="exp.toml"):
        load_config(str(path))


def tiny_config(epochs=4):
    config = named_config("widedeep_ml100k")
    config = configs.merge(config, {
        "model_hparams": {"mlp_hidden_size": [16, 16]},
        "train": {"batch_size": 512, "max_epochs": epochs, "patience": 10},
        "seeds": [2020, 2021],
        "eval": {"num_negatives": 20},
    })
    return validate(config)


@pytest.fixture(scope="module")
def tiny():
    ds = tiny_dataset()
    return ds, ranking_candidates(ds, "test", 20, 0, "positive")


class Interrupt(Exception):
    pass


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_outputs_and_resume_equals_uninterrupted(tmp_path, monkeypatch, tiny):
    ds, candidates = tiny
    config = tiny_config()
    full = run_variant(config, ds, "smooth", tmp_path / "full", candidates, progress=False)

    out = tmp_path / "full" / "smooth"
    assert {p.name for p in out.iterdir()} >= {"final.json", "metrics.csv", "predictions.npz", "checkpoints", "state"}
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["seed2020", "seed2021"]
    predictions = np.load(out / "predictions.npz")
    assert predictions["probability"].shape == (2, len(ds.test))
    assert predictions["logits"].shape == (2, len(ds.test), 5)
    assert json.loads((out / "final.json").read_text())["members"][0]["auc"] == full["members"][0]["auc"]

    original_save = StateCheckpoints.save

    def save_then_interrupt(self, epoch, tree, info=None):
        original_save(self, epoch, tree, info)
        if epoch == 2:
            raise Interrupt
        assert epoch % 2 == 0 or epoch == config["train"]["max_epochs"]

    monkeypatch.setattr(StateCheckpoints, "save", save_then_interrupt)
    config = {**config, "checkpoint_every": 2}  # the state of epochs 1 and 3 is never saved
    with pytest.raises(Interrupt):
        run_variant(config, ds, "smooth", tmp_path / "cut", candidates, progress=False)
    assert not (tmp_path / "cut" / "smooth" / "final.json").exists()
    monkeypatch.setattr(StateCheckpoints, "save", original_save)
    resumed = run_variant(config, ds, "smooth", tmp_path / "cut", candidates, progress=False)
    for a, b in zip(full["members"], resumed["members"]):
        for key in ("auc", "logloss", "ndcg@10", "recall@20", "best_valid_auc", "best_epoch"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
    import pandas as pd

    pd.testing.assert_frame_equal(
        pd.read_csv(out / "metrics.csv").drop(columns=["train_seconds", "eval_seconds"]),
        pd.read_csv(tmp_path / "cut" / "smooth" / "metrics.csv").drop(columns=["train_seconds", "eval_seconds"]),
    )


def test_missing_dataset_names_the_files_and_writes_nothing(tmp_path, capsys):
    from experiments.main import main

    runs = tmp_path / "runs"
    code = main(["--config", "dcnv2_ml1m", "--data", str(tmp_path / "empty"), "--runs-dir", str(runs), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "ml-1m.zip" in err and "ratings.dat" in err and "ml-1m.inter" in err and str(tmp_path / "empty") in err
    assert not runs.exists()


def test_cli_errors_exit_2_with_the_key(tmp_path, capsys):
    from experiments.main import main

    assert main(["--config", "dcnv2_ml9m"]) == 2
    assert "unknown config 'dcnv2_ml9m'" in capsys.readouterr().err
    assert main(["--config", "dcnv2_ml100k", "--analysis", "plots"]) == 2
    assert "--analysis: unknown ['plots']" in capsys.readouterr().err


def test_the_cli_asks_for_deterministic_gpu_ops_unless_the_user_chose(monkeypatch):
    import os

    from lipctr.runtime import deterministic_gpu_ops

    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    deterministic_gpu_ops()
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_gpu_deterministic_ops=true"
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=false")
    deterministic_gpu_ops()
    assert os.environ["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=false"
    monkeypatch.delenv("XLA_FLAGS")
    deterministic_gpu_ops()
    assert os.environ["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=true"


def test_the_cli_turns_off_xla_cpu_ynnpack_fusions_unless_the_user_chose(monkeypatch):
    import os

    from experiments.main import main
    from lipctr import runtime

    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    runtime.cpu_defaults()
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_cpu_experimental_ynn_fusion_type="
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
    runtime.cpu_defaults()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
    monkeypatch.setenv("XLA_FLAGS", "")
    assert main(["--config", "dcnv2_ml100k", "--analysis", "plots"]) == 2  # exits before any training
    assert "--xla_cpu_experimental_ynn_fusion_type=" in os.environ["XLA_FLAGS"].split()
