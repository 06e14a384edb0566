"""The console summary: per variant mean ± std over members, and smooth vs orig delta in %."""

from __future__ import annotations

COLUMNS = (("auc", "AUC"), ("logloss", "LogLoss"))


def metric_columns(ks) -> tuple[tuple[str, str], ...]:
    return COLUMNS + tuple((f"ndcg@{k}", f"NDCG@{k}") for k in ks) + tuple((f"recall@{k}", f"Recall@{k}") for k in ks)


def results_table(finals: dict, ks=(10, 20)) -> str:
    """Markdown table from {variant: final.json content}; values in %, as the paper reports them."""
    columns = metric_columns(ks)
    lines = ["| variant | " + " | ".join(title for _, title in columns) + " |",
             "|---|" + "---|" * len(columns)]
    orig = finals.get("orig", {}).get("summary", {}).get("0")
    for variant, final in finals.items():
        for lam, summary in final["summary"].items():
            label = variant if variant == "orig" else f"{variant} (lambda_r={lam})"
            cells = [f"{100 * summary[k]['mean']:.2f} ± {100 * summary[k]['std']:.2f}" for k, _ in columns]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
            if variant != "orig" and orig is not None:
                deltas = [100 * (summary[k]["mean"] - orig[k]["mean"]) / abs(orig[k]["mean"]) for k, _ in columns]
                lines.append("| Δ% vs orig | " + " | ".join(f"{d:+.2f}" for d in deltas) + " |")
    return "\n".join(lines)
