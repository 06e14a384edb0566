"""The study's figures (PNG, written atomically): Figures 2-4, Theorem 1, forest plots and grid plots."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lipctr.io import write_bytes_atomic  # noqa: E402


def save_png(fig, path: Path) -> None:
    """Render `fig` to PNG, close it, and write it atomically to `path`."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def forest_figure(rows: pd.DataFrame, title: str, xlabel: str = "paired ΔAUC vs orig (percentage points)"):
    """A forest plot: one row per entry of `rows` (columns label, mean, low, high, in the units
    plotted), the mean as a dot, [low, high] as a horizontal bar, a vertical line at 0. First row
    on top. Returns the figure (save it with save_png)."""
    y = np.arange(len(rows))[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.9 + 0.32 * max(len(rows), 1)))
    mean, low, high = (rows[c].to_numpy(np.float64) for c in ("mean", "low", "high"))
    ax.errorbar(mean, y, xerr=np.vstack([mean - low, high - mean]), fmt="o", color="tab:red", ecolor="black",
                capsize=3)
    ax.axvline(0.0, color="gray", linestyle="--", linewidth=1)
    ax.set_yticks(y, list(rows["label"]))
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return fig


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
        columns = ["user_weight_norm", "item_weight_norm"]
        norms = pd.read_csv(norms_path).groupby("variant")[columns].agg(["mean", "std"])
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
    save_png(fig, out / name)
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
    save_png(fig, out / name)
    return name

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
    save_png(fig, out / "fig4_lambda.png")
    return "fig4_lambda.png"

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
            axes[1].axhline(row["fraction_above_bound"], color=f"C{i + 1}", linestyle=":",
                            label=f"trained: {row['model']}")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("logit scale")
    axes[1].set_ylabel("fraction with ||J||_F > 1/sqrt(N)")
    axes[1].legend(fontsize=7)
    save_png(fig, out / "fig_theorem1.png")
    return "fig_theorem1.png"

def _grid_axis(values) -> tuple[list, list[str], bool]:
    """Positions, tick labels and whether to draw on a log scale for a grid key's values (in order)."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric and min(values) > 0 and max(values) / min(values) >= 10:
        return list(values), [f"{v:g}" for v in values], True
    if numeric:
        return list(values), [f"{v:g}" for v in values], False
    return list(range(len(values))), [str(v) for v in values], False


def grid_figure(rows: pd.DataFrame, keys: list[str], chosen: dict, title: str):
    """A grid's mean validation AUC (and test AUC): a line plot over one varying key, a heatmap over
    two (validation AUC coloured, "valid / test" in each cell); the chosen point marked. None for
    another number of varying keys."""
    if len(keys) == 1:
        key = keys[0]
        part = rows.sort_values(key) if rows[key].map(lambda v: isinstance(v, (int, float))).all() else rows
        x, labels, log = _grid_axis(list(part[key]))
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for name, color in (("valid_auc", "tab:green"), ("test_auc", "tab:gray")):
            ax.errorbar(x, part[f"{name}_mean"], yerr=part[f"{name}_std"], fmt="o-", color=color, capsize=3,
                        label=name.replace("_", " "))
        at = list(part[key]).index(chosen[key])
        ax.plot([x[at]], [part["valid_auc_mean"].iloc[at]], "*", color="tab:red", markersize=14, label="chosen")
        if log:
            ax.set_xscale("log")
        ax.set_xticks(x, labels)
        ax.set_xlabel(key)
        ax.set_ylabel("AUC (mean ± std over seeds)")
        ax.legend(fontsize=8)
        ax.set_title(f"{title}: chosen on validation AUC")
        return fig
    if len(keys) != 2:
        return None
    first, second = keys
    ys, xs = list(dict.fromkeys(rows[first])), list(dict.fromkeys(rows[second]))
    valid = np.full((len(ys), len(xs)), np.nan)
    test = np.full_like(valid, np.nan)
    for _, row in rows.iterrows():
        i, j = ys.index(row[first]), xs.index(row[second])
        valid[i, j], test[i, j] = row["valid_auc_mean"], row["test_auc_mean"]
    fig, ax = plt.subplots(figsize=(1.2 * len(xs) + 2.5, 0.7 * len(ys) + 1.8))
    image = ax.imshow(valid, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="mean validation AUC")
    middle = np.nanmean([np.nanmin(valid), np.nanmax(valid)])
    for i in range(len(ys)):
        for j in range(len(xs)):
            ax.text(j, i, f"{valid[i, j]:.4f}\n{test[i, j]:.4f}", ha="center", va="center", fontsize=7,
                    color="black" if valid[i, j] > middle else "white")
    ci, cj = ys.index(chosen[first]), xs.index(chosen[second])
    ax.add_patch(plt.Rectangle((cj - 0.5, ci - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    ax.set_xticks(range(len(xs)), _grid_axis(xs)[1])
    ax.set_yticks(range(len(ys)), _grid_axis(ys)[1])
    ax.set_xlabel(second)
    ax.set_ylabel(first)
    ax.set_title(f"{title}: valid / test AUC, chosen (red) on validation")
    return fig
