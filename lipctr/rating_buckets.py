"""Supervision bandwidth: bucket a continuous preference signal into N ordered classes.

For implicit signals (play counts, dwell time) or a synthetic latent preference, `bucketize`
turns values into classes 1..N and a binary threshold t_sh (positive iff class > t_sh) such
that the binary label is the SAME for every N: positive iff value > q, q the
`threshold_quantile`-quantile of the values. This is what makes a bandwidth sweep compare like
with like: only the number of classes changes, never the binary task.

How the classes are cut: t_sh = clip(round(N * threshold_quantile), 1, N - 1) (or a given
`threshold`, e.g. 3 for N = 5 to mirror the paper's 3 negative / 2 positive ratings) classes lie
at or below q and N - t_sh above it; each side is split into equal-mass quantile bins. Edges are
quantiles at levels threshold_quantile * j / t_sh (j = 1..t_sh, the last being q itself) and
threshold_quantile + (1 - threshold_quantile) * j / (N - t_sh) (j = 1..N - t_sh - 1). When
N * threshold_quantile is an integer all N classes hold equal mass; otherwise the two sides hold
unequal masses (e.g. N = 3, quantile 0.6: classes of mass 0.3, 0.3, 0.4), the price of keeping
the binary threshold fixed. Class k holds the values v with edge[k-2] < v <= edge[k-1], so tied
values always share a class; ties can therefore empty a class, which is reported as an error.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd


@dataclasses.dataclass(frozen=True)
class Buckets:
    """classes int32 [n] in 1..N; threshold t_sh; edges float64 [N - 1] (upper edge of classes 1..N-1)."""

    classes: np.ndarray
    threshold: int
    edges: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.edges.size + 1)

    @property
    def labels(self) -> np.ndarray:
        """Binary labels float32 [n]: 1.0 iff class > threshold."""
        return (self.classes > self.threshold).astype(np.float32)

    def assign(self, values, name: str = "values") -> np.ndarray:
        """Classes of new values (e.g. valid / test) with these edges: int32 [m] in 1..N."""
        return assign_classes(_finite_vector(values, name), self.edges)


def _finite_vector(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} NaN or infinite value(s), first at index {int(np.argmax(bad))}")
    return array


def threshold_class(num_classes: int, threshold_quantile: float) -> int:
    """t_sh = clip(round(N * threshold_quantile), 1, N - 1): the number of classes at or below q."""
    return int(min(max(round(num_classes * threshold_quantile), 1), num_classes - 1))


def quantile_levels(num_classes: int, threshold_quantile: float, threshold: int | None = None) -> np.ndarray:
    """The N - 1 quantile levels of the class edges, increasing, threshold_quantile the t_sh-th;
    t_sh = `threshold`, or threshold_class(N, threshold_quantile) when None."""
    t = threshold_class(num_classes, threshold_quantile) if threshold is None else threshold
    below = threshold_quantile * (np.arange(1, t + 1) / t)  # the last level is exactly q
    above = threshold_quantile + (1.0 - threshold_quantile) * np.arange(1, num_classes - t) / (num_classes - t)
    return np.concatenate([below, above])


def assign_classes(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Class k (1-based) for edge[k-2] < v <= edge[k-1]: values [n], edges [N - 1] -> int32 [n]."""
    return (np.searchsorted(edges, values, side="left") + 1).astype(np.int32)


def bucketize(
    values, num_classes: int, threshold_quantile: float = 0.6, threshold: int | None = None, name: str = "values"
) -> Buckets:
    """Bucket a continuous signal values [n] into classes 1..N with a binary threshold t_sh such
    that class > t_sh iff value > the threshold_quantile-quantile, the same for every N.
    t_sh = `threshold` if given (1..N-1), else threshold_class(N, threshold_quantile).

    Raises ValueError for N < 2, a quantile outside (0, 1), a threshold outside 1..N-1, NaN / inf
    values, fewer distinct values than classes, or ties that leave a class empty.
    """
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
    if not 0.0 < threshold_quantile < 1.0:
        raise ValueError(f"threshold_quantile must lie in (0, 1), got {threshold_quantile}")
    if threshold is not None and not (int(threshold) == threshold and 1 <= threshold < num_classes):
        raise ValueError(f"threshold must be an integer in 1..{int(num_classes) - 1}, got {threshold}")
    threshold = threshold_class(int(num_classes), threshold_quantile) if threshold is None else int(threshold)
    array = _finite_vector(values, name)
    distinct = np.unique(array).size
    if distinct < num_classes:
        raise ValueError(f"{name} has {distinct} distinct value(s); {num_classes} classes need at least as many")
    num_classes = int(num_classes)
    edges = np.quantile(array, quantile_levels(num_classes, threshold_quantile, threshold))
    classes = assign_classes(array, edges)
    counts = np.bincount(classes, minlength=num_classes + 1)[1:]
    if (counts == 0).any():
        empty = (np.flatnonzero(counts == 0) + 1).tolist()
        raise ValueError(
            f"{name}: class(es) {empty} of {num_classes} are empty because of tied values "
            f"(quantile edges {np.round(edges, 6).tolist()}); use fewer classes"
        )
    return Buckets(classes, threshold, edges)


def signal_to_ratings(frame: pd.DataFrame, column: str, num_classes: int, threshold_quantile: float = 0.6,
                      rating_column: str = "rating", keep_signal: bool = False) -> tuple[pd.DataFrame, Buckets]:
    """An implicit signal (play count, dwell time, ...) as a 1..N "rating" column (appendix A.1).

    Returns (a copy of frame with int64 `rating_column` = bucketize(frame[column], N,
    threshold_quantile).classes, the Buckets). Feed the frame to the data pipeline (e.g. written as
    CSV, DataConfig(format="csv")) with num_ratings=N and threshold=buckets.threshold: the label is
    then signal > its threshold_quantile-quantile. The signal column is dropped unless keep_signal,
    since as a model input it would leak the target. Buckets are cut on the rows given, before
    the pipeline's de-duplication and k-core filter.
    """
    if column not in frame.columns:
        raise ValueError(f"signal column {column!r} not in the DataFrame; columns are {list(frame.columns)}")
    if rating_column in frame.columns and rating_column != column:
        raise ValueError(f"the DataFrame already has a {rating_column!r} column; drop it or pass another rating_column")
    if not pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column]):
        raise ValueError(f"signal column {column!r} must be numeric, got dtype {frame[column].dtype}")
    buckets = bucketize(frame[column].to_numpy(np.float64), num_classes, threshold_quantile, name=f"column {column!r}")
    out = frame.drop(columns=[] if keep_signal else [column])
    out[rating_column] = buckets.classes.astype(np.int64)
    return out, buckets
