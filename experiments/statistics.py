"""Statistics over seeds: the paired t-test of Tables 1-2 and rank correlations."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd


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


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties) of two equal-length sequences."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])
