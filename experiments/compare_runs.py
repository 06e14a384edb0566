"""Did a change move the results beyond seed noise? Two runs of the same study, member by member.

    python -m experiments.compare_runs BASELINE_RUN OTHER_RUN [--metrics auc,logloss] [--csv out.csv]

Both are run directories (runs/<config>/<timestamp>, or their committed run files: config.json and
per output final.json + metrics.csv). The config keys that differ are printed first (e.g.
`train.compute_dtype: float32 -> bfloat16`); then, for every output both runs have (orig, smooth,
lambda_sweep, ...), its members are paired by name (seed, lambda_r, grid point); where a run is a
grid (selected.json), its validation-chosen point of that output is compared, paired by seed (e.g.
a tuned learning rate against a baseline run). Each test metric gets: the baseline's and the
other's mean ± std over members, the paired difference other - baseline (mean, 95% confidence
interval, two-sided paired t p), the largest |difference| of one member, and whether the mean
difference lies within the baseline's seed std. The last column is the other's training seconds
per epoch over the baseline's (timings as each run recorded them: a ratio only means something if
both ran on the same quiet machine).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.configs.grid import flatten
from experiments.report.stats import paired_difference
from experiments.report.tables import chosen_members, markdown_table, read_run
from lipctr.io import OutputPathError, check_output, write_text_atomic


def config_differences(baseline: dict, other: dict) -> list[str]:
    """`key: baseline value -> other value` for every key whose value differs (or exists in one only)."""
    a, b = flatten(baseline, "config", "baseline"), flatten(other, "config", "other")  # dotted keys
    missing = "(absent)"
    return [f"{key}: {a.get(key, missing)} -> {b.get(key, missing)}"
            for key in sorted(set(a) | set(b)) if a.get(key, missing) != b.get(key, missing)]


def _seed_std(values: np.ndarray) -> float:
    """Standard deviation over members (ddof 1); nan for a single member."""
    return float(values.std(ddof=1)) if values.size > 1 else float("nan")


def paired_members(baseline: list[dict], other: list[dict], key: str = "member") -> tuple[list[dict], list[dict]]:
    """The members of two member lists that share `key` (name, or seed), in the baseline's order."""
    by_key = {m[key]: m for m in other}
    pairs = [(m, by_key[m[key]]) for m in baseline if m[key] in by_key]
    return [a for a, _ in pairs], [b for _, b in pairs]


def output_members(run: dict, output: str) -> list[dict]:
    """An output's members: a grid run's validation-chosen point (selected.json), else all."""
    return chosen_members(run, output) if output in run["selected"] else run["finals"][output]["members"]


def compare_runs(baseline_dir: Path, other_dir: Path, metrics: list[str]) -> tuple[list[str], pd.DataFrame]:
    """(config differences, one row per common output and metric). Raises ValueError when the runs
    share no output or an output shares no member, naming them."""
    baseline, other = read_run(Path(baseline_dir)), read_run(Path(other_dir))
    outputs = [name for name in baseline["finals"] if name in other["finals"]]
    if not outputs:
        raise ValueError(f"{baseline_dir} (outputs {sorted(baseline['finals'])}) and {other_dir} "
                         f"(outputs {sorted(other['finals'])}) have no output in common")
    rows = []
    for output in outputs:
        a_final, b_final = baseline["finals"][output], other["finals"][output]
        grid = output in baseline["selected"] or output in other["selected"]  # a chosen point: pair by seed
        a_members, b_members = paired_members(output_members(baseline, output), output_members(other, output),
                                              "seed" if grid else "member")
        if not a_members:
            raise ValueError(f"{output}: no member name in common between {baseline_dir} and {other_dir}")
        a_seconds, b_seconds = a_final["timing"]["seconds_per_epoch"], b_final["timing"]["seconds_per_epoch"]
        for metric in metrics:
            if metric not in a_members[0] or metric not in b_members[0]:
                numeric = sorted(k for k, v in a_members[0].items() if isinstance(v, float))
                raise ValueError(f"{output}: metric {metric!r} is not in both runs' final.json (it has {numeric})")
            a = np.array([m[metric] for m in a_members], np.float64)
            b = np.array([m[metric] for m in b_members], np.float64)
            d = paired_difference(a, b)
            seed_std = _seed_std(a)
            rows.append({
                "output": output, "metric": metric, "members": int(a.size),
                "baseline_mean": float(a.mean()), "baseline_std": seed_std,
                "other_mean": float(b.mean()), "other_std": _seed_std(b),
                "delta_mean": d["mean"], "ci_low": d["low"], "ci_high": d["high"], "p_value": d["p"],
                "max_abs_delta": float(np.abs(b - a).max()),
                "within_seed_std": bool(abs(d["mean"]) <= seed_std),
                "epoch_time_ratio": b_seconds / a_seconds if a_seconds > 0 else float("nan"),
            })
    return config_differences(baseline["config"], other["config"]), pd.DataFrame(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.compare_runs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("baseline", help="baseline run directory")
    p.add_argument("other", help="run directory to compare with it")
    p.add_argument("--metrics", default="auc,logloss", help="comma-separated test metrics (default auc,logloss)")
    p.add_argument("--csv", help="also write the table to this CSV file")
    args = p.parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not metrics:
        p.error("--metrics: expected at least one metric name, e.g. auc,logloss")
    if args.csv and not Path(args.csv).parent.is_dir():
        print(f"error: --csv {args.csv}: folder {Path(args.csv).parent} does not exist", file=sys.stderr)
        return 2
    try:
        if args.csv:
            check_output("--csv", args.csv, {"baseline": args.baseline, "other": args.other})
    except OutputPathError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        differences, table = compare_runs(Path(args.baseline), Path(args.other), metrics)
    except (OSError, ValueError) as error:  # a missing or unreadable run file, runs that do not pair
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("config differences (baseline -> other):")
    print("\n".join(f"  {line}" for line in differences) if differences else "  none")
    print(markdown_table(table))
    if args.csv:
        write_text_atomic(args.csv, table.to_csv(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
