"""Every test process starts JAX with the XLA flags the training CLIs set (lipctr.runtime).

XLA reads XLA_FLAGS once, when the first backend starts. Without this, the flags of a test
process depended on the order of its tests: a CLI called in-process (experiments.main.main)
appends the CPU defaults to XLA_FLAGS, which took effect only if no earlier test had started a
backend, so a file's numbers could change with the files run before it (e.g. under pytest-xdist).
"""

import pytest

from lipctr import runtime
from lipctr.data import fetch as fetch_module
from tests.cli_support import MECHANISM_SWEEP
from tests.data_files import write_ratings

runtime.configure_xla()


@pytest.fixture
def no_fetch(monkeypatch, tmp_path):
    """Any attempt to fetch ML-100K fails the test; the datasets root is an empty temporary folder."""
    def refuse(*args, **kwargs):
        raise AssertionError("ML-100K must not be fetched into a folder the user gave")

    monkeypatch.setattr(fetch_module, "download_wheel", refuse)
    monkeypatch.setattr(fetch_module, "fetch_ml100k", refuse)
    monkeypatch.setenv("LIPCTR_DATA", str(tmp_path / "root"))


@pytest.fixture
def mechanism_argv(tmp_path, no_fetch):
    """`experiments.mechanism` flags for a 2-seed, 2-epoch study with lambda_r sweep MECHANISM_SWEEP on a small CSV."""
    folder = tmp_path / "mine"
    write_ratings(folder, n_users=40, n_items=30)
    return ["--config", "dcnv2_ml100k", "--data", str(folder), "--format", "csv", "--inter", "ratings.csv",
            "--columns", "userId=user_id,movieId=item_id", "--seeds", "2020,2021", "--epochs", "2", "--no-progress",
            "--set", "model_hparams.mlp_hidden_size=[8]", "--set", "model_hparams.embedding_dim=4",
            "--set", "train.batch_size=128", "--set", "eval.num_negatives=5",
            "--set", f"lambda_sweep={MECHANISM_SWEEP}",
            "--controls", "aux_rating", "--lipschitz-examples", "16", "--noise-draws", "1"]
