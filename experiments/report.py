"""The study report: `python -m experiments.report RUN_DIR... [--out DIR]`.

Reads finished run directories (one per model config, as written by experiments.main) and writes
`report.md`, one CSV per table and the figures (PNG):
  Table 1  AUC / LogLoss, orig vs smooth, mean ± std over seeds, delta %, paired t-test p-value
  Table 2  NDCG@k / Recall@k, orig vs smooth
  Table 3  seconds per training epoch, whole training, evaluation; orig vs smooth
  Fig. 2   embedding gradient norms during training, embedding weight norms after it
  Fig. 3   AUC / LogLoss under Gaussian noise on the input embeddings
  Fig. 4   AUC vs lambda_r against the orig line
  Theorem 1: softmax Jacobian norms (closed form, random and trained logits) and the local
  Lipschitz constant of each trained model's p_hat w.r.t. its input embeddings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lipctr import softmax_jacobian  # noqa: E402
from lipctr.io import write_bytes_atomic, write_text_atomic  # noqa: E402


def paired_t_test(a, b) -> tuple[float, float]:
    """Two-sided paired t-test of b - a: (t, p). p from the Student t CDF via the regularised
    incomplete beta function: p = I_{df / (df + t^2)}(df / 2, 1 / 2)."""
    d = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    n = d.size
    if n < 2:
        return float("nan"), float("nan")
    sd = d.std(ddof=1)
    if sd == 0:
        return (float("inf") * np.sign(d.mean()) if d.mean() else float("nan")), (0.0 if d.mean() else 1.0)
    t = d.mean() / (sd / np.sqrt(n))
    df = n - 1
    with jax.enable_x64(True):
        p = jax.scipy.special.betainc(df / 2.0, 0.5, df / (df + t * t))
    return float(t), float(p)


def load_run(run_dir: Path) -> dict:
    """{"name", "config", "finals": {output: final.json}, "history": {variant: metrics.csv}}."""
    config = json.loads((run_dir / "config.json").read_text())
    finals, history = {}, {}
    for sub in sorted(p for p in run_dir.iterdir() if (p / "final.json").is_file()):
        finals[sub.name] = json.loads((sub / "final.json").read_text())
        history[sub.name] = pd.read_csv(sub / "metrics.csv")
    if not finals:
        raise FileNotFoundError(f"{run_dir}: no finished variant (no */final.json); is the run complete?")
    return {"name": f"{config['model']}_{config['dataset']}", "dir": run_dir, "config": config,
            "finals": finals, "history": history}


def _per_seed(final: dict, metric: str, lambda_r: float | None = None) -> pd.Series:
    rows = [m for m in final["members"] if lambda_r is None or abs(m["lambda_r"] - lambda_r) < 1e-9]
    return pd.Series({m["seed"]: m[metric] for m in rows}).sort_index()


def compare(runs: list[dict], metric_names) -> pd.DataFrame:
    """orig vs smooth per run and metric: means, stds, delta %, paired t-test over shared seeds."""
    rows = []
    for run in runs:
        if not {"orig", "smooth"} <= set(run["finals"]):
            continue
        lam = run["config"]["loss"]["lambda_r"]
        for metric in metric_names:
            orig = _per_seed(run["finals"]["orig"], metric)
            smooth = _per_seed(run["finals"]["smooth"], metric, lam)
            seeds = orig.index.intersection(smooth.index)
            t, p = paired_t_test(orig[seeds], smooth[seeds])
            rows.append({
                "model": run["config"]["model"], "dataset": run["config"]["dataset"], "metric": metric,
                "lambda_r": lam, "seeds": len(seeds),
                "orig_mean": orig.mean(), "orig_std": orig.std(ddof=1),
                "smooth_mean": smooth.mean(), "smooth_std": smooth.std(ddof=1),
                "delta_pct": 100 * (smooth.mean() - orig.mean()) / abs(orig.mean()),
                "t": t, "p_value": p,
            })
    return pd.DataFrame(rows)


def timing_table(runs: list[dict]) -> pd.DataFrame:
    rows = []
    for run in runs:
        for variant in ("orig", "smooth"):
            if variant in run["finals"]:
                t = run["finals"][variant]["timing"]
                rows.append({"model": run["config"]["model"], "variant": variant, **t})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    wide = frame.pivot(index="model", columns="variant",
                       values=["seconds_per_epoch", "train_seconds_total", "eval_seconds_per_epoch", "test_eval_seconds"])
    wide.columns = [f"{a}_{b}" for a, b in wide.columns]
    for base in ("seconds_per_epoch", "train_seconds_total", "eval_seconds_per_epoch", "test_eval_seconds"):
        if f"{base}_orig" in wide and f"{base}_smooth" in wide:
            wide[f"{base}_delta_pct"] = 100 * (wide[f"{base}_smooth"] / wide[f"{base}_orig"] - 1)
    return wide.reset_index()


def _markdown(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    if frame.empty:
        return "_(no data)_\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, (float, np.floating)) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pct_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table-1 style: values in % as mean ± std, delta %, p-value."""
    if frame.empty:
        return frame
    return pd.DataFrame({
        "model": frame["model"], "metric": frame["metric"], "lambda_r": frame["lambda_r"],
        "orig": [f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(frame["orig_mean"], frame["orig_std"])],
        "smooth": [f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(frame["smooth_mean"], frame["smooth_std"])],
        "Δ%": [f"{d:+.2f}" for d in frame["delta_pct"]],
        "p (paired t)": [f"{p:.3g}" for p in frame["p_value"]],
    })


