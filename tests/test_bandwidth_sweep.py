"""The supervision-bandwidth sweep (experiments.bandwidth) and the implicit-signal bucketing."""

import numpy as np
import pandas as pd
import pytest

from experiments.bandwidth import data as bwd
from experiments.bandwidth import measure as bwm
from experiments.bandwidth import report as bwr
from experiments.bandwidth import sweep as bw
from experiments.configs import ConfigError, merge, named_config, validate
from experiments.report import stats
from lipctr.data import DataConfig, load_dataset, synthetic_dataset
from lipctr.data.synthetic import SyntheticSizes
from lipctr.rating_buckets import signal_to_ratings

NS = (2, 3, 5, 10, 20)


@pytest.fixture(scope="module")
def tiny():
    return synthetic_dataset("tiny", 0, return_preference=True)


def test_binary_labels_identical_across_n_and_classes_follow_preference(tiny):
    dataset, preference = tiny
    datasets = bwd.bandwidth_datasets(dataset, preference, NS, 0.6)
    cut = np.quantile(preference["train"], 0.6)  # independent: the binary threshold on train
    for n, (data, buckets) in datasets.items():
        assert data.schema.num_ratings == n and data.schema.threshold == buckets.threshold
        for name, split in data.splits.items():
            np.testing.assert_array_equal(split.label, (preference[name] > cut).astype(np.float32))
            np.testing.assert_array_equal(split.label, (split.rating > data.schema.threshold).astype(np.float32))
            assert split.rating.min() >= 1 and split.rating.max() <= n
            order = np.argsort(preference[name], kind="stable")
            assert np.all(np.diff(split.rating[order]) >= 0)  # classes are monotone in the preference
            for field, values in split.features.items():
                assert values is dataset.splits[name].features[field]
        train_counts = np.bincount(data.train.rating, minlength=n + 1)[1:]
        assert train_counts.min() > 0 and set(np.unique(data.train.rating)) == set(range(1, n + 1))


def test_check_same_labels_rejects_a_different_binary_task(tiny):
    dataset, preference = tiny
    same = {n: d for n, (d, _) in bwd.bandwidth_datasets(dataset, preference, (2, 5), 0.6).items()}
    shifted, _ = bwd.rebucket(dataset, preference, 5, 0.5)
    with pytest.raises(ValueError, match=r"binary train labels differ between N=2 and N=5"):
        bwd.check_same_labels({2: same[2], 5: shifted})
    bad = {**preference, "valid": preference["valid"][:-1]}
    with pytest.raises(ValueError, match=r"preference\['valid'\] must hold one value per valid example"):
        bwd.rebucket(dataset, bad, 5, 0.6)


def sweep_config(**update) -> dict:
    """dcnv2_ml100k with `update` written over it, validated (the sweep's config)."""
    return validate(merge(named_config("dcnv2_ml100k"), update))


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match=r"key 'bandwidth.classes' must list numbers of rating classes >= 2"):
        sweep_config(bandwidth={"classes": [1, 5]})
    with pytest.raises(ConfigError, match=r"key 'bandwidth.classes' lists \[5\] more than once"):
        sweep_config(bandwidth={"classes": [5, 5]})
    with pytest.raises(ConfigError, match=r"key 'bandwidth.quantile' must lie in \(0, 1\)"):
        sweep_config(bandwidth={"quantile": 1.0})
    with pytest.raises(ConfigError, match="key 'bandwidth.preset' must be one of tiny, small"):
        sweep_config(bandwidth={"preset": "ml100k"})
    with pytest.raises(ConfigError, match=r"lambda_r values must lie in \[0, 1\]"):
        sweep_config(loss={"lambda_r": 1.5})


