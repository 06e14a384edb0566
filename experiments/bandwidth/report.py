"""The bandwidth sweep's outputs: summary table, figure and markdown (bandwidth.csv / .png / .md)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.report.figures import save_png  # noqa: E402
from experiments.report.stats import spearman  # noqa: E402
from lipctr.data.schema import Dataset  # noqa: E402
from lipctr.io import write_text_atomic  # noqa: E402


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the headline columns, one row per (variant, N)."""
    columns = ["test_auc", "test_logloss", "grad_norm_mean", "grad_norm_median", "grad_norm_max",
               "input_norm_mean", "relative_lipschitz_mean", "spectral_logits_mean", "ratio_mean",
               "softmax_norm_median", "softmax_fraction_above_bound", "item_weight_norm", "best_epoch"]
    grouped = frame.groupby(["variant", "N"], sort=False)[columns]
    out = grouped.mean().join(grouped.std(ddof=1).add_suffix("_std")).reset_index()
    out["paper_bound"] = np.where(out["variant"] == "smooth", 1.0 / np.sqrt(out["N"]), np.nan)
    return out

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
    save_png(fig, path)

def _fmt(mean, std, digits: int) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:.{digits}f}"

def markdown(config: dict, summary: pd.DataFrame, frame: pd.DataFrame, buckets: dict, data_stats: dict) -> str:
    """The short bandwidth.md summary: setup, per-N table, rank correlations with N."""
    bw = config["bandwidth"]
    lines = [
        f"# Supervision-bandwidth sweep: {config['model']} on synthetic `{bw['preset']}` (data seed {bw['data_seed']})",
        "",
        "Synthetic data: a behaviour check of the method, not a result on real data.",
        f"Seeds {config['seeds']}, lambda_r = {config['loss']['lambda_r']}, "
        f"aggregation `{config['loss']['aggregation']}`, "
        f"threshold at the {bw['quantile']} quantile of the train preference, "
        f"max {config['train']['max_epochs']} epochs (patience {config['train']['patience']}). "
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
              f"({len(smooth_rows)} = {smooth_rows['N'].nunique()} N x {len(config['seeds'])} seeds):"]
    for column, title in (("test_auc", "test AUC"), ("grad_norm_mean", "Lipschitz mean"),
                          ("relative_lipschitz_mean", "Lipschitz x ||e|| mean"),
                          ("softmax_norm_median", "softmax ||J||_F median")):
        lines.append(f"- {title}: {spearman(smooth_rows['N'], smooth_rows[column]):+.2f}")
    capped = frame[frame["capped"]]
    if len(capped):
        counts = capped.groupby(["variant", "N"], sort=False).size()
        where = ", ".join(f"{v} N={n}: {c}" for (v, n), c in counts.items())
        lines += ["", "**Not converged**: members still improving when "
                      f"max_epochs = {config['train']['max_epochs']} ended them "
                  f"(best epoch > max_epochs - patience): {where}. Their numbers are not final; "
                  "rerun with more --epochs."]
    lines += ["", "Class masses on train (share of each rating 1..N):"]
    for n, b in sorted(buckets.items()):
        shares = np.bincount(b.classes, minlength=n + 1)[1:] / b.classes.size
        lines.append(f"- N={n}, threshold class {b.threshold}: " + ", ".join(f"{s:.3f}" for s in shares))
    return "\n".join(lines) + "\n"

def write_outputs(out: Path, config: dict, frame: pd.DataFrame, buckets: dict, dataset: Dataset) -> pd.DataFrame:
    """bandwidth.csv, bandwidth.png and bandwidth.md in `out`, each written atomically."""
    summary = summary_table(frame)
    stats = {name: len(split) for name, split in dataset.splits.items()}
    stats["positive_rate"] = float(next(iter(buckets.values())).labels.mean())
    write_text_atomic(out / "bandwidth.csv", frame.to_csv(index=False))
    figure(summary, out / "bandwidth.png")
    write_text_atomic(out / "bandwidth.md", markdown(config, summary, frame, buckets, stats))
    return summary
