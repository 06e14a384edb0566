"""Hyper-parameter grids, the CLI half: bad grids stop naming the key before any run
directory exists; waves (--max-members) equal one program; the selection uses validation, never
test; grid.csv's statistics; --select-lambda end to end."""

from __future__ import annotations

import json

import jax
import numpy as np
import pandas as pd
import pytest

from experiments.configs import ConfigError, load_config, merge, validate
from experiments.grid import members_that_fit, one_member_bytes, run_grid, wave_size, waves
from experiments.grid_report import select, write_grid_outputs
from experiments.main import main
from experiments.report.tables import compare, lambda_table
from experiments.run import build_trainer
from lipctr.ranking import ranking_candidates
from lipctr.train import to_device
from tests.cli_support import SMALL
from tests.data_files import write_ratings
from tests.test_experiments import tiny_config
from tests.tiny_data import tiny_dataset


@pytest.mark.parametrize("flags, message", [
    (["--grid", "train.lr=1e-3,5e-3"], "unknown grid key 'train.lr'"),
    (["--grid", "model_hparams.embedding_dim=8,16"], "grid key 'model_hparams.embedding_dim' changes a shape"),
    (["--grid", "model_hparams.mlp_hidden_size=[[8], [16]]"],
     "grid key 'model_hparams.mlp_hidden_size' changes a shape"),
    (["--grid", "train.learning_rate="], "--grid key 'train.learning_rate': empty list"),
    (["--grid", "train.learning_rate=[]"], "grid key 'train.learning_rate': expected a non-empty list"),
    (["--grid", "train.learning_rate=1e-3,fast"], "--grid key 'train.learning_rate': 'fast' is not"),
    (["--grid", 'train.weight_decay=0.1,"x"'], "grid key 'train.weight_decay': value 'x' is not a number"),
    (["--grid", "loss.lambda_r=0.1,0.5", "--grid", "loss.lambda_r=0.9"], "--grid key 'loss.lambda_r': given twice"),
    (["--grid", "train.learning_rate=1e-3", "--grid-programs", "train.learning_rate=1e-2"],
     "--grid-programs key 'train.learning_rate': given twice"),
    (["--grid", "loss.lambda_r=0.1,1.5"], "grid key 'loss.lambda_r' value 1.5: lambda_r values must lie in [0, 1]"),
    (["--grid", "loss.lambda_r=-0.2"], "grid key 'loss.lambda_r' value -0.2"),
    (["--grid", "loss.lambda_r=0.1,0.1"], "grid key 'loss.lambda_r': lists 0.1 more than once"),
    (["--grid", "train.learning_rate=-1e-3"], "grid key 'train.learning_rate' value -0.001"),
    (["--grid", "model_hparams.dropout_prob=0.1,1.5"],
     "grid key 'model_hparams.dropout_prob' value 1.5: 1.5 must lie in"),
    (["--config", "nfm_ml100k", "--grid", "model_hparams.reg_weight=0.1"],
     "unknown grid key 'model_hparams.reg_weight'"),
    (["--grid-programs", "model_hparams.embedding_dim=8,2.5"],
     "grid_programs key 'model_hparams.embedding_dim' value 2.5"),
    (["--grid", "loss.lambda_r=0.1", "--set", "lambda_sweep=[0.3,0.5]"],
     "grid key 'loss.lambda_r' and key 'lambda_sweep'"),
    (["--grid", "loss.lambda_r=0.1", "--variant", "orig"], "grid key 'loss.lambda_r' needs the smooth variant"),
    (["--grid", "train.learning_rate=1e-3", "--select-lambda"], "'select_lambda' (--select-lambda) cannot be combined"),
    (["--grid", "lambda_r"], "--grid 'lambda_r': expected KEY=VALUES"),
    (["--max-members", "-1"], "key 'max_members' must be >= 0"),
])
def test_bad_grids_stop_naming_the_key_and_create_no_run_directory(tmp_path, capsys, flags, message):
    runs = tmp_path / "runs"
    assert main(["--config", "dcnv2_ml100k", "--runs-dir", str(runs), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not runs.exists()


def test_toml_grid_tables_nested_or_dotted_and_a_key_given_twice(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('base = "dcnv2_ml100k"\n[grid]\n"loss.lambda_r" = [0.1, 0.5]\n'
                    '[grid.train]\nlearning_rate = [1e-3, 5e-3]\n'
                    '[grid_programs.model_hparams]\nembedding_dim = [8, 16]\n')
    config = load_config(str(path))
    assert config["grid"] == {"loss.lambda_r": [0.1, 0.5], "train.learning_rate": [1e-3, 5e-3]}
    assert config["grid_programs"] == {"model_hparams.embedding_dim": [8, 16]}
    assert validate(config) == config  # a stored config.json validates to itself (resume)
    path.write_text('[grid]\n"train.learning_rate" = [1e-3]\n[grid.train]\nlearning_rate = [5e-3]\n')
    with pytest.raises(ConfigError, match=r"grid.toml: grid key 'train.learning_rate' is given twice"):
        load_config(str(path))
    path.write_text('[grid]\n"model_hparams.embedding_dim" = [8, 16]\n')
    with pytest.raises(ConfigError, match="grid key 'model_hparams.embedding_dim' changes a shape"):
        load_config(str(path))


def test_autoint_dropout_probs_take_one_per_member_rate():
    config = load_config("autoint_ml100k")
    grid = validate(merge(config, {"grid": {"model_hparams.dropout_probs": [0.1, 0.3]}}))["grid"]
    assert grid == {"model_hparams.dropout_probs": [0.1, 0.3]}


def test_wave_plans_cover_every_member_once_within_the_limit():
    points = [{"loss.lambda_r": x} for x in (0.1, 0.3, 0.5)]
    seeds = [1, 2, 3, 4]
    for limit in (0, 1, 3, 4, 5, 8, 12, 100):
        plan = waves(points, seeds, limit)
        members = [(p["loss.lambda_r"], s) for wave_points, wave_seeds in plan for p in wave_points for s in wave_seeds]
        assert sorted(members) == sorted((p["loss.lambda_r"], s) for p in points for s in seeds)
        assert all(len(w[0]) * len(w[1]) <= (limit or 12) for w in plan)
    assert len(waves(points, seeds, 0)) == 1 and len(waves(points, seeds, 8)) == 2 and len(waves(points, seeds, 3)) == 6
    assert members_that_fit(10_000, 1_000) == 8 and members_that_fit(10, 1_000) == 1


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_waves_give_the_same_members_as_one_program(tmp_path):
    dataset = tiny_dataset()
    candidates = ranking_candidates(dataset, "test", 20, 0, "positive")
    config = validate(merge(tiny_config(epochs=2), {"grid": {"loss.lambda_r": [0.3, 0.9]}}))
    one = run_grid(config, dataset, "smooth", tmp_path / "one", candidates, progress=False)
    waved = run_grid({**config, "max_members": 3}, dataset, "smooth", tmp_path / "waves", candidates, progress=False)
    assert sorted({r["output"] for r in one}) == ["smooth"]
    assert sorted({r["output"] for r in waved}) == ["smooth_w1", "smooth_w2"]  # 2 points x 2 seeds, <= 3 a wave
    key = lambda r: (r["point"]["loss.lambda_r"], r["seed"])  # noqa: E731
    assert sorted(map(key, one)) == sorted(map(key, waved)) == [(0.3, 2020), (0.3, 2021), (0.9, 2020), (0.9, 2021)]
    waved = {key(r): r for r in waved}
    for r in one:
        w = waved[key(r)]
        assert w["best_epoch"] == r["best_epoch"]
        for metric in ("best_valid_auc", "valid_logloss", "auc", "logloss", "ndcg@10"):
            assert w[metric] == pytest.approx(r[metric], abs=1e-5), metric
    assert len({r["auc"] for r in one}) > 1  # the members differ, so equality above means something
    again = run_grid({**config, "max_members": 3}, dataset, "smooth", tmp_path / "waves", candidates, progress=False)
    assert {key(r): r for r in again} == waved  # finished waves are read back (a resume), not trained again


def test_automatic_wave_size_is_all_at_once_on_cpu_and_one_member_bytes_cover_its_state():
    dataset, config = tiny_dataset(), tiny_config(epochs=1)
    assert wave_size(config, dataset) == 0 and wave_size({**config, "max_members": 3}, dataset) == 3
    trainer = build_trainer(config, dataset, "smooth")
    state, stopping = trainer.init(to_device(dataset.train)["features"], [2020], [0.7])
    nbytes = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree))  # noqa: E731
    assert one_member_bytes(config, dataset, "smooth") >= 2 * nbytes(state) + nbytes(stopping)  # in, out, temporaries


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_shape_changing_keys_are_programs_run_one_after_another(tmp_path):
    dataset = tiny_dataset()
    candidates = ranking_candidates(dataset, "test", 20, 0, "positive")
    config = validate(merge(tiny_config(epochs=1), {"seeds": [2020], "grid": {"loss.lambda_r": [0.3, 0.9]},
                                                     "grid_programs": {
                                                         "model_hparams.mlp_hidden_size": [[8], [16, 16]]}}))
    records = run_grid(config, dataset, "smooth", tmp_path, candidates, progress=False)
    assert [(r["output"], r["point"]) for r in records] == [
        (f"smooth_p{i}", {"model_hparams.mlp_hidden_size": size, "loss.lambda_r": lam})
        for i, size in ((1, (8,)), (2, (16, 16))) for lam in (0.3, 0.9)]
    for i, size in ((1, [8]), (2, [16, 16])):
        schema = json.loads((tmp_path / f"smooth_p{i}" / "run_schema.json").read_text())
        assert schema["model"]["hparams"]["mlp_hidden_size"] == size  # each program built its own model


def record(variant, point, seed, valid, test, output="smooth"):
    return {"variant": variant, "point": point, "output": output, "member": f"seed{seed}_{point}", "seed": seed,
            "lambda_r": point.get("loss.lambda_r", 0.0), "best_valid_auc": valid, "valid_logloss": 1 - valid,
            "auc": test, "logloss": 1 - test, "ndcg@10": test / 2, "best_epoch": seed % 3 + 1, "epochs": 4,
            "diverged": False}


def test_the_selection_uses_validation_never_test(tmp_path):
    # A has the best test AUC of every seed, B the best validation AUC: B must be chosen
    a, b, c = ({"loss.lambda_r": x} for x in (0.1, 0.5, 0.9))
    records = [record("smooth", a, s, 0.70, 0.90) for s in (1, 2, 3)]
    records += [record("smooth", b, s, v, 0.60) for s, v in ((1, 0.80), (2, 0.78), (3, 0.79))]
    records += [record("smooth", c, s, v, 0.95) for s, v in ((1, 0.95), (2, 0.40), (3, 0.41))]  # mean valid 0.587
    chosen = select(records)["smooth"]
    assert chosen["point"] == b and {m["seed"] for m in chosen["members"]} == {1, 2, 3}
    write_grid_outputs(tmp_path, records)
    selected = json.loads((tmp_path / "selected.json").read_text())["smooth"]
    assert selected["point"] == b and selected["test"]["auc"]["mean"] == pytest.approx(0.60)
    assert selected["valid_auc"]["mean"] == pytest.approx(0.79)
    assert (tmp_path / "grid_smooth.png").stat().st_size > 0  # a 1-D grid: a line plot


def test_grid_csv_statistics_equal_numpy_over_the_members(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for lr in (1e-3, 5e-3):
        for lam in (0.1, 0.9):
            for seed in (1, 2, 3):
                records.append(record("smooth", {"train.learning_rate": lr, "loss.lambda_r": lam}, seed,
                                      rng.uniform(0.6, 0.8), rng.uniform(0.6, 0.8)))
        for seed in (1, 2, 3):
            records.append(record("orig", {"train.learning_rate": lr}, seed, rng.uniform(0.6, 0.8),
                                  rng.uniform(0.6, 0.8), "orig"))
    write_grid_outputs(tmp_path, records)
    table = pd.read_csv(tmp_path / "grid.csv")
    assert len(table) == 6 and list(table.columns[:3]) == ["variant", "train.learning_rate", "loss.lambda_r"]
    point_of = lambda variant, lr, lam: (variant, lr, None if lam is None or np.isnan(lam) else lam)  # noqa: E731
    for _, row in table.iterrows():
        members = [r for r in records if point_of(r["variant"], r["point"]["train.learning_rate"],
                                             r["point"].get("loss.lambda_r"))
                   == point_of(row["variant"], row["train.learning_rate"], row["loss.lambda_r"])]
        assert len(members) == 3 == row["seeds"]
        for column, key in (("valid_auc", "best_valid_auc"), ("test_auc", "auc"), ("test_logloss", "logloss"),
                            ("valid_logloss", "valid_logloss"), ("best_epoch", "best_epoch")):
            values = np.array([m[key] for m in members])
            assert row[f"{column}_mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert row[f"{column}_std"] == pytest.approx(values.std(ddof=1), rel=1e-12)
    assert (tmp_path / "grid_smooth.png").stat().st_size > 0  # a 2-D grid: a heatmap


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_select_lambda_reports_smooth_at_the_validation_best_lambda(tmp_path, capsys):
    folder = tmp_path / "mine"
    write_ratings(folder)
    runs = tmp_path / "runs"
    code = main(["--config", "dcnv2_ml100k", "--data", str(folder), "--format", "csv", "--inter", "ratings.csv",
                 "--item", "movies.csv", "--columns", "userId=user_id,movieId=item_id", "--field-types",
                 "genres=token_seq", "--set", 'data.seq_separator="|"', "--runs-dir", str(runs), *SMALL,
                 "--seeds", "2020,2021", "--epochs", "3", "--set", "train.learning_rate=0.05",
                 "--select-lambda", "--set", "lambda_sweep=[0.0,1.0]"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (run_dir,) = (runs / "dcnv2_mine").iterdir()  # a run on own data is named after its folder
    sweep = json.loads((run_dir / "lambda_sweep" / "final.json").read_text())["members"]
    means = {lam: np.mean([m["best_valid_auc"] for m in sweep if m["lambda_r"] == lam]) for lam in (0.0, 1.0)}
    best = max(means, key=means.get)
    assert len(sweep) == 4 and means[0.0] != means[1.0]
    assert f"| smooth, lambda_r chosen on validation (lambda_r={best:g}) |" in captured.out
    assert "| smooth (lambda_r=0.7) |" in captured.out  # the config's fixed lambda_r beside it
    assert json.loads((run_dir / "selected.json").read_text())["lambda_sweep"]["point"] == {"loss.lambda_r": best}
    assert (run_dir / "grid.csv").is_file() and (run_dir / "grid_lambda_sweep.png").is_file()


def test_report_table1_puts_smooth_at_the_chosen_lambda_beside_the_fixed_one():
    rng = np.random.default_rng(2)
    member = lambda seed, lam: {"member": f"seed{seed}_lambda{lam:g}", "seed": seed, "lambda_r": lam,  # noqa: E731
                                "auc": float(rng.uniform(0.7, 0.8))}
    finals = {"orig": {"members": [member(s, 0.0) for s in (1, 2, 3)]},
              "smooth": {"members": [member(s, 0.7) for s in (1, 2, 3)]},
              "lambda_sweep": {"members": [member(s, lam) for lam in (0.1, 0.3) for s in (1, 2, 3)]}}
    selected = {"lambda_sweep": {"point": {"loss.lambda_r": 0.3},
                                 "members": [{"output": "lambda_sweep", "member": f"seed{s}_lambda0.3"}
                                             for s in (1, 2, 3)]}}
    run = {"config": {"model": "dcnv2", "dataset": "ml100k", "loss": {"lambda_r": 0.7}}, "finals": finals,
           "selected": selected}
    table = compare([run], ("auc",))
    assert list(table["lambda_r_chosen_on"]) == ["config", "validation"] and list(table["lambda_r"]) == [0.7, 0.3]
    for (_, row), lam, final in zip(table.iterrows(), (0.7, 0.3), ("smooth", "lambda_sweep")):
        smooth = [m["auc"] for m in finals[final]["members"] if m["lambda_r"] == lam]
        assert row["smooth_mean"] == pytest.approx(np.mean(smooth), rel=1e-12)
        assert row["orig_mean"] == pytest.approx(np.mean([m["auc"] for m in finals["orig"]["members"]]), rel=1e-12)
    sweep = finals.pop("lambda_sweep")["members"]  # Figure 4 from a sweep trained in two waves
    finals.update({"lambda_sweep_w1": {"members": sweep[:4]}, "lambda_sweep_w2": {"members": sweep[4:]}})
    finals["orig"]["summary"] = {"0": {"auc": {"mean": 0.75}}}
    figure4 = lambda_table([run])
    assert list(figure4["lambda_r"]) == [0.1, 0.3]
    for _, row in figure4.iterrows():
        auc = [m["auc"] for m in sweep if m["lambda_r"] == row["lambda_r"]]
        assert (row["auc_mean"], row["auc_std"]) == pytest.approx((np.mean(auc), np.std(auc, ddof=1)), rel=1e-12)


@pytest.mark.slow  # ~30 s; the grid CLI is covered by test_member_hparams and test_reliability in the default suite
def test_learning_rate_x_lambda_grid_end_to_end(tmp_path, capsys):
    folder = tmp_path / "mine"
    write_ratings(folder)
    runs = tmp_path / "runs"
    code = main(["--config", "dcnv2_ml100k", "--data", str(folder), "--format", "csv", "--inter", "ratings.csv",
                 "--item", "movies.csv", "--columns", "userId=user_id,movieId=item_id", "--field-types",
                 "genres=token_seq", "--set", 'data.seq_separator="|"', "--runs-dir", str(runs), *SMALL,
                 "--epochs", "2", "--grid", "train.learning_rate=1e-3,5e-2", "--grid", "loss.lambda_r=0.3,0.9"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (run_dir,) = (runs / "dcnv2_mine").iterdir()  # a run on own data is named after its folder
    table = pd.read_csv(run_dir / "grid.csv")
    assert list(table["variant"]) == ["orig"] * 2 + ["smooth"] * 4  # orig: the grid without lambda_r
    selected = json.loads((run_dir / "selected.json").read_text())
    for variant, size in (("orig", 2), ("smooth", 4)):
        members = json.loads((run_dir / variant / "final.json").read_text())["members"]
        assert len(members) == size and len({m["auc"] for m in members}) == size  # the points really differ
        valid = {}
        for m in members:
            valid.setdefault(tuple(sorted(m["hparams"].items())), []).append(m["best_valid_auc"])
        best = max(valid, key=lambda point: np.mean(valid[point]))
        assert tuple(sorted(selected[variant]["point"].items())) == best
    assert "chosen on validation" in captured.out
    assert (run_dir / "grid_orig.png").is_file() and (run_dir / "grid_smooth.png").is_file()