def _save_figure(fig, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def figure_gradients(run: dict, out: Path) -> str | None:
    """Fig. 2: per-epoch embedding gradient norms (mean over members) and final weight norms."""
    history = run["history"]
    if not {"orig", "smooth"} <= set(history):
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for variant, color in (("orig", "tab:blue"), ("smooth", "tab:red")):
        frame = history[variant].groupby("epoch")[["user_grad_norm", "item_grad_norm"]].agg(["mean", "std"])
        for ax, side in zip(axes[:2], ("user", "item")):
            mean, std = frame[(f"{side}_grad_norm", "mean")], frame[(f"{side}_grad_norm", "std")].fillna(0)
            ax.plot(frame.index, mean, color=color, label=variant)
            ax.fill_between(frame.index, mean - std, mean + std, color=color, alpha=0.2)
            ax.set_title(f"{side} embedding gradient L2 norm")
            ax.set_xlabel("epoch")
    norms_path = run["dir"] / "analysis" / "weight_norms.csv"
    if norms_path.is_file():
        norms = pd.read_csv(norms_path).groupby("variant")[["user_weight_norm", "item_weight_norm"]].agg(["mean", "std"])
        x = np.arange(2)
        for offset, variant, color in ((-0.2, "orig", "tab:blue"), (0.2, "smooth", "tab:red")):
            if variant in norms.index:
                means = [norms.loc[variant, (c, "mean")] for c in ("user_weight_norm", "item_weight_norm")]
                stds = [norms.loc[variant, (c, "std")] for c in ("user_weight_norm", "item_weight_norm")]
                axes[2].bar(x + offset, means, 0.4, yerr=stds, color=color, label=variant)
        axes[2].set_xticks(x, ["user", "item"])
        axes[2].set_title("embedding weight L2 norm after training")
    axes[0].legend()
    fig.suptitle(run["name"], y=1.03)
    name = f"fig2_{run['name']}.png"
    _save_figure(fig, out / name)
    return name


def figure_noise(run: dict, out: Path) -> str | None:
    """Fig. 3: AUC and LogLoss vs noise std, orig vs smooth (mean over members and draws)."""
    path = run["dir"] / "analysis" / "noise.csv"
    if not path.is_file():
        return None
    noise = pd.read_csv(path).groupby(["variant", "std"])[["auc", "logloss"]].mean().reset_index()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    right = ax.twinx()
    for variant, color in (("orig", "tab:blue"), ("smooth", "tab:red")):
        part = noise[noise["variant"] == variant]
        ax.plot(part["std"], part["auc"], "o-", color=color, label=f"{variant} AUC")
        right.plot(part["std"], part["logloss"], "s--", color=color, label=f"{variant} LogLoss")
    ax.set_xlabel("noise std on input embeddings")
    ax.set_ylabel("AUC (solid)")
    right.set_ylabel("LogLoss (dashed)")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(run["name"])
    name = f"fig3_{run['name']}.png"
    _save_figure(fig, out / name)
    return name


def lambda_table(runs: list[dict]) -> pd.DataFrame:
    rows = []
    for run in runs:
        sweep = run["finals"].get("lambda_sweep")
        if sweep is None:
            continue
        orig = run["finals"].get("orig", {}).get("summary", {}).get("0", {}).get("auc", {}).get("mean", np.nan)
        for lam, summary in sweep["summary"].items():
            rows.append({"model": run["config"]["model"], "lambda_r": float(lam), "auc_mean": summary["auc"]["mean"],
                         "auc_std": summary["auc"]["std"], "orig_auc_mean": orig,
                         "delta_pct": 100 * (summary["auc"]["mean"] - orig) / orig})
    return pd.DataFrame(rows)


def figure_lambda(table: pd.DataFrame, out: Path) -> str | None:
    """Fig. 4: AUC vs lambda_r per model, with the orig AUC as a dashed line."""
    if table.empty:
        return None
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        part = table[table["model"] == model].sort_values("lambda_r")
        ax.errorbar(part["lambda_r"], part["auc_mean"], yerr=part["auc_std"], fmt="o-", color="tab:red", label="smooth")
        ax.axhline(part["orig_auc_mean"].iloc[0], color="tab:blue", linestyle="--", label="orig")
        ax.set_xlabel("lambda_r")
        ax.set_title(model)
    axes[0][0].set_ylabel("test AUC")
    axes[0][0].legend()
    _save_figure(fig, out / "fig4_lambda.png")
    return "fig4_lambda.png"


def theorem_tables() -> dict[str, pd.DataFrame]:
    """Softmax Jacobian norms: vs N at uniform logits, and over random logits of growing scale."""
    return {
        "norm_vs_bandwidth": softmax_jacobian.norm_vs_bandwidth(range(2, 65)),
        "random_logits": softmax_jacobian.norm_distribution_by_scale(jax.random.PRNGKey(0), 5),
    }


def figure_theorem(tables: dict, trained: pd.DataFrame, out: Path) -> str:
    curve, random = tables["norm_vs_bandwidth"], tables["random_logits"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].plot(curve["N"], curve["norm_uniform"], label="||J||_F at uniform logits (jacfwd)")
    axes[0].plot(curve["N"], curve["paper_bound"], "--", label="1/sqrt(N) (paper's bound)")
    axes[0].axhline(0.5, color="gray", linestyle=":", label="sup over the simplex = 1/2")
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("N (supervision bandwidth)")
    axes[0].legend(fontsize=8)
    axes[1].plot(random["scale"], random["fraction_above_bound"], "o-", label="random N(0, scale^2) logits, N=5")
    if not trained.empty:
        for i, (_, row) in enumerate(trained.iterrows()):
            axes[1].axhline(row["fraction_above_bound"], color=f"C{i + 1}", linestyle=":", label=f"trained: {row['model']}")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("logit scale")
    axes[1].set_ylabel("fraction with ||J||_F > 1/sqrt(N)")
    axes[1].legend(fontsize=7)
    _save_figure(fig, out / "fig_theorem1.png")
    return "fig_theorem1.png"


def _collect(runs: list[dict], name: str) -> pd.DataFrame:
    frames = []
    for run in runs:
        path = run["dir"] / "analysis" / f"{name}.csv"
        if path.is_file():
            frame = pd.read_csv(path)
            frame.insert(0, "model", run["config"]["model"])
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def analysis_summary(runs: list[dict]) -> pd.DataFrame:
    """One row per model and variant: the Figure 2/3 and Lipschitz numbers as means over seeds.

    grad_norm_* / spectral_max: the local Lipschitz estimates (mean over seeds of each member's
    mean / max over test examples); *_grad_norm_epoch: mean over epochs and seeds of the embedding
    gradient norm; auc_clean / auc_noisiest: AUC at noise std 0 and at the largest std.
    """
    rows = []
    for run in runs:
        model = run["config"]["model"]
        directory = run["dir"] / "analysis"
        parts = {}
        if (directory / "lipschitz.csv").is_file():
            parts["lipschitz"] = pd.read_csv(directory / "lipschitz.csv").groupby("variant")[
                ["grad_norm_mean", "grad_norm_max", "spectral_probs_max"]].mean()
        if (directory / "weight_norms.csv").is_file():
            parts["weights"] = pd.read_csv(directory / "weight_norms.csv").groupby("variant")[
                ["user_weight_norm", "item_weight_norm"]].mean()
        if (directory / "noise.csv").is_file():
            noise = pd.read_csv(directory / "noise.csv")
            clean = noise[noise["std"] == noise["std"].min()].groupby("variant")["auc"].mean().rename("auc_clean")
            noisiest = noise[noise["std"] == noise["std"].max()].groupby("variant")["auc"].mean().rename("auc_noisiest")
            parts["noise"] = pd.concat([clean, noisiest], axis=1)
        for variant in ("orig", "smooth"):
            if variant not in run["history"]:
                continue
            grads = run["history"][variant][["user_grad_norm", "item_grad_norm"]].mean()
            row = {"model": model, "variant": variant, "user_grad_norm_epoch": grads["user_grad_norm"],
                   "item_grad_norm_epoch": grads["item_grad_norm"]}
            for frame in parts.values():
                if variant in frame.index:
                    row.update(frame.loc[variant].to_dict())
            if "auc_clean" in row:
                row["auc_drop_pct"] = 100 * (row["auc_clean"] - row["auc_noisiest"]) / row["auc_clean"]
            rows.append(row)
    return pd.DataFrame(rows)


def headline(table1: pd.DataFrame) -> list[str]:
    lines = []
    for _, row in table1[table1["metric"] == "auc"].iterrows():
        verdict = "raised" if row["delta_pct"] > 0 else "did not raise"
        sig = "significant at 5%" if row["p_value"] < 0.05 else "not significant at 5%"
        lines.append(f"- {row['model']}: smooth {verdict} test AUC ({row['delta_pct']:+.2f}%, "
                     f"{100 * row['orig_mean']:.2f} -> {100 * row['smooth_mean']:.2f}, paired t p = {row['p_value']:.3g}, {sig})")
    return lines


def write_report(run_dirs: list[Path], out: Path) -> Path:
    runs = [load_run(Path(d)) for d in run_dirs]
    out.mkdir(parents=True, exist_ok=True)
    ks = runs[0]["config"]["eval"]["ks"]
    table1 = compare(runs, ("auc", "logloss"))
    table2 = compare(runs, [f"{m}@{k}" for m in ("ndcg", "recall") for k in ks])
    table3 = timing_table(runs)
    lambdas = lambda_table(runs)
    lipschitz_table = _collect(runs, "lipschitz")
    summary = analysis_summary(runs)
    softmax = _collect(runs, "softmax_norms")
    theorem = theorem_tables()
    trained = softmax.groupby("model")["fraction_above_bound"].mean().reset_index() if not softmax.empty else softmax
    csvs = {"table1": table1, "table2": table2, "table3": table3, "lambda_sweep": lambdas,
            "lipschitz": lipschitz_table, "analysis_summary": summary, "softmax_norms_trained": softmax, **theorem}
    for name, frame in csvs.items():
        write_text_atomic(out / f"{name}.csv", frame.to_csv(index=False))
    figures = [f for run in runs for f in (figure_gradients(run, out), figure_noise(run, out))]
    figures += [figure_lambda(lambdas, out), figure_theorem(theorem, trained, out)]
    dataset = runs[0]["config"]["dataset"]
    parts = [f"# lipctr study report: {dataset}\n",
             f"Runs: {', '.join(str(r['dir']) for r in runs)}\n",
             "## Headline (test AUC, smooth vs orig)\n", "\n".join(headline(table1)) + "\n",
             "## Table 1: AUC and LogLoss (%, mean ± std over seeds)\n", _markdown(_pct_table(table1)),
             "## Table 2: ranking, each test positive vs 100 sampled unseen items (%)\n", _markdown(_pct_table(table2)),
             "## Table 3: seconds (median epoch, whole training, evaluation)\n", _markdown(table3, ".3g"),
             "## Figures 2 and 3, Lipschitz: orig vs smooth (means over seeds)\n",
             "Embedding gradient norms per epoch (Fig. 2), embedding weight norms after training, the local "
             "Lipschitz constant of p_hat w.r.t. the input embeddings (mean and max over test examples), and "
             "test AUC without and with the largest input-embedding noise (Fig. 3).\n", _markdown(summary, ".4g"),
             "## Figure 4: lambda_r sweep (test AUC)\n", _markdown(lambdas),
             "## Theorem 1, measured\n",
             "Softmax Jacobian Frobenius norm at uniform logits is sqrt(N-1)/N, just under 1/sqrt(N); but the "
             "supremum over the simplex is 1/2 (probability split evenly between two classes), so the paper's "
             "bound ||J||_F <= 1/sqrt(N) fails for N >= 5 away from uniform logits.\n",
             _markdown(theorem["norm_vs_bandwidth"][theorem["norm_vs_bandwidth"]["N"].isin([2, 3, 4, 5, 8, 10, 16, 20, 32, 64])]),
             "Random logits N(0, scale^2), N = 5:\n", _markdown(theorem["random_logits"]),
             "Trained smooth models' test logits (per member):\n", _markdown(softmax),
             "Local Lipschitz constant of p_hat w.r.t. the concatenated input field embeddings "
             "(per member; grad_norm = ||d p_hat / d e||, spectral_* by power iteration, *_fd finite-difference check):\n",
             _markdown(lipschitz_table),
             "## Figures\n", "\n".join(f"![{f}]({f})" for f in figures if f) + "\n"]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(parts))
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories (runs/<config>/<timestamp>)")
    p.add_argument("--out", help="output folder (default: the run directory if one is given, else ./report)")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else (Path(args.runs[0]) if len(args.runs) == 1 else Path("report"))
    try:
        path = write_report([Path(r) for r in args.runs], out)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
