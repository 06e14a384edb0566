"""The study's tables, from finished run directories: Tables 1-3, Figure 4's sweep and the
per-model summary of the analyses; markdown rendering."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from experiments.report.stats import paired_difference
from lipctr import softmax_jacobian


def read_run(run_dir: Path) -> dict:
    """{"name", "config", "finals": {output: final.json}, "history": {variant: metrics.csv}}."""
    config = json.loads((run_dir / "config.json").read_text())
    finals, history = {}, {}
    for sub in sorted(p for p in run_dir.iterdir() if (p / "final.json").is_file()):
        finals[sub.name] = json.loads((sub / "final.json").read_text())
        history[sub.name] = pd.read_csv(sub / "metrics.csv")
    if not finals:
        raise FileNotFoundError(f"{run_dir}: no finished variant (no */final.json); is the run complete?")
    selected = run_dir / "selected.json"
    return {"name": f"{config['model']}_{config['dataset']}", "dir": run_dir, "config": config,
            "finals": finals, "history": history,
            "selected": json.loads(selected.read_text()) if selected.is_file() else {}}

def _per_seed(members: list[dict], metric: str) -> pd.Series:
    return pd.Series({m["seed"]: m[metric] for m in members}).sort_index()

def _per_lambda(final: dict, lam: float) -> list[dict]:
    return [m for m in final["members"] if abs(m["lambda_r"] - lam) < 1e-9]

def chosen_members(run: dict, variant: str) -> list[dict]:
    """The final.json records of the members of a grid's chosen point (selected.json)."""
    wanted = {(m["output"], m["member"]) for m in run["selected"][variant]["members"]}
    return [m for output, final in run["finals"].items() for m in final["members"] if (output, m["member"]) in wanted]

def comparisons(run: dict) -> list[dict]:
    """The orig vs smooth comparisons of a run: {"lambda_r", "chosen_on", "orig", "smooth"} (member
    lists); a grid run compares each variant's validation-chosen point, a --select-lambda run adds
    smooth at the validation-chosen lambda_r beside the config's."""
    config, finals, selected = run["config"], run["finals"], run.get("selected", {})
    found = []
    if config.get("grid") or config.get("grid_programs"):
        if {"orig", "smooth"} <= set(selected):
            smooth = chosen_members(run, "smooth")
            found.append({"lambda_r": smooth[0]["lambda_r"], "chosen_on": "validation (grid)",
                          "orig": chosen_members(run, "orig"), "smooth": smooth})
        return found
    if not {"orig", "smooth"} <= set(finals):
        return found
    orig = finals["orig"]["members"]
    lam = config["loss"]["lambda_r"]
    found.append({"lambda_r": lam, "chosen_on": "config", "orig": orig, "smooth": _per_lambda(finals["smooth"], lam)})
    if "lambda_sweep" in selected:
        chosen = selected["lambda_sweep"]["point"]["loss.lambda_r"]
        found.append({"lambda_r": chosen, "chosen_on": "validation", "orig": orig,
                      "smooth": chosen_members(run, "lambda_sweep")})
    return found