@pytest.mark.parametrize("old, new", [
    ("--preset", "--set bandwidth.preset="), ("--data-seed", "--set bandwidth.data_seed="),
    ("--model", "--models dcnv2"), ("--classes", "--set bandwidth.classes="), ("--Ns", "--set bandwidth.classes="),
    ("--quantile", "--set bandwidth.quantile="), ("--lipschitz-examples", "--set bandwidth.lipschitz_examples="),
    ("--power-iters", "--set bandwidth.power_iters="), ("--patience", "--set train.patience="),
    ("--lambda-r", "--set loss.lambda_r="), ("--aggregation", "--set loss.aggregation="),
    ("--batch-size", "--set train.batch_size="), ("--lr", "--set train.learning_rate="),
    ("--hparam", "--set model_hparams.KEY=VALUE"), ("--out", "--runs-dir DIR"),
])
def test_old_flags_are_refused_naming_the_new_spelling(old, new, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bw.main(["--runs-dir", str(tmp_path / "runs"), old, "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {old} is no longer a flag of python -m experiments.bandwidth; use {new}"), err
    assert len(err.splitlines()) == 1 and list(tmp_path.iterdir()) == []


def test_data_flags_and_several_configs_to_print_are_refused(capsys, tmp_path):
    assert bw.main(["--runs-dir", str(tmp_path / "runs"), "--data", str(tmp_path)]) == 2
    assert "error: --data: the bandwidth sweep trains on synthetic data" in capsys.readouterr().err
    assert bw.main(["--models", "dcnv2,nfm", "--print-config"]) == 2
    assert "error: --print-config prints one config; --models gave 2" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_summary_table_and_spearman_against_numpy():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"variant": ["orig"] * 3 + ["smooth"] * 6, "N": [2] * 3 + [3] * 3 + [5] * 3})
    for column in ("test_auc", "test_logloss", "grad_norm_mean", "grad_norm_median", "grad_norm_max",
                   "input_norm_mean", "relative_lipschitz_mean", "spectral_logits_mean", "ratio_mean",
                   "softmax_norm_median", "softmax_fraction_above_bound", "item_weight_norm", "best_epoch"):
        frame[column] = rng.normal(size=len(frame))
    summary = bwr.summary_table(frame)
    for (variant, n), part in frame.groupby(["variant", "N"]):
        row = summary[(summary["variant"] == variant) & (summary["N"] == n)].iloc[0]
        assert row["test_auc"] == pytest.approx(np.mean(part["test_auc"]))
        assert row["grad_norm_mean_std"] == pytest.approx(np.std(part["grad_norm_mean"], ddof=1))
    assert summary["paper_bound"].tolist()[1:] == pytest.approx([1 / np.sqrt(3), 1 / np.sqrt(5)])
    assert stats.spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: x ranks (1.5, 1.5, 3), y ranks (1, 3, 2) -> Pearson of the ranks
    assert stats.spearman([2, 2, 5], [0.1, 0.9, 0.5]) == pytest.approx(np.corrcoef([1.5, 1.5, 3], [1, 3, 2])[0, 1])


def test_lipschitz_and_softmax_columns_against_numpy():
    rng = np.random.default_rng(1)
    table = pd.DataFrame({m: rng.uniform(0.5, 2.0, 9) for m in bwm.LIPSCHITZ_MEASURES})
    table["spectral_probs_fd"] = table["spectral_probs"] * (1 + rng.uniform(-0.01, 0.01, 9))
    norm = rng.uniform(1.0, 3.0, 9)
    row = bwm.lipschitz_columns(table, norm)
    assert row["grad_norm_median"] == pytest.approx(np.median(table["grad_norm"]))
    assert row["ratio_max"] == pytest.approx(table["ratio"].max())
    assert row["relative_lipschitz_mean"] == pytest.approx(np.mean(table["grad_norm"] * norm))
    fd_error = np.abs(table["spectral_probs_fd"] / table["spectral_probs"] - 1)
    assert row["fd_rel_error_max"] == pytest.approx(np.max(fd_error))
    logits = rng.normal(0, 3.0, (50, 5)).astype(np.float32)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    # ||diag(p) - p p^T||_F built entry by entry
    frob = np.array([np.linalg.norm(np.diag(q) - np.outer(q, q)) for q in p])
    cols = bwm.softmax_columns(logits)
    assert cols["softmax_norm_median"] == pytest.approx(np.median(frob), rel=1e-5)
    assert cols["softmax_fraction_above_bound"] == pytest.approx(np.mean(frob > 1 / np.sqrt(5)))
    assert all(np.isnan(v) for v in bwm.softmax_columns(logits[:, :1]).values())


