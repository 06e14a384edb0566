"""Reliability of the CLIs on a new user's mistakes: no input file is ever overwritten (every CLI
with an output path, aimed at its inputs), data that cannot be evaluated is refused before any run
directory exists, config / runs-dir mistakes give one line, silently accepted mistakes are named,
and a run on one's own data is named after the data and predicted with its own column names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import benchmarks.model_step
import benchmarks.profile_epoch
import benchmarks.sharding
import benchmarks.vs_torch
from experiments import compare_runs
from experiments import main as train_cli
from experiments.bandwidth import sweep as bandwidth
from experiments.configs import ConfigError, load_config
from experiments.grid import GRID_LIMIT, check_grid_size, grid_members
from experiments.grid_report import edge_notes
from experiments.mechanism import study as mechanism
from experiments.report import paper as report
from lipctr import predict
from lipctr.data.split import split_sizes
from tests.cli_support import one_error
from tests.data_files import write_string_id_ratings

SMALL = ["--config", "widedeep_ml100k", "--epochs", "1", "--seeds", "2020", "--no-progress", "--variant", "smooth",
         "--set", "model_hparams.mlp_hidden_size=[8]", "--set", "model_hparams.embedding_dim=4"]


def own(folder: Path, runs: Path, *extra) -> list[str]:
    return ["--data", str(folder), "--format", "csv", "--inter", "ratings.csv",
            "--columns", "userId=user_id,movieId=item_id", "--runs-dir", str(runs), *SMALL, *extra]


# ------------------------------------------------------------ 1. no input is ever overwritten


@pytest.fixture
def inputs(tmp_path):
    """A pairs file, a symlink to it, a users file, a fake run directory and an atomic-data folder."""
    pairs = tmp_path / "p.csv"
    pairs.write_text("user_id,item_id\n1,1\n2,3\n")
    (tmp_path / "link.csv").symlink_to(pairs)
    (tmp_path / "users.csv").write_text("user_id\n1\n")
    run = tmp_path / "run"
    (run / "smooth").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "smooth" / "metrics.csv").write_text("member,epoch\n")
    data = tmp_path / "ml"
    data.mkdir()
    for name in ("ml-100k.inter", "ml-100k.user", "ml-100k.item"):
        (data / name).write_text("x\n")
    files = [pairs, tmp_path / "users.csv", run / "config.json", run / "smooth" / "metrics.csv",
             *(data / n for n in ("ml-100k.inter", "ml-100k.user", "ml-100k.item"))]
    return tmp_path, {f: f.read_bytes() for f in files}


def cli_cases(t: Path):
    """(name, main, argv) of every CLI with an output path, each output aimed at one of its inputs."""
    run = str(t / "run")
    return [
        ("predict --out = --pairs", predict.main, [run, "--pairs", str(t / "p.csv"), "--out", str(t / "p.csv")]),
        ("predict --out = link to --pairs", predict.main, [run, "--pairs", str(t / "p.csv"), "--out",
                                                           str(t / "link.csv")]),
        ("predict --pairs link, --out its target", predict.main,
         [run, "--pairs", str(t / "link.csv"), "--out", str(t / "p.csv")]),
        ("predict --out = --users-file", predict.main,
         [run, "--recommend", "--users-file", str(t / "users.csv"), "--out", str(t / "users.csv")]),
        ("predict --out in RUN_DIR", predict.main,
         [run, "--pairs", str(t / "p.csv"), "--out", str(t / "run" / "smooth" / "metrics.csv")]),
        ("compare_runs --csv in a run", compare_runs.main,
         [run, run, "--csv", str(t / "run" / "smooth" / "metrics.csv")]),
        ("report --out = a run file", report.main, [run, "--out", str(t / "run" / "config.json")]),
        ("main --runs-dir = a data file", train_cli.main, ["--runs-dir", str(t / "p.csv"), *SMALL]),
        ("main --runs-dir below a data file", train_cli.main, ["--runs-dir", str(t / "p.csv" / "runs"), *SMALL]),
        ("bandwidth --runs-dir below a data file", bandwidth.main, ["--runs-dir", str(t / "p.csv" / "runs")]),
        ("bandwidth --runs-dir = a file", bandwidth.main, ["--runs-dir", str(t / "p.csv")]),
        ("mechanism --runs-dir = a file", mechanism.main, ["--runs-dir", str(t / "p.csv")]),
        ("profile_epoch --json = a --data file", benchmarks.profile_epoch.main,
         ["--data", str(t / "ml"), "--json", str(t / "ml" / "ml-100k.inter")]),
        ("vs_torch --json = a --data file", benchmarks.vs_torch.main,
         ["--data", str(t / "ml"), "--json", str(t / "ml" / "ml-100k.user")]),
        ("sharding --json in --root", benchmarks.sharding.main,
         ["--root", str(t / "ml"), "--json", str(t / "ml" / "ml-100k.item")]),
        ("sharding --root = a file", benchmarks.sharding.main, ["--root", str(t / "p.csv")]),
        ("model_step --json = a folder", benchmarks.model_step.main, ["--json", str(t / "ml")]),
    ]


def test_every_cli_refuses_an_output_aimed_at_its_inputs(inputs, capsys):
    folder, before = inputs
    for name, main, argv in cli_cases(folder):
        line = one_error(capsys, main(argv))
        assert any(flag in line for flag in ("--out", "--csv", "--runs-dir", "--json", "--root")), (name, line)
        for path, content in before.items():
            assert path.read_bytes() == content, (name, path)
        assert not (folder / "runs").exists() and not (folder / "p.csv").is_symlink()
    assert sorted(p.name for p in folder.iterdir()) == ["link.csv", "ml", "p.csv", "run", "users.csv"]


# ------------------------------------------------------------ 2. data that cannot be evaluated


def test_data_without_negatives_is_refused_before_any_run_directory(tmp_path, capsys):
    frame = write_string_id_ratings(tmp_path / "allpos", ratings=(4, 6))
    line = one_error(capsys, train_cli.main(own(tmp_path / "allpos", tmp_path / "runs", "--set",
                                                "eval.num_negatives=1")))
    train = split_sizes(len(frame), (0.8, 0.1, 0.1))[0]
    assert "the train split has no negative" in line
    assert f"{train:,} of {train:,} have label 1" in line and "ratings: 4, 5" in line
    assert not (tmp_path / "runs").exists()


def test_twelve_rows_are_refused_as_too_small(tmp_path, capsys):
    folder = tmp_path / "tiny"
    write_string_id_ratings(folder)
    frame = pd.read_csv(folder / "ratings.csv").sample(12, random_state=0)
    frame.to_csv(folder / "ratings.csv", index=False)
    for extra in (["--set", "eval.num_negatives=1"], []):
        line = one_error(capsys, train_cli.main(own(folder, tmp_path / "runs", *extra)))
        assert "data set 'tiny' is too small" in line and "10/1/1" in line, line
    assert not (tmp_path / "runs").exists()


def test_too_few_items_for_the_ranking_names_the_raw_user(tmp_path, capsys):
    frame = write_string_id_ratings(tmp_path / "few")
    line = one_error(capsys, train_cli.main(own(tmp_path / "few", tmp_path / "runs")))  # num_negatives 100 > 25 items
    # brute force: items each user never interacted with (over all splits: the whole file)
    unseen = 25 - frame.groupby("userId")["movieId"].nunique()
    most = int(unseen.min())
    assert f"leaving {most};" in line and f"--set eval.num_negatives={most}" in line
    user = line.split("user '")[1].split("'")[0]
    assert user.startswith("u") and unseen[user] == most  # the raw id, not the internal one
    assert "too small for the ranking evaluation" in line and not (tmp_path / "runs").exists()


# ------------------------------------------------------------ 3. config and runs-dir tracebacks


@pytest.mark.parametrize("base", ["3", '"x.toml"', '"dcnv2_nope"'])
def test_a_toml_base_that_is_no_config_name_is_one_line(tmp_path, base):
    path = tmp_path / "c.toml"
    path.write_text(f"base = {base}\n")
    with pytest.raises(ConfigError, match=r"key 'base' must name a built-in config <model>_<dataset>") as error:
        load_config(str(path))
    assert "or a .toml file" not in str(error.value)


# ------------------------------------------------------------ 4. silently accepted mistakes


def test_a_columns_entry_naming_no_column_is_refused(tmp_path, capsys):
    write_string_id_ratings(tmp_path / "d")
    argv = own(tmp_path / "d", tmp_path / "runs", "--columns", "ratng=rating")
    line = one_error(capsys, train_cli.main(argv))
    assert "renames ['ratng'], but no file has such a column" in line and "'userId'" in line


def test_duplicate_rows_are_reported_with_the_kept_one(tmp_path, capsys):
    frame = write_string_id_ratings(tmp_path / "dups")
    extra = frame.head(3).assign(rating=1)  # same pairs, same timestamps: the later rows (these) are kept
    pd.concat([frame, extra]).to_csv(tmp_path / "dups" / "ratings.csv", index=False)
    code = train_cli.main(own(tmp_path / "dups", tmp_path / "runs", "--set", "eval.num_negatives=500"))
    err = capsys.readouterr().err
    assert code == 2 and "error: data set 'dups' is too small for the ranking" in err  # stops before training
    (warning,) = [line for line in err.splitlines() if line.startswith("warning:")]
    assert "3 duplicate (user_id, item_id) rows dropped" in warning and "the later row" in warning
    assert "line 2 (user 'u1', item '" + frame.movieId[0] + "') was dropped" in warning


def test_a_large_grid_is_refused_before_anything_is_loaded(tmp_path, capsys):
    values = ",".join(f"{1e-4 * (i + 1):.6g}" for i in range(1001))
    code = train_cli.main(["--runs-dir", str(tmp_path / "runs"), *SMALL, "--grid", f"train.learning_rate={values}"])
    line = one_error(capsys, code)
    assert "1,001 members" in line and f"limit of {GRID_LIMIT:,}" in line and "--grid-limit 1001" in line
    assert not (tmp_path / "runs").exists()


def test_grid_member_count_against_the_product():
    config = load_config("dcnv2_ml100k")
    config = {**config, "seeds": [1, 2, 3], "grid": {"train.learning_rate": [1e-3, 2e-3], "loss.lambda_r": [.1, .5,
                                                                                                            .9]},
              "grid_programs": {"model_hparams.embedding_dim": [8, 16]}}
    assert grid_members(config) == {"orig": 2 * 2 * 3, "smooth": 2 * 3 * 2 * 3}
    check_grid_size(config, 36)
    check_grid_size(config, 0)
    with pytest.raises(ConfigError, match="variant smooth would train 36 members"):
        check_grid_size(config, 35)


def test_edge_notes_name_a_chosen_value_at_the_end_of_its_range():
    records = [{"variant": "smooth", "point": {"train.learning_rate": lr, "loss.lambda_r": lam}}
               for lr in (1e-3, 5e-3, 1e-2) for lam in (0.1, 0.5, 0.9)]
    chosen = {"smooth": {"point": {"train.learning_rate": 1e-2, "loss.lambda_r": 0.5}}}
    (note,) = edge_notes(records, chosen)
    assert "train.learning_rate=0.01 is the largest value of its grid (0.001..0.01)" in note
    chosen = {"smooth": {"point": {"train.learning_rate": 5e-3, "loss.lambda_r": 0.1}}}
    (note,) = edge_notes(records, chosen)
    assert "loss.lambda_r=0.1 is the smallest" in note


def test_predict_refuses_recommend_options_with_pairs(inputs, capsys):
    folder, _ = inputs
    for extra in (["--users", "1"], ["--users-file", str(folder / "users.csv")], ["--k", "5"], ["--include-seen"]):
        line = one_error(capsys, predict.main([str(folder / "run"), "--pairs", str(folder / "p.csv"), *extra,
                                               "--out", str(folder / "o.csv")]))
        assert line.startswith(f"error: {extra[0]}: only with --recommend"), line


# ------------------------------------------------------------ 6. a run on one's own data, then predict


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own")
    frame = write_string_id_ratings(folder / "mydata")
    runs = folder / "runs"
    assert train_cli.main(own(folder / "mydata", runs, "--set", "eval.num_negatives=3")) == 0
    assert sorted(p.name for p in runs.iterdir()) == ["widedeep_mydata"]
    (run,) = (runs / "widedeep_mydata").iterdir()
    return run, frame, folder


def test_predict_accepts_the_runs_own_column_names(own_run, capsys):
    run, frame, folder = own_run
    pairs = frame[["userId", "movieId"]].head(20)
    pairs.to_csv(folder / "raw.csv", index=False)
    pairs.rename(columns={"userId": "user_id", "movieId": "item_id"}).to_csv(folder / "renamed.csv", index=False)
    for name in ("raw", "renamed"):
        assert predict.main([str(run), "--pairs", str(folder / f"{name}.csv"), "--out", str(folder / f"{name}_out.csv"),
                             "--no-progress"]) == 0, capsys.readouterr().err
    raw, renamed = (pd.read_csv(folder / f"{n}_out.csv") for n in ("raw", "renamed"))
    assert list(raw.columns[:2]) == ["user_id", "item_id"] and raw["user_id"].tolist() == pairs["userId"].tolist()
    np.testing.assert_array_equal(raw["probability"].to_numpy(), renamed["probability"].to_numpy())
    assert (folder / "raw.csv").read_text() == pairs.to_csv(index=False)


def test_recommend_says_when_k_exceeds_the_catalogue_and_unknown_users_warn(own_run, capsys):
    run, frame, folder = own_run
    code = predict.main([str(run), "--recommend", "--users", "u1,nobody", "--k", "100", "--out",
                         str(folder / "top.csv"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    top = pd.read_csv(folder / "top.csv", dtype=str)
    assert "--k 100: 2 of 2 users got fewer than 100 items; the catalogue has 25 items" in err
    assert "not in the run's vocabulary (first: 'nobody')" in err
    counts = top.groupby("user_id").size()
    assert set(counts.index) == {"u1", "nobody"} and counts.max() <= 25