def compare(runs: list[dict], metric_names) -> pd.DataFrame:
    """orig vs smooth per run, comparison (`comparisons`) and metric: means, stds, delta %, paired
    t-test over shared seeds and the 95% confidence interval of the paired difference smooth - orig
    (delta, ci_low, ci_high)."""
    rows = []
    for run in runs:
        for c in comparisons(run):
            lam = c["lambda_r"]
            for metric in metric_names:
                orig = _per_seed(c["orig"], metric)
                smooth = _per_seed(c["smooth"], metric)
                seeds = orig.index.intersection(smooth.index)
                paired = paired_difference(orig[seeds], smooth[seeds])
                rows.append({
                    "model": run["config"]["model"], "dataset": run["config"]["dataset"], "metric": metric,
                    "lambda_r": lam, "lambda_r_chosen_on": c["chosen_on"], "seeds": len(seeds),
                    "orig_mean": orig.mean(), "orig_std": orig.std(ddof=1),
                    "smooth_mean": smooth.mean(), "smooth_std": smooth.std(ddof=1),
                    "delta_pct": 100 * (smooth.mean() - orig.mean()) / abs(orig.mean()),
                    "t": paired["t"], "p_value": paired["p"],
                    "delta": paired["mean"], "ci_low": paired["low"], "ci_high": paired["high"],
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
                       values=["seconds_per_epoch", "train_seconds_total", "eval_seconds_per_epoch",
                               "test_eval_seconds"])
    wide.columns = [f"{a}_{b}" for a, b in wide.columns]
    for base in ("seconds_per_epoch", "train_seconds_total", "eval_seconds_per_epoch", "test_eval_seconds"):
        if f"{base}_orig" in wide and f"{base}_smooth" in wide:
            wide[f"{base}_delta_pct"] = 100 * (wide[f"{base}_smooth"] / wide[f"{base}_orig"] - 1)
    return wide.reset_index()

def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    if frame.empty:
        return "_(no data)_\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, (float, np.floating)) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

def pct_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table-1 style: values in % as mean ± std, delta %, p-value."""
    if frame.empty:
        return frame
    return pd.DataFrame({
        "model": frame["model"], "metric": frame["metric"], "lambda_r": frame["lambda_r"],
        "chosen on": frame["lambda_r_chosen_on"],
        "orig": [f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(frame["orig_mean"], frame["orig_std"])],
        "smooth": [f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(frame["smooth_mean"], frame["smooth_std"])],
        "Δ%": [f"{d:+.2f}" for d in frame["delta_pct"]],
        "p (paired t)": [f"{p:.3g}" for p in frame["p_value"]],
    })

def lambda_table(runs: list[dict]) -> pd.DataFrame:
    """Figure 4's sweep: test AUC per lambda_r over the members of lambda_sweep/ (or of its waves
    lambda_sweep_w<k>/, experiments.grid) against orig's mean."""
    rows = []
    for run in runs:
        members = [m for name, final in run["finals"].items() if re.fullmatch(r"lambda_sweep(_w\d+)?", name)
                   for m in final["members"]]
        if not members:
            continue
        orig_groups = run["finals"].get("orig", {}).get("summary", {})  # orig has one group, lambda_r 0
        orig = next(iter(orig_groups.values()))["auc"]["mean"] if orig_groups else np.nan
        for lam in dict.fromkeys(m["lambda_r"] for m in members):
            auc = pd.Series([m["auc"] for m in members if m["lambda_r"] == lam])
            rows.append({"model": run["config"]["model"], "lambda_r": float(lam), "auc_mean": auc.mean(),
                         "auc_std": auc.std(ddof=1) if len(auc) > 1 else 0.0, "orig_auc_mean": orig,
                         "delta_pct": 100 * (auc.mean() - orig) / orig})
    return pd.DataFrame(rows)

def theorem_tables() -> dict[str, pd.DataFrame]:
    """Softmax Jacobian norms: vs N at uniform logits, and over random logits of growing scale."""
    return {
        "norm_vs_bandwidth": softmax_jacobian.norm_vs_bandwidth(range(2, 65)),
        "random_logits": softmax_jacobian.norm_distribution_by_scale(jax.random.key(0), 5),
    }

def collect_analysis(runs: list[dict], name: str) -> pd.DataFrame:
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
        lines.append(f"- {row['model']} (lambda_r {row['lambda_r']:g}, chosen on {row['lambda_r_chosen_on']}): "
                     f"smooth {verdict} test AUC ({row['delta_pct']:+.2f}%, "
                     f"{100 * row['orig_mean']:.2f} -> {100 * row['smooth_mean']:.2f}, "
                     f"paired t p = {row['p_value']:.3g}, {sig})")
    return lines
