"""Seeded random train / valid / test split of interactions (RecBole's rounding)."""

from __future__ import annotations

import numpy as np


def split_sizes(total: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Sizes as RecBole computes them: valid and test = floor(ratio * total), bumped to 1 when
    0 < ratio * total < 1 (while train keeps more than one); train gets the rest."""
    counts = [int(np.floor(r * total + 1e-9)) for r in ratios]
    counts[0] = total - counts[1] - counts[2]
    for i in (2, 1):
        if counts[0] <= 1:
            break
        if 0 < ratios[i] * total < 1:
            counts[i] += 1
            counts[0] -= 1
    return counts[0], counts[1], counts[2]


def random_split(total: int, ratios: tuple[float, float, float], seed: int) -> tuple[np.ndarray, ...]:
    """(train, valid, test) index arrays: a seeded permutation of range(total) cut by `split_sizes`."""
    order = np.random.default_rng(seed).permutation(total)
    n_train, n_valid, _ = split_sizes(total, ratios)
    return order[:n_train], order[n_train : n_train + n_valid], order[n_train + n_valid :]