@pytest.mark.slow  # end-to-end; keeps the default suite under 10 minutes on 2 cores
def test_sweep_writes_one_row_per_member_with_finite_values(tmp_path):
    sizes = SyntheticSizes(120, 90, 3_000)
    dataset, preference = synthetic_dataset(sizes, 1, return_preference=True)
    config = sweep_config(seeds=[1, 2], train={"max_epochs": 1, "batch_size": 512},
                          model_hparams={"mlp_hidden_size": [16]},
                          bandwidth={"classes": [3], "lipschitz_examples": 8, "power_iters": 3})
    frame, buckets = bwm.run_sweep(config, dataset, preference, tmp_path / "runs")
    bwr.write_outputs(tmp_path, config, frame, buckets, dataset)
    table = pd.read_csv(tmp_path / "bandwidth.csv")
    assert list(zip(table["variant"], table["N"], table["K"], table["seed"])) == [
        ("orig", 2, 1, 1), ("orig", 2, 1, 2), ("smooth", 3, 3, 1), ("smooth", 3, 3, 2)]
    assert table["threshold"].tolist() == [2, 2, 2, 2]  # round(0.6 * 3); orig trains on the same labels
    assert table["lambda_r"].tolist() == [0.0, 0.0, 0.7, 0.7]
    orig = table["variant"] == "orig"
    numeric = table.drop(columns=["variant"])
    assert np.isfinite(numeric.drop(columns=list(bwm.SOFTMAX_COLUMNS)).to_numpy(float)).all()
    assert np.isfinite(table.loc[~orig, list(bwm.SOFTMAX_COLUMNS)].to_numpy(float)).all()
    assert table.loc[orig, list(bwm.SOFTMAX_COLUMNS)].isna().all().all()
    assert table["test_auc"].between(0, 1).all() and (table["test_logloss"] > 0).all()
    for measure in bwm.LIPSCHITZ_MEASURES:
        assert (table[f"{measure}_median"] <= table[f"{measure}_max"] + 1e-6).all()
        assert (table[f"{measure}_mean"] <= table[f"{measure}_max"] + 1e-6).all()
    # the softmax Jacobian norm never exceeds its supremum 1/2 over the simplex
    assert (table.loc[~orig, "softmax_norm_max"] <= 0.5 + 1e-6).all()
    assert (table["lipschitz_examples"] == 8).all() and (table["epochs"] == 1).all()
    assert table["capped"].all()  # one epoch: every member was cut off by max_epochs
    report = (tmp_path / "bandwidth.md").read_text()
    assert "**Not converged**" in report and "orig N=2: 2, smooth N=3: 2" in report
    assert report.count("\n| orig |") == 1 and report.count("\n| smooth |") == 1
    assert (tmp_path / "bandwidth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_member_tables_measure_each_member_with_its_params_and_input_norms(tiny):
    """lipctr.lipschitz's one measurement (shared with the analyses of a run): each member's
    gradient norms against jax.grad of its own model, weight norms against numpy."""
    import jax

    from lipctr import lipschitz
    from lipctr.losses import LossConfig, click_probability
    from lipctr.models import build_model

    dataset, preference = tiny
    data, _ = bwd.rebucket(dataset, preference, 3, 0.6)
    model = build_model("dcnv2", data.schema, 3, mlp_hidden_size=(8,))
    batch = {k: v[:6] for k, v in data.test.features.items()}
    members = [model.init(jax.random.key(seed), batch, deterministic=True) for seed in (4, 5)]
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *members)
    params = stacked.pop("params")
    loss = LossConfig(threshold=data.schema.threshold)
    tables = lipschitz.member_tables(model, loss, params, stacked, batch, num_iters=3)
    offset = np.zeros((data.schema.num_fields, model.embedding_dim), np.float32)
    for table, variables in zip(tables, members):
        def p_hat(example_offset, example, variables=variables):
            one = jax.tree.map(lambda a: a[None], example)
            logits = model.apply(variables, one, deterministic=True, embedding_offset=example_offset[None])
            return click_probability(logits, loss.threshold)[0]

        want = [np.linalg.norm(jax.grad(p_hat)(offset, {k: v[j] for k, v in batch.items()})) for j in range(6)]
        np.testing.assert_allclose(table["grad_norm"], want, rtol=1e-4)
    assert not np.allclose(tables[0]["grad_norm"], tables[1]["grad_norm"])
    norms = lipschitz.embedding_weight_norms(params, data.schema)
    for i, variables in enumerate(members):
        user = np.asarray(variables["params"]["embedding"]["tables"]["user_id"]["embedding"], np.float64)
        assert norms["user_weight_norm"][i] == pytest.approx(np.sqrt((user ** 2).sum()), rel=1e-5)
    # input_norms against a numpy lookup: token fields index their table, token_seq fields mean-pool
    # their non-padding ids
    from lipctr.models import embedding_table

    params0 = members[0]["params"]
    parts = []
    for field in data.schema.fields:
        table, ids = np.asarray(embedding_table(params0, field.name)), batch[field.name]
        if field.kind == "token":
            parts.append(table[ids])
        else:
            assert field.kind == "token_seq", field
            mask = (ids != 0)[..., None]
            parts.append((table[ids] * mask).sum(1) / np.maximum(mask.sum(1), 1))
    want_norms = np.linalg.norm(np.concatenate(parts, axis=1), axis=1)
    np.testing.assert_allclose(bwm.input_norms(model, params0, batch), want_norms, rtol=1e-5)


