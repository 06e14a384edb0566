"""The sparse-optimizer accuracy study's tables, from its committed run files.

    python experiments/results/sparse_optimizers/summarize.py     # writes summary.md and summary.csv here

run_files/<model>/<optimizer>/ holds each run's config.json and per output (orig, smooth) final.json
and metrics.csv; a tuned run (a grid over train.embedding_learning_rate) also grid.csv and
selected.json, and only its validation-chosen point's members count. Members are paired by seed;
differences are in AUC percentage points with the 95% paired t interval (experiments.report.stats).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from experiments.compare_runs import output_members, paired_members  # noqa: E402
from experiments.report.stats import paired_difference  # noqa: E402
from experiments.report.tables import read_run  # noqa: E402

MODELS = ("widedeep", "nfm", "dcnv2")
OPTIMIZERS = ("adamw", "lazy_adam", "rowwise_adagrad")
OUTPUTS = ("orig", "smooth")




def chosen_rate(run: dict, output: str) -> str:
    """The embedding learning rate the run trained `output` at (chosen on validation in a grid)."""
    if output in run["selected"]:
        return f"{run['selected'][output]['point']['train.embedding_learning_rate']:g} (grid)"
    train = run["config"]["train"]
    rate = train.get("embedding_learning_rate", 0.0)
    return f"{rate:g}" if rate else f"{train['learning_rate']:g} (= train.learning_rate)"


def paired(a: list[dict], b: list[dict]) -> dict:
    """b - a in test AUC points over the members the two lists share a seed with."""
    a, b = paired_members(a, b, key="seed")
    return paired_difference([100 * m["auc"] for m in a], [100 * m["auc"] for m in b])


def fmt(d: dict) -> str:
    bold = "**" if d["low"] > 0 or d["high"] < 0 else ""
    return f"{bold}{d['mean']:+.2f}{bold} [{d['low']:+.2f}, {d['high']:+.2f}] p={d['p']:.2g}"


def summarize(root: Path) -> tuple[pd.DataFrame, str]:
    rows, lines = [], ["| model | optimizer | embedding lr | orig AUC % | smooth AUC % | orig Δ vs adamw | "
                       "smooth Δ vs adamw | smooth - orig |", "|---|---|---|---|---|---|---|---|"]
    for model in MODELS:
        runs = {o: read_run(root / model / o) for o in OPTIMIZERS if (root / model / o / "config.json").is_file()}
        if "adamw" not in runs:
            continue
        members = {o: {out: output_members(run, out) for out in OUTPUTS} for o, run in runs.items()}
        for optimizer, run in runs.items():
            own = members[optimizer]
            gain = paired(own["orig"], own["smooth"])
            versus = {out: paired(members["adamw"][out], own[out]) for out in OUTPUTS}
            means = {out: pd.Series([m["auc"] for m in own[out]]).mul(100) for out in OUTPUTS}
            rates = " / ".join(dict.fromkeys(chosen_rate(run, out) for out in OUTPUTS))
            cells = [f"{means[out].mean():.2f} ± {means[out].std(ddof=1):.2f}" for out in OUTPUTS]
            deltas = ["—" if optimizer == "adamw" else fmt(versus[out]) for out in OUTPUTS]
            lines.append(f"| {model} | {optimizer} | {rates} | {' | '.join(cells)} | {' | '.join(deltas)} | "
                         f"{fmt(gain)} |")
            for out in OUTPUTS:
                rows.append({"model": model, "optimizer": optimizer, "output": out, "seeds": len(own[out]),
                             "embedding_lr": chosen_rate(run, out), "auc_mean": means[out].mean(),
                             "auc_std": means[out].std(ddof=1), "delta_vs_adamw": versus[out]["mean"],
                             "delta_low": versus[out]["low"], "delta_high": versus[out]["high"],
                             "delta_p": versus[out]["p"], "smooth_minus_orig": gain["mean"],
                             "gain_low": gain["low"], "gain_high": gain["high"], "gain_p": gain["p"]})
    return pd.DataFrame(rows), "\n".join(lines) + "\n"


if __name__ == "__main__":
    frame, table = summarize(HERE / "run_files")
    (HERE / "summary.csv").write_text(frame.to_csv(index=False, float_format="%.4f"))
    (HERE / "summary.md").write_text(table)
    print(table)
