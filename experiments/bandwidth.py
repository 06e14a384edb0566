"""Supervision-bandwidth sweep (beyond the paper): does a wider rating head shrink the local
Lipschitz constant and lift AUC, as Theorem 1 suggests?

`python -m experiments.bandwidth [--preset small] [--model dcnv2] [--Ns 2,3,5,10,20]
[--seeds 2020,2021,2022] [--epochs E] [--out DIR]`

One synthetic dataset (fixed data seed) keeps its continuous latent preference; for each N the
preference is bucketed into classes 1..N (lipctr.bandwidth.bucketize, edges fitted on train) with
the binary threshold at the same quantile, so the binary labels, and hence the orig (K = 1)
baseline, are identical for every N (checked, `check_same_labels`). For each N the smooth model
(K = N logits) is trained with all seeds as one ensemble; orig once. Per member we measure test
AUC / LogLoss, the local Lipschitz constant of p_hat w.r.t. the input field embeddings over a fixed
set of test examples (lipctr.lipschitz.local_lipschitz) and the softmax Jacobian norms at the
trained test logits against 1/sqrt(N). Outputs, atomically, in --out: bandwidth.csv (one row
per member), bandwidth.png, bandwidth.md.

Synthetic data: the numbers show how the method behaves, not how it does on real data.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import time
import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lipctr import lipschitz, metrics, runtime, sharding  # noqa: E402
from lipctr.bandwidth import Buckets, bucketize  # noqa: E402
from lipctr.data.schema import Dataset, Split  # noqa: E402
from lipctr.data.synthetic import synthetic_dataset  # noqa: E402
from lipctr.io import write_bytes_atomic, write_text_atomic  # noqa: E402
from lipctr.losses import LossConfig  # noqa: E402
from lipctr.models import build_model, embedding_table  # noqa: E402
from lipctr.models.base import FeatureEmbedding  # noqa: E402
from lipctr.train import Trainer, TrainConfig, fit, to_device  # noqa: E402

from experiments.configs import model_hparams, named_config  # noqa: E402

# Columns that are NaN for the orig rows (K = 1 has no softmax over rating classes).
SOFTMAX_COLUMNS = ("softmax_norm_mean", "softmax_norm_median", "softmax_norm_max", "softmax_fraction_above_bound")
LIPSCHITZ_MEASURES = ("grad_norm", "spectral_probs", "spectral_logits", "ratio")
MEMBER_KEY = "__member__"  # extra feature of the Lipschitz batches: which ensemble member scores the example


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep depends on; hyper-parameters not given come from `<model>_ml1m`."""

    preset: str = "small"
    data_seed: int = 0
    model: str = "dcnv2"
    Ns: tuple[int, ...] = (2, 3, 5, 10, 20)
    seeds: tuple[int, ...] = (2020, 2021, 2022)
    lambda_r: float = 0.7
    threshold_quantile: float = 0.6
    aggregation: str = "prob"
    max_epochs: int = 50
    patience: int = 5
    batch_size: int | None = None  # None = the model config's
    learning_rate: float | None = None  # None = the model config's
    lipschitz_examples: int = 256
    power_iters: int = 30
    model_hparams: tuple[tuple[str, object], ...] = ()  # (name, value) overrides of the model config's

    def __post_init__(self):
        if not self.Ns or min(self.Ns) < 2 or len(set(self.Ns)) != len(self.Ns):
            raise ValueError(f"Ns must be distinct numbers of classes >= 2, got {list(self.Ns)}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if not 0.0 <= self.lambda_r <= 1.0:
            raise ValueError(f"lambda_r must lie in [0, 1], got {self.lambda_r}")
        if self.max_epochs < 1 or self.patience < 1 or self.lipschitz_examples < 1 or self.power_iters < 1:
            raise ValueError("max_epochs, patience, lipschitz_examples and power_iters must be >= 1")


# ------------------------------------------------------------------------------------ data


def rebucket(dataset: Dataset, preference: dict[str, np.ndarray], num_classes: int,
             threshold_quantile: float) -> tuple[Dataset, Buckets]:
    """The dataset with ratings 1..N bucketed from the continuous preference of each split
    (float [n_split]); edges are fitted on train and applied to valid / test."""
    for name, split in dataset.splits.items():
        if name not in preference or len(preference[name]) != len(split):
            got = None if name not in preference else len(preference[name])
            raise ValueError(f"preference[{name!r}] must hold one value per {name} example ({len(split)}), got {got}")
    buckets = bucketize(preference["train"], num_classes, threshold_quantile, name="train preference")
    splits = {}
    for name, split in dataset.splits.items():
        classes = buckets.classes if name == "train" else buckets.assign(preference[name], f"{name} preference")
        splits[name] = Split(split.features, classes, (classes > buckets.threshold).astype(np.float32))
    schema = dataclasses.replace(dataset.schema, num_ratings=num_classes, threshold=buckets.threshold)
    stats = {**dataset.stats, "bandwidth": num_classes, "threshold_quantile": threshold_quantile}
    return dataclasses.replace(dataset, name=f"{dataset.name}_N{num_classes}", schema=schema, stats=stats,
                               **splits), buckets


def check_same_labels(datasets: dict[int, Dataset]) -> None:
    """Raise ValueError unless every dataset has the same binary labels in every split."""
    first_n, first = next(iter(datasets.items()))
    for n, dataset in datasets.items():
        for name, split in dataset.splits.items():
            other = first.splits[name].label
            if split.label.shape != other.shape or not np.array_equal(split.label, other):
                diff = int(np.sum(split.label != other)) if split.label.shape == other.shape else "all"
                raise ValueError(f"binary {name} labels differ between N={first_n} and N={n} ({diff} examples); "
                                 "the sweep would not compare like with like")


def bandwidth_datasets(dataset: Dataset, preference: dict[str, np.ndarray], Ns, threshold_quantile: float):
    """{N: (dataset, buckets)} for every N, after checking that the binary labels agree."""
    out = {int(n): rebucket(dataset, preference, int(n), threshold_quantile) for n in Ns}
    check_same_labels({n: d for n, (d, _) in out.items()})
    return out


# -------------------------------------------------------------------------------- training


def train_config(config: SweepConfig) -> tuple[TrainConfig, dict]:
    """TrainConfig and model hyper-parameters: the `<model>_ml1m` config with the sweep's overrides."""
    base = named_config(f"{config.model}_ml1m")
    train = {**base["train"], "max_epochs": config.max_epochs, "patience": config.patience}
    if config.batch_size is not None:
        train["batch_size"] = config.batch_size
    if config.learning_rate is not None:
        train["learning_rate"] = config.learning_rate
    return TrainConfig(**train), {**model_hparams(base), **dict(config.model_hparams)}


def train_members(config: SweepConfig, dataset: Dataset, num_outputs: int, lambda_r: float, log=None):
    """Train all seeds as one ensemble with early stopping on valid AUC -> (trainer, early
    stopping record [M], {"epochs", "train_seconds"})."""
    tc, hparams = train_config(config)
    model = build_model(config.model, dataset.schema, num_outputs, **hparams)
    loss = LossConfig(lambda_r=lambda_r, threshold=dataset.schema.threshold, aggregation=config.aggregation)
    trainer = Trainer(model, loss, tc, len(dataset.train), len(dataset.valid))
    train, valid = to_device(dataset.train), to_device(dataset.valid)
    state, es = trainer.init(train["features"], list(config.seeds), [lambda_r] * len(config.seeds))
    epochs = []

    def on_epoch(_state, _es, record):
        epochs.append(record.epoch)
        if log is not None:
            log(f"  epoch {record.epoch:3d}  valid AUC " + " ".join(f"{a:.4f}" for a in record.valid_auc)
                + f"  ({record.train_seconds:.1f} s)")

    start = time.perf_counter()
    state, es = fit(trainer, state, es, train, valid, on_epoch)
    return trainer, es, {"epochs": len(epochs), "train_seconds": time.perf_counter() - start}


# ------------------------------------------------------------------------------ measuring


def lipschitz_features(dataset: Dataset, num_examples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The same fixed random subset of test examples for every model: features [m, ...]."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(dataset.test), size=min(num_examples, len(dataset.test)), replace=False))
    return {k: v[pick] for k, v in dataset.test.features.items()}


def ensemble_apply_fn(model, params, model_state):
    """apply_fn(batch, offset) -> logits [B, K] for lipctr.lipschitz over a stacked ensemble
    (leaves [M, ...]): batch[MEMBER_KEY] int32 [B] says which member scores each example, so one
    compiled program measures every member."""

    def apply_fn(batch, offset):
        batch = dict(batch)
        member = batch.pop(MEMBER_KEY)

        def one(m, example, example_offset):
            variables = jax.tree.map(lambda x: jnp.asarray(x)[m], {"params": params, **model_state})
            single = jax.tree.map(lambda a: a[None], example)
            return model.apply(variables, single, deterministic=True, embedding_offset=example_offset[None])[0]

        return jax.vmap(one)(member, batch, offset)

    return apply_fn


def member_lipschitz(trainer: Trainer, es, features, config: SweepConfig) -> list[pd.DataFrame]:
    """lipctr.lipschitz.local_lipschitz of every member on the same examples: one table [m, measures]
    per member."""
    model, loss = trainer.model, trainer.loss_config
    members = len(config.seeds)
    m = len(next(iter(features.values())))
    tiled = {k: np.concatenate([v] * members) for k, v in features.items()}
    tiled[MEMBER_KEY] = np.repeat(np.arange(members, dtype=np.int32), m)
    table = lipschitz.local_lipschitz(
        ensemble_apply_fn(model, es.best_params, es.best_model_state), tiled,
        (model.schema.num_fields, model.embedding_dim), loss.threshold, loss.aggregation,
        num_iters=config.power_iters, key=jax.random.PRNGKey(0), mode="jacrev")
    return [table.iloc[i * m:(i + 1) * m].reset_index(drop=True) for i in range(members)]


def input_norms(model, params, features) -> np.ndarray:
    """||e|| of each example's concatenated field embeddings e (the point where the Lipschitz
    measures are taken): features [m, ...] -> [m]."""
    emb = FeatureEmbedding(model.schema, model.embedding_dim).apply({"params": params["embedding"]}, features)
    return np.linalg.norm(np.asarray(emb).reshape(emb.shape[0], -1), axis=1)


def lipschitz_columns(table: pd.DataFrame, input_norm: np.ndarray) -> dict:
    """Summaries of one member's per-example Lipschitz table (lipctr.lipschitz.local_lipschitz)
    and of grad_norm x ||e|| (input_norm [m], `input_norms`)."""
    summary = lipschitz.summarize(table[list(LIPSCHITZ_MEASURES)])
    row = {f"{measure}_{stat}": float(summary.loc[stat, measure])
           for measure in LIPSCHITZ_MEASURES for stat in ("mean", "median", "max")}
    relative = table["grad_norm"].to_numpy() * input_norm
    row.update({"input_norm_mean": float(input_norm.mean()), "relative_lipschitz_mean": float(relative.mean()),
                "relative_lipschitz_median": float(np.median(relative)),
                "relative_lipschitz_max": float(relative.max())})
    fd_error = np.abs(table["spectral_probs_fd"] - table["spectral_probs"]) / np.maximum(table["spectral_probs"], 1e-12)
    row["fd_rel_error_max"] = float(fd_error.max())
    return row


def softmax_columns(logits) -> dict:
    """Softmax Jacobian norms at one member's test logits [n, K] vs 1/sqrt(K); NaN for K = 1."""
    if logits.shape[-1] == 1:
        return {c: float("nan") for c in SOFTMAX_COLUMNS}
    norms = lipschitz.jacobian_norm_distribution(logits).summary()
    return {"softmax_norm_mean": norms["mean"], "softmax_norm_median": norms["median"],
            "softmax_norm_max": norms["max"], "softmax_fraction_above_bound": norms["fraction_above_bound"]}


def measure_members(trainer: Trainer, es, dataset: Dataset, config: SweepConfig, features) -> list[dict]:
    """Per member: test AUC / LogLoss, local Lipschitz summaries (mean / median / max over the
    examples in `features`), softmax Jacobian norms at its test logits, embedding weight norms."""
    test = to_device(dataset.test)
    logits = trainer.predict_logits(es.best_params, es.best_model_state, test["features"])
    scores, probs = trainer.click_score(logits), trainer.click_probability(logits)
    auc = np.asarray(jax.vmap(metrics.auc, in_axes=(0, None))(scores, test["label"]))
    logloss = np.asarray(jax.vmap(metrics.log_loss, in_axes=(0, None))(probs, test["label"]))
    schema = trainer.model.schema
    rows = []
    for i, table in enumerate(member_lipschitz(trainer, es, features, config)):
        params = jax.tree.map(lambda x: x[i], es.best_params)
        best_epoch = int(np.asarray(es.best_epoch)[i])
        row = {"best_epoch": best_epoch, "capped": best_epoch > config.max_epochs - config.patience,
               "best_valid_auc": float(np.asarray(es.best_auc)[i]),
               "test_auc": float(auc[i]), "test_logloss": float(logloss[i]),
               **lipschitz_columns(table, input_norms(trainer.model, params, features)),
               **softmax_columns(logits[i])}
        for side, field in (("user", schema.user_field), ("item", schema.item_field)):
            row[f"{side}_weight_norm"] = float(jnp.linalg.norm(embedding_table(params, field)))
        rows.append(row)
    return rows


# -------------------------------------------------------------------------------- the sweep


def run_sweep(config: SweepConfig, dataset: Dataset, preference: dict[str, np.ndarray],
              log=None) -> tuple[pd.DataFrame, dict]:
    """Train and measure orig once and smooth for every N -> (one row per member, {N: Buckets})."""
    log = log or (lambda _msg: None)
    datasets = bandwidth_datasets(dataset, preference, config.Ns, config.threshold_quantile)
    features = lipschitz_features(dataset, config.lipschitz_examples)
    runs = [("orig", min(datasets), 1, 0.0)] + [("smooth", n, n, config.lambda_r) for n in sorted(datasets)]
    rows = []
    for variant, n, num_outputs, lambda_r in runs:
        data = datasets[n][0]
        log(f"{config.model} {variant} K={num_outputs} (threshold class {data.schema.threshold} of {n})")
        trainer, es, timing = train_members(config, data, num_outputs, lambda_r, log)
        start = time.perf_counter()
        measured = measure_members(trainer, es, data, config, features)
        measure_seconds = time.perf_counter() - start
        for seed, row in zip(config.seeds, measured):
            rows.append({"variant": variant, "N": 2 if variant == "orig" else n, "K": num_outputs,
                         "threshold": data.schema.threshold, "seed": seed, "lambda_r": lambda_r, **row,
                         "lipschitz_examples": len(next(iter(features.values()))), **timing,
                         "measure_seconds": measure_seconds})
        log(f"  test AUC {np.mean([r['test_auc'] for r in measured]):.4f}, "
            f"Lipschitz mean {np.mean([r['grad_norm_mean'] for r in measured]):.4g}")
    return pd.DataFrame(rows), {n: b for n, (_, b) in datasets.items()}


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the headline columns, one row per (variant, N)."""
    columns = ["test_auc", "test_logloss", "grad_norm_mean", "grad_norm_median", "grad_norm_max",
               "input_norm_mean", "relative_lipschitz_mean", "spectral_logits_mean", "ratio_mean",
               "softmax_norm_median", "softmax_fraction_above_bound", "item_weight_norm", "best_epoch"]
    grouped = frame.groupby(["variant", "N"], sort=False)[columns]
    out = grouped.mean().join(grouped.std(ddof=1).add_suffix("_std")).reset_index()
    out["paper_bound"] = np.where(out["variant"] == "smooth", 1.0 / np.sqrt(out["N"]), np.nan)
    return out


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties) of two equal-length sequences."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


# --------------------------------------------------------------------------------- outputs


def figure(summary: pd.DataFrame, path: Path) -> None:
    """Test AUC, local Lipschitz constant and trained softmax norm vs N; orig as a horizontal line."""
    smooth = summary[summary["variant"] == "smooth"].sort_values("N")
    orig = summary[summary["variant"] == "orig"].iloc[0]
    n = smooth["N"].to_numpy(float)
    fig, axes = plt.subplots(1, 4, figsize=(20, 3.8), gridspec_kw={"wspace": 0.3})
    panels = (("test_auc", "test AUC"), ("grad_norm_mean", "local Lipschitz of p_hat\n(mean ||d p_hat / d e||)"),
              ("relative_lipschitz_mean", "scale-free: mean ||d p_hat / d e|| ||e||"))
    for ax, (column, title) in zip(axes, panels):
        ax.errorbar(n, smooth[column], yerr=smooth[f"{column}_std"], fmt="o-", color="tab:red", capsize=3,
                    label="smooth (K = N)")
        ax.axhline(orig[column], color="tab:blue", linestyle="--", label="orig (K = 1)")
        band = (orig[column] - orig[f"{column}_std"], orig[column] + orig[f"{column}_std"])
        ax.axhspan(*band, color="tab:blue", alpha=0.1)
        ax.set_ylabel(title)
    first = smooth.iloc[0]
    axes[1].plot(n, first["grad_norm_mean"] * np.sqrt(first["N"] / n), ":", color="gray",
                 label=f"c / sqrt(N) through N={int(first['N'])}")
    axes[3].plot(n, smooth["softmax_norm_median"], "o-", color="tab:red", label="trained, median over test")
    axes[3].plot(n, 1.0 / np.sqrt(n), "--", color="gray", label="1/sqrt(N) (paper's bound)")
    axes[3].plot(n, np.sqrt(n - 1) / n, ":", color="black", label="sqrt(N-1)/N (uniform logits)")
    axes[3].set_ylabel("softmax ||J||_F at test logits")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(n, [str(int(v)) for v in n])
        ax.minorticks_off()
        ax.set_xlabel("N (supervision bandwidth)")
        ax.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def _fmt(mean, std, digits: int) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:.{digits}f}"


def markdown(config: SweepConfig, summary: pd.DataFrame, frame: pd.DataFrame, buckets: dict, data_stats: dict) -> str:
    """The short bandwidth.md summary: setup, per-N table, rank correlations with N."""
    lines = [
        f"# Supervision-bandwidth sweep: {config.model} on synthetic `{config.preset}` (data seed {config.data_seed})",
        "",
        "Synthetic data: a behaviour check of the method, not a result on real data.",
        f"Seeds {list(config.seeds)}, lambda_r = {config.lambda_r}, aggregation `{config.aggregation}`, "
        f"threshold at the {config.threshold_quantile} quantile of the train preference, "
        f"max {config.max_epochs} epochs (patience {config.patience}). "
        f"{data_stats['train']} / {data_stats['valid']} / {data_stats['test']} train / valid / test examples, "
        f"positive rate {data_stats['positive_rate']:.3f}; binary labels identical for every N (checked).",
        f"Local Lipschitz: ||d p_hat / d e|| over the same {int(frame['lipschitz_examples'].iloc[0])} test "
        "examples, e = the concatenated input field embeddings; ratio = spectral norm of d softmax / d e over "
        "that of d logits / d e (Theorem 1's L_p / L_f); ||e|| = mean norm of those embeddings; "
        "x ||e|| = mean of ||d p_hat / d e|| ||e||, which does not fall just because embeddings grow.",
        "",
        "| variant | N | test AUC | test LogLoss | Lipschitz mean | median | max | ||e|| | x ||e|| | L_p / L_f "
        "| softmax ||J||_F median | > 1/sqrt(N) | best epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        smooth = r["variant"] == "smooth"
        cells = [r["variant"], str(int(r["N"])) if smooth else "2 (K=1)",
                 _fmt(r["test_auc"], r["test_auc_std"], 4), _fmt(r["test_logloss"], r["test_logloss_std"], 4),
                 _fmt(r["grad_norm_mean"], r["grad_norm_mean_std"], 4), f"{r['grad_norm_median']:.4f}",
                 f"{r['grad_norm_max']:.4f}", f"{r['input_norm_mean']:.3f}",
                 _fmt(r["relative_lipschitz_mean"], r["relative_lipschitz_mean_std"], 3), f"{r['ratio_mean']:.3f}",
                 f"{r['softmax_norm_median']:.3f} (bound {r['paper_bound']:.3f})" if smooth else "-",
                 f"{100 * r['softmax_fraction_above_bound']:.1f}%" if smooth else "-", f"{r['best_epoch']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    smooth_rows = frame[frame["variant"] == "smooth"]
    lines += ["", "Spearman rank correlation with N over all smooth members "
              f"({len(smooth_rows)} = {smooth_rows['N'].nunique()} N x {len(config.seeds)} seeds):"]
    for column, title in (("test_auc", "test AUC"), ("grad_norm_mean", "Lipschitz mean"),
                          ("relative_lipschitz_mean", "Lipschitz x ||e|| mean"),
                          ("softmax_norm_median", "softmax ||J||_F median")):
        lines.append(f"- {title}: {spearman(smooth_rows['N'], smooth_rows[column]):+.2f}")
    capped = frame[frame["capped"]]
    if len(capped):
        counts = capped.groupby(["variant", "N"], sort=False).size()
        where = ", ".join(f"{v} N={n}: {c}" for (v, n), c in counts.items())
        lines += ["", f"**Not converged**: members still improving when max_epochs = {config.max_epochs} ended them "
                  f"(best epoch > max_epochs - patience): {where}. Their numbers are not final; "
                  "rerun with more --epochs."]
    lines += ["", "Class masses on train (share of each rating 1..N):"]
    for n, b in sorted(buckets.items()):
        shares = np.bincount(b.classes, minlength=n + 1)[1:] / b.classes.size
        lines.append(f"- N={n}, threshold class {b.threshold}: " + ", ".join(f"{s:.3f}" for s in shares))
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, config: SweepConfig, frame: pd.DataFrame, buckets: dict, dataset: Dataset) -> pd.DataFrame:
    """bandwidth.csv, bandwidth.png and bandwidth.md in `out`, each written atomically."""
    summary = summary_table(frame)
    stats = {name: len(split) for name, split in dataset.splits.items()}
    stats["positive_rate"] = float(next(iter(buckets.values())).labels.mean())
    write_text_atomic(out / "bandwidth.csv", frame.to_csv(index=False))
    figure(summary, out / "bandwidth.png")
    write_text_atomic(out / "bandwidth.md", markdown(config, summary, frame, buckets, stats))
    return summary


def load_data(config: SweepConfig) -> tuple[Dataset, dict[str, np.ndarray]]:
    """The synthetic preset with the continuous preference of every split's rows."""
    return synthetic_dataset(config.preset, config.data_seed, return_preference=True)


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated integers, got {text!r}") from None


def _hparam(item: str) -> tuple[str, object]:
    """"name=value" (value in TOML syntax; lists become tuples) -> (name, value)."""
    name, sep, text = item.partition("=")
    try:
        value = tomllib.loads(f"v = {text}")["v"] if sep else None
    except tomllib.TOMLDecodeError:
        value = None
    if not name or value is None:
        raise ValueError(f"--hparam {item!r}: expected KEY=VALUE with a TOML value, e.g. mlp_hidden_size=[64,64,64]")
    return name, tuple(value) if isinstance(value, list) else value


def main(argv=None) -> int:
    sharding.deterministic_gpu_ops()
    runtime.cpu_speed_flags()
    p = argparse.ArgumentParser(prog="python -m experiments.bandwidth", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small", help="synthetic preset (tiny, small, ml1m, ...)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--model", default="dcnv2")
    p.add_argument("--Ns", default="2,3,5,10,20", help="comma-separated numbers of classes")
    p.add_argument("--seeds", default="2020,2021,2022")
    p.add_argument("--epochs", type=int, default=50, help="maximum epochs (early stopping on valid AUC)")
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--lambda-r", type=float, default=0.7)
    p.add_argument("--quantile", type=float, default=0.6, help="binary threshold quantile of the preference")
    p.add_argument("--aggregation", choices=["prob", "logit_sum"], default="prob")
    p.add_argument("--batch-size", type=int, help="default: the model config's")
    p.add_argument("--lr", type=float, help="learning rate; default: the model config's")
    p.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                   help="model hyper-parameter override, value in TOML syntax, e.g. mlp_hidden_size=[64,64,64]")
    p.add_argument("--lipschitz-examples", type=int, default=256)
    p.add_argument("--power-iters", type=int, default=30)
    p.add_argument("--out", help="output folder (default runs/bandwidth/<preset>_<model>)")
    args = p.parse_args(argv)
    try:
        config = SweepConfig(
            preset=args.preset, data_seed=args.data_seed, model=args.model,
            Ns=_int_list(args.Ns, "--Ns"), seeds=_int_list(args.seeds, "--seeds"),
            lambda_r=args.lambda_r, threshold_quantile=args.quantile, aggregation=args.aggregation,
            max_epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, learning_rate=args.lr,
            lipschitz_examples=args.lipschitz_examples, power_iters=args.power_iters,
            model_hparams=tuple(_hparam(item) for item in args.hparam))
    except ValueError as error:
        p.error(str(error))
    out = Path(args.out or f"runs/bandwidth/{config.preset}_{config.model}")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    dataset, preference = load_data(config)
    frame, buckets = run_sweep(config, dataset, preference, log)
    summary = write_outputs(out, config, frame, buckets, dataset)
    headline = ["variant", "N", "test_auc", "test_auc_std", "grad_norm_mean", "relative_lipschitz_mean"]
    print(summary[headline].to_string(index=False))
    print(f"wrote {out / 'bandwidth.csv'}, {out / 'bandwidth.png'}, {out / 'bandwidth.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