def _brute_force_classes(values, levels):
    """Class of each value: 1 + the number of quantile edges strictly below it."""
    edges = np.quantile(values, levels)
    return 1 + (values[:, None] > edges[None, :]).sum(1)


@pytest.mark.parametrize("signal", ["dwell", "plays"])
def test_implicit_signal_to_ratings_through_the_csv_pipeline(tmp_path, signal):
    rng = np.random.default_rng(3)
    pairs = rng.permutation(40 * 30)[:600]
    frame = pd.DataFrame({"user_id": pairs // 30 + 1, "item_id": pairs % 30 + 1,
                          "dwell": rng.lognormal(3.0, 1.0, 600), "plays": rng.poisson(6.0, 600)})
    values = frame[signal].to_numpy(float)
    out, buckets = signal_to_ratings(frame, signal, 5, 0.6)
    assert signal not in out.columns and "rating" in out.columns and len(out) == len(frame)
    np.testing.assert_array_equal(out["rating"], _brute_force_classes(values, [0.2, 0.4, 0.6, 0.8]))
    np.testing.assert_array_equal(buckets.labels, (values > np.quantile(values, 0.6)).astype(np.float32))
    out.to_csv(tmp_path / "mine.csv", index=False)
    config = DataConfig("mine", format="csv", path=str(tmp_path), num_ratings=5, threshold=buckets.threshold)
    dataset = load_dataset(config, cache=False)
    other = "plays" if signal == "dwell" else "dwell"
    assert signal not in dataset.schema.names and other in dataset.schema.names  # the other column stays
    ratings = np.concatenate([s.rating for s in dataset.splits.values()])
    labels = np.concatenate([s.label for s in dataset.splits.values()])
    np.testing.assert_array_equal(np.sort(ratings), np.sort(out["rating"].to_numpy()))
    np.testing.assert_array_equal(labels, (ratings > buckets.threshold).astype(np.float32))
    assert labels.mean() == pytest.approx(buckets.labels.mean())


def test_implicit_signal_errors_name_the_column():
    frame = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [1, 1, 2], "dwell": [1.0, 2.0, 3.0],
                          "tag": ["a", "b", "c"]})
    with pytest.raises(ValueError, match=r"signal column 'clicks' not in the DataFrame"):
        signal_to_ratings(frame, "clicks", 2)
    with pytest.raises(ValueError, match=r"signal column 'tag' must be numeric"):
        signal_to_ratings(frame, "tag", 2)
    with pytest.raises(ValueError, match=r"already has a 'rating' column"):
        signal_to_ratings(frame.assign(rating=1), "dwell", 2)
    with pytest.raises(ValueError, match=r"column 'dwell' has 3 distinct value\(s\); 5 classes"):
        signal_to_ratings(frame, "dwell", 5)
    kept, _ = signal_to_ratings(frame, "dwell", 3, keep_signal=True)
    assert kept["dwell"].tolist() == [1.0, 2.0, 3.0] and kept["rating"].tolist() == [1, 2, 3]


def test_sweep_runs_take_the_config_and_refuse_another_configs_folder(tiny, tmp_path):
    from lipctr.io import write_json_atomic

    dataset, _ = tiny
    config = sweep_config(seeds=[1, 2], train={"max_epochs": 4, "patience": 2}, loss={"lambda_r": 0.3},
                          model_hparams={"mlp_hidden_size": [16]}, eval={"num_negatives": 5000})
    settings = bwm.sweep_settings(config, dataset)
    wanted = bwm.feasible_negatives(dataset, 5000)
    assert wanted < 5000  # the tiny data allows fewer negatives than the config asks for
    assert settings == merge(config, {"eval": {"num_negatives": wanted}})
    write_json_atomic(tmp_path / "config.json", {**settings, "seeds": [7]})
    with pytest.raises(ValueError, match="another configuration; give another --runs-dir"):
        bwm.train_variant(settings, dataset, "orig", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # nothing trained or written


def test_ctrl_c_exits_130_with_the_sweeps_resume_command(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bw, "load_data", interrupted)  # the data loads inside the interruptible part too
    assert bw.main(["--runs-dir", str(tmp_path / "runs"), "--models", "dcnv2"]) == 130
    (out,) = (tmp_path / "runs" / "bandwidth").iterdir()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"interrupted; continue with: python -m experiments.bandwidth --resume {out}"
