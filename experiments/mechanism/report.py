"""The mechanism study's table, forest plot and report (mechanism.csv, mechanism.md, forest.png).

A result (one per backbone and control, from experiments.mechanism) is a dict with "model",
"control", "what", "variant", "chosen", "selection", "final" (final.json) and "analysis"
({"weight_norms", "noise", "lipschitz"} per-member DataFrames).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.report.figures import forest_figure, save_png
from experiments.report.stats import paired_difference
from experiments.report.tables import markdown_table
from lipctr.io import write_text_atomic

REFERENCES = ("orig", "smooth")
METRICS = ("auc", "logloss")


def per_seed(final: dict, metric: str) -> pd.Series:
    """metric of every member of a final.json, indexed by seed."""
    return pd.Series({m["seed"]: m[metric] for m in final["members"]}).sort_index()


def analysis_means(analysis: dict) -> dict:
    """Means over members: local Lipschitz (mean / max over test examples), embedding weight
    norms, test AUC clean and under the largest noise std, and the relative AUC loss (%)."""
    lipschitz, norms, noise = analysis["lipschitz"], analysis["weight_norms"], analysis["noise"]
    clean = noise[noise["std"] == noise["std"].min()]["auc"].mean()
    noisiest = noise[noise["std"] == noise["std"].max()]["auc"].mean()
    return {"lipschitz_mean": lipschitz["grad_norm_mean"].mean(), "lipschitz_max": lipschitz["grad_norm_max"].mean(),
            "spectral_max": lipschitz["spectral_probs_max"].mean(),
            "user_weight_norm": norms["user_weight_norm"].mean(), "item_weight_norm": norms["item_weight_norm"].mean(),
            "noise_std": noise["std"].max(), "auc_clean": clean, "auc_noisiest": noisiest,
            "auc_drop_pct": 100 * (clean - noisiest) / clean}


def mechanism_table(results: list[dict]) -> pd.DataFrame:
    """One row per (model, control): test AUC / LogLoss mean and std over seeds, the paired
    difference (control - reference) to orig and to smooth over the shared seeds with its 95%
    confidence interval and p-value (d_<metric>_vs_<ref>, _low, _high, _p), and the analyses."""
    references = {(r["model"], r["control"]): r["final"] for r in results if r["control"] in REFERENCES}
    rows = []
    for r in results:
        row = {"model": r["model"], "control": r["control"], "variant": r["variant"], "chosen": r["chosen"],
               "seeds": len(r["final"]["members"])}
        for metric in METRICS:
            values = per_seed(r["final"], metric)
            row[f"{metric}_mean"], row[f"{metric}_std"] = values.mean(), values.std(ddof=1)
        for ref in REFERENCES:
            for metric in METRICS:
                key = f"d_{metric}_vs_{ref}"
                base = references.get((r["model"], ref))
                if base is None or r["control"] == ref:
                    row.update({key: np.nan, f"{key}_low": np.nan, f"{key}_high": np.nan, f"{key}_p": np.nan})
                    continue
                a, b = per_seed(base, metric), per_seed(r["final"], metric)
                seeds = a.index.intersection(b.index)
                paired = paired_difference(a[seeds], b[seeds])
                row.update({key: paired["mean"], f"{key}_low": paired["low"], f"{key}_high": paired["high"],
                            f"{key}_p": paired["p"]})
        row.update(analysis_means(r["analysis"]))
        rows.append(row)
    return pd.DataFrame(rows)


def forest_rows(table: pd.DataFrame, reference: str = "orig") -> pd.DataFrame:
    """The forest plot's rows: every (model, control) but the reference itself, ΔAUC vs the
    reference and its 95% interval in percentage points."""
    key = f"d_auc_vs_{reference}"
    part = table[table["control"] != reference]
    return pd.DataFrame({"label": part["model"] + " " + part["control"], "mean": 100 * part[key],
                         "low": 100 * part[f"{key}_low"], "high": 100 * part[f"{key}_high"]}).reset_index(drop=True)


def _interval(row, key: str) -> str:
    if np.isnan(row[key]):
        return "—"
    low, high = 100 * row[key + "_low"], 100 * row[key + "_high"]
    return f"{100 * row[key]:+.2f} [{low:+.2f}, {high:+.2f}] p={row[key + '_p']:.2g}"


def readable_table(table: pd.DataFrame) -> pd.DataFrame:
    """The markdown table: AUC / LogLoss in %, paired differences in percentage points."""
    return pd.DataFrame({
        "model": table["model"], "control": table["control"], "chosen": table["chosen"],
        "AUC %": [f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(table["auc_mean"], table["auc_std"])],
        "LogLoss %": [f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(table["logloss_mean"], table["logloss_std"])],
        "ΔAUC vs orig [95% CI]": [_interval(r, "d_auc_vs_orig") for _, r in table.iterrows()],
        "ΔAUC vs smooth [95% CI]": [_interval(r, "d_auc_vs_smooth") for _, r in table.iterrows()],
        "ΔLogLoss vs orig [95% CI]": [_interval(r, "d_logloss_vs_orig") for _, r in table.iterrows()],
        "Lipschitz mean / max": [f"{a:.3g} / {b:.3g}" for a, b in zip(table["lipschitz_mean"], table["lipschitz_max"])],
        "‖E_user‖ / ‖E_item‖": [f"{a:.3g} / {b:.3g}"
                                for a, b in zip(table["user_weight_norm"], table["item_weight_norm"])],
        "AUC loss at largest noise %": [f"{d:.2f}" for d in table["auc_drop_pct"]],
    })


def write_mechanism_report(results: list[dict], root: Path, command: str, configs: list[dict], controls,
                           dataset: str, lambda_chosen: bool = False) -> Path:
    """mechanism.csv, forest.png and mechanism.md under `root`; the path of mechanism.md. dataset: the
    data's name (experiments.data_source.data_name); lambda_chosen: each config's lambda_r was chosen
    on validation (--select-lambda's <model>/lambda_sweep/)."""
    table = mechanism_table(results)
    write_text_atomic(root / "mechanism.csv", table.to_csv(index=False))
    rows = forest_rows(table)
    save_png(forest_figure(rows, f"mechanism study, {dataset}: control vs orig (95% CI over seeds)"),
             root / "forest.png")
    seeds = ", ".join(str(s) for s in configs[0]["seeds"])
    lambdas = ", ".join(f"{c['model']} {c['loss']['lambda_r']:g}" for c in configs)
    selection = [f"- {r['model']} {r['control']}: " + ", ".join(f"{k} {v:.4f}" for k, v in r["selection"].items())
                 + f" -> {r['chosen']}" for r in results if len(r["selection"]) > 1]
    skipped = [f"- {c.name}: only {', '.join(c.only)}" for c in controls if c.only and
               any(not c.applies_to(cfg["model"]) for cfg in configs)]
    parts = [f"# Mechanism study: {dataset}\n", f"Command: `{command}`\n",
             f"Seeds: {seeds}; at most {configs[0]['train']['max_epochs']} epochs, early stopping on validation AUC "
             f"(patience {configs[0]['train']['patience']}); lambda_r: {lambdas}"
             + (" (each chosen on validation: <model>/lambda_sweep/selected.json)" if lambda_chosen else "") + ".\n",
             "Each row is an ensemble over the seeds; differences are paired over seeds (control - reference), "
             "with a 95% t confidence interval and the paired t-test's p-value, in percentage points.\n",
             "## Controls\n", "\n".join(f"- {c.name} ({c.variant}): {c.what}" for c in controls) + "\n",
             "## Results\n", markdown_table(readable_table(table)),
             "Lipschitz: the local Lipschitz constant of p_hat w.r.t. the input embeddings, ||d p_hat / d e||, "
             "mean over seeds of each member's mean / max over test examples; ‖E‖: embedding table norms after "
             "training; AUC loss: relative test AUC loss under N(0, std²) input-embedding noise at the largest "
             "std.\n",
             "![forest plot](forest.png)\n"]
    if selection:
        parts += ["## Chosen on validation (mean validation AUC over seeds)\n", "\n".join(selection) + "\n"]
    if skipped:
        parts += ["## Controls that apply to some backbones only\n", "\n".join(skipped) + "\n"]
    path = root / "mechanism.md"
    write_text_atomic(path, "\n".join(parts))
    return path
