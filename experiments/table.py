"""The console summary: per variant mean ± std over members, and smooth vs orig delta in %.

Diverged members (NaN/inf training loss; their metrics are those of their best params before
that, often the untrained model) are marked and left out of the means and deltas.
"""

from __future__ import annotations

import numpy as np

COLUMNS = (("auc", "AUC"), ("logloss", "LogLoss"))


def metric_columns(ks) -> tuple[tuple[str, str], ...]:
    return COLUMNS + tuple((f"ndcg@{k}", f"NDCG@{k}") for k in ks) + tuple((f"recall@{k}", f"Recall@{k}") for k in ks)


def _groups(final: dict) -> dict[str, tuple[list[dict], list[dict]]]:
    """{lambda_r label: (kept members, diverged members)} in final.json's summary order."""
    groups = {lam: ([], []) for lam in final["summary"]}
    for m in final["members"]:
        lam = f"{m['lambda_r']:g}"  # final.json's summary keys ("0" for orig)
        groups.setdefault(lam, ([], []))[bool(m.get("diverged", False))].append(m)
    return groups


def _stats(members: list[dict], key: str) -> tuple[float, float]:
    values = np.array([m[key] for m in members], float)
    if not len(values):
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def results_table(finals: dict, ks=(10, 20)) -> str:
    """Markdown table from {variant: final.json content}; values in %, as the paper reports them."""
    columns = metric_columns(ks)
    lines = ["| variant | " + " | ".join(title for _, title in columns) + " |",
             "|---|" + "---|" * len(columns)]
    orig = next(iter(_groups(finals["orig"]).values()))[0] if "orig" in finals else None
    left_out = []
    for variant, final in finals.items():
        for lam, (kept, diverged) in _groups(final).items():
            label = variant if variant == "orig" else f"{variant} (lambda_r={lam})"
            left_out += [f"{label} {m['member']}" for m in diverged]
            mark = f" [{len(diverged)} of {len(kept) + len(diverged)} diverged]" if diverged else ""
            stats = [_stats(kept, k) for k, _ in columns]
            cells = [f"{100 * mean:.2f} ± {100 * std:.2f}" if kept else "—" for mean, std in stats]
            lines.append(f"| {label}{mark} | " + " | ".join(cells) + " |")
            if variant != "orig" and orig:
                deltas = [100 * (mean - _stats(orig, k)[0]) / abs(_stats(orig, k)[0])
                          for (mean, _), (k, _) in zip(stats, columns)]
                lines.append("| Δ% vs orig | " + " | ".join(f"{d:+.2f}" if kept else "—" for d in deltas) + " |")
    if left_out:
        lines.append(f"\nDiverged (NaN/inf training loss), left out of the means and Δ%: {', '.join(left_out)}")
    return "\n".join(lines)
