"""Statistics over seeds: the paired t-test of Tables 1-2, its confidence interval, rank correlations."""

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


def t_cdf(t: float, df: int) -> float:
    """Student t CDF, from the regularised incomplete beta function (as paired_t_test's p)."""
    with jax.enable_x64(True):
        tail = 0.5 * float(jax.scipy.special.betainc(df / 2.0, 0.5, df / (df + t * t)))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(q: float, df: int) -> float:
    """The q-quantile of Student's t with df degrees of freedom (bisection on t_cdf to 1e-10)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must lie in (0, 1), got {q}")
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < q:
        low, high = high, 2.0 * high
    while high - low > 1e-10 * max(1.0, high):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if t_cdf(middle, df) < q else (low, middle)
    return 0.5 * (low + high)


def paired_difference(a, b, level: float = 0.95) -> dict:
    """The paired difference b - a over seeds: mean, its `level` confidence interval
    mean ± t_{(1 + level) / 2, n - 1} sd / sqrt(n) (low, high), t, two-sided p and n."""
    d = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    n = int(d.size)
    t, p = paired_t_test(a, b)
    if n < 2:
        return {"mean": float(d.mean()) if n else float("nan"), "low": float("nan"), "high": float("nan"),
                "t": t, "p": p, "n": n}
    half = t_quantile(0.5 + level / 2.0, n - 1) * d.std(ddof=1) / np.sqrt(n)
    return {"mean": float(d.mean()), "low": float(d.mean() - half), "high": float(d.mean() + half),
            "t": t, "p": p, "n": n}


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties) of two equal-length sequences."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])
