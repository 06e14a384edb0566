"""The experiment CLI under bad input, damage, concurrency and interruption: every
problem is one `error:` line with exit code 2 and no half-made run directory; a resume continues
the stored config; damaged resumable states are detected and named."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import experiments.main as cli
from experiments import rundir
from experiments.cli import parse_args, resolve_config
from tests.tiny_data import tiny_dataset

# lr 0.2 and patience 1: of these four members, trained for at most 5 epochs, seed2022 stops by
# patience at epoch 2, seed2020 at 3, seed2023 at 5, and seed2021 runs into the epoch limit
TINY = ["--config", "widedeep_ml100k", "--variant", "orig", "--seeds", "2020,2021,2022,2023", "--no-progress",
        "--set", "model_hparams.mlp_hidden_size=[8]", "--set", "train.batch_size=512",
        "--set", "train.learning_rate=0.2", "--set", "train.patience=1", "--set", "eval.num_negatives=20"]
DATASET = tiny_dataset()  # 60 users, 80 items: a user has at most 79 items to be ranked against


def run(monkeypatch, capsys, argv) -> tuple[int, str]:
    """experiments.main on the tiny dataset; (exit code, stderr). A traceback fails the test."""
    monkeypatch.setattr(cli.data_source, "load", lambda config: DATASET)
    try:
        code = cli.main(argv)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main as a KeyboardInterrupt traceback")
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> Path:
    """A finished tiny run of 3 epochs (orig, 4 members)."""
    runs = tmp_path_factory.mktemp("done")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli.data_source, "load", lambda config: DATASET)
        assert cli.main([*TINY, "--epochs", "3", "--runs-dir", str(runs)]) == 0
    (run_dir,) = (runs / "widedeep_ml100k").iterdir()
    return run_dir


STAMP = "20260101-000000"


@pytest.fixture(scope="module")
def long_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny run of 5 epochs started in the same second as another run: (runs dir, its run dir)."""
    runs = tmp_path_factory.mktemp("long")
    (runs / "widedeep_ml100k" / STAMP).mkdir(parents=True)  # the other run of the same second
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli.data_source, "load", lambda config: DATASET)
        mp.setattr(rundir, "run_stamp", lambda: STAMP)
        assert cli.main([*TINY, "--epochs", "5", "--runs-dir", str(runs)]) == 0
    return runs, runs / "widedeep_ml100k" / f"{STAMP}-2"


@pytest.fixture
def copy_of(done_run, tmp_path):
    """A copy of the finished run, optionally with orig/final.json removed (as if killed during
    the test evaluation), so that a resume restores the saved state."""
    def make(unfinished: bool = True) -> Path:
        run_dir = tmp_path / "run"
        shutil.copytree(done_run, run_dir)
        if unfinished:
            (run_dir / "orig" / "final.json").unlink()
        return run_dir
    return make


def members(final: dict) -> list[tuple]:
    return [(m["member"], m["best_epoch"], round(m["auc"], 6), round(m["logloss"], 6)) for m in final["members"]]


# --- bad input: an error before any directory ----------

@pytest.mark.parametrize("extra, expected", [
    (["--lambda-sweep", "0.1,0.3"], "--lambda-sweep is no longer a flag of python -m experiments.main; use --grid "
                                    "loss.lambda_r=0.1,0.3,0.5"),
    (["--seeds", ""], "--seeds '': empty"),
    (["--seeds", "2020,2020"], "key 'seeds' lists [2020] more than once"),
    (["--set", "eval.ks=[0]"], "key 'eval.ks' must list cutoffs k >= 1"),
    (["--set", "train.learning_rate=-0.001"], "key 'train.learning_rate' must be a positive number"),
    (["--set", "train.learning_rate=0.0"], "key 'train.learning_rate' must be a positive number"),
    (["--set", "eval.num_negatives=0"], "key 'eval.num_negatives' must be >= 1"),
    (["--set", "eval.num_negatives=5000"], "data set 'tiny' is too small for the ranking evaluation"),
])
def test_bad_input_is_one_error_line_and_creates_nothing(monkeypatch, capsys, tmp_path, extra, expected):
    runs = tmp_path / "runs"
    code, err = run(monkeypatch, capsys, [*TINY, "--epochs", "1", "--runs-dir", str(runs), *extra])
    assert code == 2 and expected in error_line(err), err
    assert not runs.exists()


