"""The experiment CLI on users' own data: `--data DIR --format csv ...` trains
on the user's file end to end and leaves the folder as it was (but for cache/); `--data DIR`
alone never fetches MovieLens into DIR; data flags and [data] keys are validated up front,
errors naming the flag or key."""

from __future__ import annotations

import json

import jax
import numpy as np
import pandas as pd
import pytest

from experiments import data_source
from experiments.cli import parse_args, resolve_config
from experiments.configs import ConfigError, load_config
from experiments.main import main
from lipctr.data import DataError
from lipctr.data.split import random_split, split_sizes
from tests.cli_support import SMALL
from tests.data_files import ratings_rows, snapshot, write_ratings


@pytest.fixture(autouse=True)
def no_fetch_anywhere(no_fetch):
    """Every test here: fetching ML-100K fails the test, the datasets root is empty."""


def test_own_csv_trains_end_to_end_and_the_folder_is_left_as_it_was(tmp_path, capsys):
    folder = tmp_path / "mine"
    frame = write_ratings(folder)
    before = snapshot(folder)
    runs = tmp_path / "runs"
    code = main(["--config", "dcnv2_ml100k", "--data", str(folder), "--format", "csv", "--inter", "ratings.csv",
                 "--item", "movies.csv", "--columns", "userId=user_id,movieId=item_id",
                 "--field-types", "genres=token_seq", "--set", 'data.seq_separator="|"', "--variant", "smooth",
                 "--runs-dir", str(runs), *SMALL])
    err = capsys.readouterr().err
    assert code == 0, err
    n = len(frame)
    train, valid, test = split_sizes(n, (0.8, 0.1, 0.1))
    assert f"mine: {n:,} interactions, train/valid/test {train:,}/{valid:,}/{test:,}" in err
    assert err.splitlines()[0].startswith(f"devices: {len(jax.devices())} x cpu")  # once the checks have passed
    assert sorted(p.name for p in runs.iterdir()) == ["dcnv2_mine"]  # named after the data, not the config
    (run_dir,) = (runs / "dcnv2_mine").iterdir()
    assert f"run directory {run_dir}" in err
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data_path"] == str(folder)
    assert config["data"] == {"format": "csv", "files": {"inter": "ratings.csv", "item": "movies.csv"},
                              "columns": {"userId": "user_id", "movieId": "item_id"},
                              "field_types": {"genres": "token_seq"}, "seq_separator": "|"}
    final = json.loads((run_dir / "smooth" / "final.json").read_text())
    assert final["num_outputs"] == 5 and len(final["members"]) == 1 and final["timing"]["epochs"] == 1
    assert 0.0 <= final["members"][0]["auc"] <= 1.0
    test_rows = random_split(n, (0.8, 0.1, 0.1), 2020)[2]  # no duplicates, no k-core: rows in file order
    with np.load(run_dir / "smooth" / "predictions.npz") as predictions:
        assert predictions["probability"].shape == (1, test) and predictions["logits"].shape == (1, test, 5)
        assert np.array_equal(predictions["rating"], frame["rating"].to_numpy()[test_rows])
    assert snapshot(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == ["cache", "movies.csv", "ratings.csv"]


def test_data_dir_alone_never_swaps_in_movielens(tmp_path, capsys):
    folder = tmp_path / "mine"
    write_ratings(folder)
    before = snapshot(folder)
    runs = tmp_path / "runs"
    assert main(["--config", "dcnv2_ml100k", "--data", str(folder), "--runs-dir", str(runs), *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert f"{folder} lacks ml-100k.inter, ml-100k.user, ml-100k.item" in err and "--format csv" in err
    assert snapshot(folder) == before and not (folder / "cache").exists() and not runs.exists()
    missing = tmp_path / "nowhere"
    assert main(["--config", "dcnv2_ml100k", "--data", str(missing), "--runs-dir", str(runs), *SMALL]) == 2
    assert f"folder {missing} does not exist" in capsys.readouterr().err
    assert not missing.exists() and not runs.exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--format", "csv"], "data.format 'csv' (--format) needs the folder of your files: data_path (--data DIR)"),
        (["--data", "{dir}", "--inter", "ratings.csv"],
         "key 'data.files' describes your own files: give data.format (--format)"),
        (["--data", "{dir}", "--format", "atomic", "--inter", "ratings.csv"], "--format atomic reads NAME.inter"),
        (["--data", "{dir}", "--format", "csv", "--columns", "userId"],
         "--columns 'userId': expected comma-separated NAME=VALUE"),
        (["--data", "{dir}", "--format", "csv", "--field-types", "genres=list"],
         "field_types {'genres': 'list'} not in"),
        (["--set", "data.k_cor=5"], "unknown key 'data.k_cor'"),
        (["--set", "data.k_core=\"5\""], "key 'data.k_core' must be int, got str"),
        (["--set", "data.path=\"/x\""], "the folder is the top-level key 'data_path' (--data DIR)"),
        (["--set", "data.format=\"xls\""], "key 'data.format' must be one of csv, parquet, atomic, grouplens"),
        (["--data", "{dir}", "--format", "csv", "--set", "data.threshold=5"],
         "threshold 5 must be below num_ratings 5"),
        (["--data", "{dir}", "--format", "csv", "--inter", "rates.csv"], "lacks rates.csv"),
        (["--data", "{dir}", "--format", "csv", "--inter", "ratings.csv"], "lacks column(s) ['user_id'"),
    ],
)
def test_bad_data_flags_are_one_line_errors_naming_the_flag(tmp_path, capsys, flags, message):
    folder = tmp_path / "mine"
    write_ratings(folder)
    runs = tmp_path / "runs"
    argv = [f.format(dir=folder) for f in flags]
    assert main(["--config", "dcnv2_ml100k", "--runs-dir", str(runs), *argv, *SMALL]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not runs.exists()


def test_a_nameless_csv_column_stops_the_cli_before_any_run_directory(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    pd.DataFrame(ratings_rows(), columns=["user_id", "item_id", "rating"]).to_csv(folder / "r.csv")  # index kept
    runs = tmp_path / "runs"
    assert main(["--data", str(folder), "--format", "csv", "--inter", "r.csv", "--runs-dir", str(runs), *SMALL]) == 2
    assert f"{folder / 'r.csv'}: column 1 of the header has an empty name" in capsys.readouterr().err
    assert not runs.exists()


def test_a_toml_data_table_and_atomic_own_data(tmp_path, capsys):
    folder = tmp_path / "shop"
    folder.mkdir()
    rows = ratings_rows()
    lines = ["uid:token\titem_id:token\trating:float\tsession:token"]
    lines += [f"u{u}\t{i}\t{r}\ts{n}" for n, (u, i, r) in enumerate(rows)]
    (folder / "shop.inter").write_text("\n".join(lines) + "\n")
    path = tmp_path / "exp.toml"
    path.write_text(f'base = "widedeep_ml1m"\ndata_path = "{folder}"\n[data]\nformat = "atomic"\nk_core = 2\n'
                    '[data.columns]\nuid = "user_id"\n')
    config = resolve_config(parse_args(["--config", str(path)]))
    data = data_source.dataset_config(config)
    assert (data.name, data.format, data.path, data.k_core, data.columns) == (
        "shop", "atomic", str(folder), 2, {"uid": "user_id"})
    dataset = data_source.load(config)
    assert dataset.stats["raw_interactions"] == len(rows) and dataset.schema.names == ("user_id", "item_id", "session")
    assert "warning: " in capsys.readouterr().err  # session: one value per interaction
    preset = data_source.dataset_config(load_config("widedeep_ml1m"))
    assert preset.name == "ml-1m" and preset.path is None and preset.k_core == 10
    path.write_text('base = "widedeep_ml1m"\n[data]\nk_core = -1\n')
    with pytest.raises(ConfigError, match=r"exp.toml: \[data\] table: .*k_core must be an int >= 0, got -1"):
        load_config(str(path))
    with pytest.raises(DataError, match="--inter NAME.inter"):
        data_source.apply_flags(config, parse_args(["--format", "atomic", "--inter", "a.inter", "--item", "a.item"]))


def test_grouplens_files_in_a_folder_of_ones_own(tmp_path):
    from lipctr.data import read_raw
    from tests.data_files import write_grouplens

    folder = write_grouplens(tmp_path / "ratings-2003")
    before = snapshot(folder)
    config = resolve_config(parse_args(["--config", "dcnv2_ml1m", "--data", str(folder), "--format", "grouplens"]))
    data = data_source.dataset_config(config)
    assert (data.name, data.format, data.k_core, data.load_col) == ("ratings-2003", "grouplens", 0, None)
    raw = read_raw(data)
    assert len(raw.inter) == 4 and {"gender", "genre"} <= set(raw.user.frame.columns) | set(raw.item.frame.columns)
    assert snapshot(folder) == before
