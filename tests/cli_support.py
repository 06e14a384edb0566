"""Helpers for the CLI tests (no tests here): a small run's flags and what a refused command printed."""

from __future__ import annotations

SMALL = ["--epochs", "1", "--seeds", "2020", "--no-progress", "--set", "model_hparams.mlp_hidden_size=[8]",
         "--set", "model_hparams.embedding_dim=4", "--set", "train.batch_size=128", "--set", "eval.num_negatives=5"]

MECHANISM_SWEEP = [0.2, 0.8]  # the smooth lambda_r sweep of the `mechanism_argv` fixture (conftest.py)


def one_error(capsys, code: int, expected_code: int = 2) -> str:
    """The single `error:` line of a refused command (no traceback, no devices line: it comes after the checks)."""
    err = capsys.readouterr().err
    assert code == expected_code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]