def test_num_negatives_bound_is_the_fewest_unseen_items_of_a_test_user(monkeypatch, capsys, tmp_path):
    """The bound checked before any run directory: the fewest items some test user never
    interacted with (the only items it can be ranked against; computed here independently);
    one more is refused, the bound itself is drawn."""
    items = DATASET.item_features["item_id"].shape[0] - 1  # ids 1..80 (0 is padding)
    seen = {}
    for split in (DATASET.train, DATASET.valid, DATASET.test):
        for u, i in zip(split.features["user_id"], split.features["item_id"]):
            seen.setdefault(int(u), set()).add(int(i))
    bound = min(items - len(seen[int(u)]) for u in DATASET.test.features["user_id"])
    runs = tmp_path / "runs"
    code, err = run(monkeypatch, capsys, [*TINY, "--runs-dir", str(runs), "--set", f"eval.num_negatives={bound + 1}"])
    assert code == 2 and not runs.exists()
    assert f"leaving {bound}; lower eval.num_negatives to at most {bound}" in error_line(err)
    assert cli.test_candidates(resolve_config(parse_args([*TINY, "--set", f"eval.num_negatives={bound}"])),
                               DATASET).num_candidates == bound + 1


# --- resume continues the stored config ----------

@pytest.mark.parametrize("extra, flag", [
    (["--seeds", "1,2"], "--seeds"),
    (["--seeds", ""], "--seeds"),
    (["--set", "train.learning_rate=0.1"], "--set"),
    (["--set", "nonexistent.key=1"], "--set"),
    (["--variant", "smooth"], "--variant"),
    (["--config", "dcnv2_ml100k"], "--config"),
    (["--lambda-r", "0.3"], "--lambda-r"),
    (["--data", "/somewhere"], "--data"),
    (["--format", "csv"], "--format"),
    (["--models", "all"], "--models"),
    (["--epochs", "2"], "--epochs 2"),  # fewer than the stored 3
])
def test_resume_refuses_flags_that_change_the_stored_config(monkeypatch, capsys, done_run, extra, flag):
    before = {p: p.read_bytes() for p in done_run.rglob("*") if p.is_file()}
    code, err = run(monkeypatch, capsys, ["--resume", str(done_run), *extra])
    line = error_line(err)
    assert code == 2 and line.startswith(f"error: {flag}") and ("--resume" in line), line
    assert {p: p.read_bytes() for p in done_run.rglob("*") if p.is_file()} == before


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_resume_with_more_epochs_equals_the_longer_run(monkeypatch, capsys, long_run, copy_of):
    """--epochs on resume: members stopped by the epoch limit train on, members stopped by
    patience stay stopped, and the result equals a run trained for 5 epochs from the start."""
    long_dir = long_run[1]
    long_final = json.loads((long_dir / "orig" / "final.json").read_text())
    long_history = pd.read_csv(long_dir / "orig" / "metrics.csv")
    stopped_at = long_history[long_history["stopped"]].groupby("member")["epoch"].min()
    assert stopped_at.min() < 3 < stopped_at.max(), f"precondition: patience stops before epoch 3 {stopped_at}"

    resumed = copy_of(unfinished=False)
    code, err = run(monkeypatch, capsys, ["--resume", str(resumed), "--epochs", "5", "--no-progress"])
    assert code == 0, err
    assert "applied --epochs 5: max_epochs 3 -> 5" in err
    assert "resuming orig from epoch 3 of 5, 4 members (2 stopped)" in err
    assert json.loads((resumed / "config.json").read_text())["train"]["max_epochs"] == 5
    final = json.loads((resumed / "orig" / "final.json").read_text())
    assert members(final) == members(long_final) and final["max_epochs"] == 5
    history = pd.read_csv(resumed / "orig" / "metrics.csv")
    timing = ["train_seconds", "eval_seconds", "stopped"]  # "stopped" at epoch 3: by the first run's limit
    pd.testing.assert_frame_equal(history.drop(columns=timing), long_history.drop(columns=timing))
    later = history["epoch"] > 3
    assert (history["stopped"][later] == long_history["stopped"][later]).all()


def test_resume_of_a_finished_training_keeps_its_train_seconds(monkeypatch, capsys, done_run, copy_of):
    """Killed after training, before final.json: the resume restores the state of the last epoch,
    trains nothing, and reports the training time of the first session."""
    original = json.loads((done_run / "orig" / "final.json").read_text())
    run_dir = copy_of()
    code, err = run(monkeypatch, capsys, ["--resume", str(run_dir)])
    assert code == 0 and "resuming orig from epoch 3 of 3, 4 members (4 stopped)" in err, err
    final = json.loads((run_dir / "orig" / "final.json").read_text())
    assert members(final) == members(original)
    epochs_seconds = pd.read_csv(done_run / "orig" / "metrics.csv").drop_duplicates("epoch")["train_seconds"].sum()
    assert epochs_seconds <= final["timing"]["train_seconds_total"] <= original["timing"]["train_seconds_total"]


