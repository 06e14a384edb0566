"""examples/ run as scripts and print what their docstrings promise: a fast small-data run of each
in the default suite, the full runs (real ML-100K) marked slow."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import configs
from experiments.run import run_variant
from lipctr.data import synthetic_dataset
from lipctr.ranking import ranking_candidates

ROOT = Path(__file__).resolve().parents[1]
AUC_LINE = r"{} +test AUC (0\.\d{{4}}) ± (0\.\d{{4}}) over {} seeds \((.*)\)"


def run_example(name, *args, cwd=ROOT) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def auc_lines(out: str, variants, seeds: int) -> dict:
    """{variant: (mean, [per seed] or None)}; fails unless each variant's line is there."""
    found = {}
    for variant in variants:
        match = re.search(AUC_LINE.format(variant, seeds), out)
        assert match, f"no '{variant} test AUC' line in:\n{out}"
        found[variant] = float(match.group(1))
    return found


def test_own_flax_model_small():
    out = run_example("own_flax_model.py", "--small")
    aucs = auc_lines(out, ("orig", "scaled", "aux"), 1)
    assert all(0.0 < a < 1.0 for a in aucs.values())


@pytest.mark.slow
def test_own_flax_model_on_ml100k_scaled_beats_orig():
    """Measured: orig 0.7777, scaled 0.7801, aux 0.7798 (3 seeds, 2-core CPU)."""
    out = run_example("own_flax_model.py")
    aucs = auc_lines(out, ("orig", "scaled", "aux"), 3)
    assert aucs["scaled"] > aucs["orig"] and aucs["aux"] > aucs["orig"] and aucs["orig"] > 0.75


def test_implicit_feedback_small():
    out = run_example("implicit_feedback.py", "--small")
    edges = re.search(r"upper edges \[(.*)\] s; click = rating > 3 \(dwell > ([\d.]+) s\)", out)
    assert edges, out
    values = [float(v) for v in edges.group(1).split(",")]
    assert len(values) == 4 and values == sorted(values) and float(edges.group(2)) == values[2]
    auc_lines(out, ("orig", "scaled"), 3)


@pytest.mark.slow
def test_implicit_feedback_full():
    """Measured: orig 0.8743, scaled 0.8823 (3 seeds, 2-core CPU)."""
    aucs = auc_lines(run_example("implicit_feedback.py"), ("orig", "scaled"), 3)
    assert min(aucs.values()) > 0.8  # the hidden tastes are learned


def _check_trained_run_output(out: str):
    lines = out.strip().splitlines()
    assert lines[0].split() == ["user_id", "item_id", "probability"] and len(lines[1:4]) == 3
    assert all(0.0 < float(line.split()[-1]) < 1.0 for line in lines[1:4])
    assert lines[4].split() == ["user_id", "rank", "item_id", "probability"]
    ranks = [int(line.split()[1]) for line in lines[5:15]]
    assert ranks == [1, 2, 3, 4, 5] * 2
    difference = re.fullmatch(r"exported program: max \|probability difference\| = (\S+)", lines[15])
    assert difference and float(difference.group(1)) < 1e-6  # the same model, compiled apart: float32 rounding


def test_use_a_trained_run_small(tmp_path):
    """A one-epoch, one-seed smooth WideDeep run on the synthetic tiny preset, then the example on it."""
    dataset = synthetic_dataset("tiny")
    config = configs.validate(configs.merge(configs.named_config("widedeep_ml100k"), {
        "model_hparams": {"mlp_hidden_size": [8]}, "seeds": [2020], "eval": {"num_negatives": 10},
        "train": {"batch_size": 1024, "max_epochs": 1, "eval_batch_size": 256}}))
    candidates = ranking_candidates(dataset, "test", 10, 0, "positive")
    run_variant(config, dataset, "smooth", tmp_path, candidates, progress=False)
    _check_trained_run_output(run_example("use_a_trained_run.py", str(tmp_path)))


@pytest.mark.slow
def test_use_a_trained_run_after_the_first_command(tmp_path):
    """The README's path: a DCNV2 ML-100K run under runs/, then the example finds it by itself."""
    subprocess.run([sys.executable, "-m", "experiments.main", "--config", "dcnv2_ml100k", "--seeds", "2020",
                    "--epochs", "1", "--runs-dir", str(tmp_path / "runs"), "--no-progress"], cwd=ROOT, check=True,
                   capture_output=True)
    _check_trained_run_output(run_example("use_a_trained_run.py", cwd=tmp_path))
