"""Iterative k-core filtering of a user-item interaction list."""

from __future__ import annotations

import numpy as np


def kcore_rows(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Indices (ascending) of the interactions that survive iterative k-core filtering.

    users, items: int [n] codes in 0..U-1 / 0..I-1. Users and items with fewer than k
    interactions are dropped together with their interactions, repeatedly, until every
    remaining user and item has at least k (the unique maximal k-core). k <= 1 keeps all.
    """
    rows = np.arange(len(users))
    if k <= 1:
        return rows
    n_users = int(users.max()) + 1 if len(users) else 0
    n_items = int(items.max()) + 1 if len(items) else 0
    while len(rows):
        user_counts = np.bincount(users, minlength=n_users)
        item_counts = np.bincount(items, minlength=n_items)
        ok = (user_counts[users] >= k) & (item_counts[items] >= k)
        if ok.all():
            break
        rows, users, items = rows[ok], users[ok], items[ok]
    return rows