def test_a_second_resume_of_a_run_in_use_is_refused(monkeypatch, capsys, done_run):
    before = {p: p.read_bytes() for p in done_run.rglob("*") if p.is_file()}
    fd = os.open(done_run, os.O_RDONLY)  # another process training in the run directory
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, err = run(monkeypatch, capsys, ["--resume", str(done_run)])
    finally:
        os.close(fd)
    assert code == 2 and "is in use by another process" in error_line(err)
    assert {p: p.read_bytes() for p in done_run.rglob("*") if p.is_file()} == before


# --- damaged run directories ----------

def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def _state_data_files(run_dir: Path) -> list[Path]:
    return [p for p in (run_dir / "orig" / "state").rglob("*") if p.is_file() and p.parent.name == "d"]


DAMAGE = {
    "flipped bytes": lambda run_dir: [_flip_bytes(p) for p in _state_data_files(run_dir)],
    "truncated": lambda run_dir: [p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
                                  for p in _state_data_files(run_dir)],
    "_METADATA deleted": lambda run_dir: [p.unlink() for p in (run_dir / "orig" / "state").rglob("_METADATA")],
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_state_is_an_error_naming_it(monkeypatch, capsys, copy_of, damage):
    run_dir = copy_of()
    DAMAGE[damage](run_dir)
    code, err = run(monkeypatch, capsys, ["--resume", str(run_dir)])
    line = error_line(err)
    assert code == 2 and f"{run_dir / 'orig' / 'state'}: no intact saved state" in line, line
    assert f"{run_dir / 'orig' / 'state' / '3'}: unreadable" in line
    assert not (run_dir / "orig" / "final.json").exists()


def test_readable_wrong_bytes_fail_the_digest_and_the_older_state_is_used(tmp_path):
    """Epoch 2's arrays replaced by epoch 1's (readable, but not what was saved as epoch 2): the
    digests catch it, the older state is restored and said so, the damaged one removed; with
    every state damaged, the error names each."""
    import jax.numpy as jnp

    from lipctr.checkpoint import CheckpointError, StateCheckpoints

    like = {"w": jnp.zeros((3, 4)), "step": jnp.zeros((), jnp.int32)}
    states = StateCheckpoints(tmp_path / "state")
    for epoch in (1, 2):
        states.save(epoch, {"w": jnp.full((3, 4), float(epoch)), "step": jnp.int32(epoch)}, {"train_seconds": epoch})
    assert states.manager.all_steps() == [1, 2] and states.info(2) == {"train_seconds": 2}
    shutil.rmtree(tmp_path / "state" / "2" / "state")
    shutil.copytree(tmp_path / "state" / "1" / "state", tmp_path / "state" / "2" / "state")
    logged = []
    restored = StateCheckpoints(tmp_path / "state").restore(like, logged.append)
    assert float(restored["w"][0, 0]) == 1.0 and int(restored["step"]) == 1
    assert len(logged) == 1 and f"{tmp_path / 'state' / '2'}: array ['" in logged[0]
    assert "does not match its saved SHA-256 digest; using the older intact state" in logged[0]
    assert StateCheckpoints(tmp_path / "state").latest_epoch() == 1
    for path in (tmp_path / "state" / "1").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            _flip_bytes(path)
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'state'}: no intact saved state .*state/1: unreadable"):
        StateCheckpoints(tmp_path / "state").restore(like, logged.append)


def _cut_last_row(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: text.rstrip("\n").rfind(",") - 3])


METRICS_DAMAGE = {
    "garbage": (lambda p: p.write_text("hello,world\n1,2\n"), "lacks column(s) ['epoch'"),
    "binary": (lambda p: p.write_bytes(b"\x89\xff\xfe garbage\n"), "not a readable CSV"),
    "deleted": (lambda p: p.unlink(), "missing; it holds the history of the saved state (epochs 1-3)"),
    "cut mid-row": (_cut_last_row, "line 13: incomplete or unknown row"),
}


@pytest.mark.parametrize("damage", sorted(METRICS_DAMAGE))
def test_a_damaged_metrics_csv_is_an_error_naming_it(monkeypatch, capsys, copy_of, damage):
    run_dir = copy_of()
    path = run_dir / "orig" / "metrics.csv"
    change, expected = METRICS_DAMAGE[damage]
    change(path)
    code, err = run(monkeypatch, capsys, ["--resume", str(run_dir)])
    line = error_line(err)
    assert code == 2 and str(path) in line and expected in line, line
    assert not (run_dir / "orig" / "final.json").exists()


def test_a_damaged_or_edited_config_json_is_an_error(monkeypatch, capsys, copy_of):
    run_dir = copy_of()
    path = run_dir / "config.json"
    stored = path.read_text()
    path.write_text("{ not json")
    code, err = run(monkeypatch, capsys, ["--resume", str(run_dir)])
    assert code == 2 and f"{path}: not valid JSON" in error_line(err)
    path.write_text(json.dumps({**json.loads(stored), "seeds": [2020, 2021]}))
    code, err = run(monkeypatch, capsys, ["--resume", str(run_dir)])
    line = error_line(err)
    assert code == 2 and "state holds members ['seed2020', 'seed2021', 'seed2022', 'seed2023'], but " \
        "config.json asks for ['seed2020', 'seed2021']" in line, line


# --- concurrency, interruption, file modes, the summary table ----------

def test_run_directories_started_in_the_same_second_are_distinct(tmp_path):
    from experiments.rundir import create_run_dir

    made, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        made.append(create_run_dir(tmp_path / "widedeep_ml100k", "20260101-000000"))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8 and all(p.is_dir() for p in made)
    assert sorted(p.name for p in made) == sorted(["20260101-000000"] + [f"20260101-000000-{n}" for n in range(2, 9)])


def test_a_run_started_in_an_existing_runs_second_gets_its_own_directory(long_run):
    runs, run_dir = long_run
    assert sorted(p.name for p in (runs / "widedeep_ml100k").iterdir()) == [STAMP, f"{STAMP}-2"]
    assert list((runs / "widedeep_ml100k" / STAMP).iterdir()) == []  # the other run's folder untouched
    assert (run_dir / "orig" / "final.json").is_file()


def test_ctrl_c_exits_130_with_the_resume_command(monkeypatch, capsys, tmp_path):
    import experiments.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments.run, "build_trainer", interrupted)
    code, err = run(monkeypatch, capsys, [*TINY, "--epochs", "1", "--runs-dir", str(tmp_path)])
    (run_dir,) = (tmp_path / "widedeep_ml100k").iterdir()
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"interrupted; continue with: python -m experiments.main --resume {run_dir}"


def test_output_files_follow_the_umask_and_are_fsynced(tmp_path, monkeypatch):
    from lipctr import io
    from lipctr.data import cache, export, fetch

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    old = os.umask(0o002)
    try:
        io.write_json_atomic(tmp_path / "config.json", {"a": 1})
        io.write_text_atomic(tmp_path / "metrics.csv", "a\n1\n")
        io.save_npz_atomic(tmp_path / "predictions.npz", x=np.zeros(3))
        cache.write_atomically(tmp_path / "cache.npz", lambda handle: handle.write(b"x"))
    finally:
        os.umask(old)
    for name in ("config.json", "metrics.csv", "predictions.npz", "cache.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o664, name
    assert len(synced) == 4
    assert cache.write_atomically is export.write_atomically is fetch.write_atomically is io.write_atomically
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_summary_table_marks_diverged_members_and_leaves_them_out():
    from experiments.table import results_table

    def final(variant, aucs, diverged):
        rows = [{"member": f"seed{i}", "lambda_r": 0.7 if variant == "smooth" else 0.0, "diverged": d,
                 "auc": a, "logloss": 0.5 + a / 10} for i, (a, d) in enumerate(zip(aucs, diverged))]
        return {"variant": variant, "members": rows, "summary": {"0.7" if variant == "smooth" else "0": {}}}

    finals = {"orig": final("orig", [0.78, 0.79, 0.80], [False] * 3),
              "smooth": final("smooth", [0.81, 0.50, 0.83], [False, True, False])}
    table = results_table(finals, ks=())
    kept = np.array([0.81, 0.83])
    row = next(line for line in table.splitlines() if line.startswith("| smooth"))
    assert "[1 of 3 diverged]" in row
    assert f"{100 * kept.mean():.2f} ± {100 * kept.std(ddof=1):.2f}" in row
    delta = next(line for line in table.splitlines() if line.startswith("| Δ%"))
    assert f"{100 * (kept.mean() - 0.79) / 0.79:+.2f}" in delta
    assert "left out of the means and Δ%: smooth (lambda_r=0.7) seed1" in table
