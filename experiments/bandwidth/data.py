"""The bandwidth sweep's data: one synthetic dataset re-bucketed into N rating classes per N,
with binary labels identical for every N (see experiments.bandwidth)."""

from __future__ import annotations

import dataclasses

import numpy as np

from lipctr.data import synthetic_dataset
from lipctr.data.schema import Dataset, Split
from lipctr.rating_buckets import Buckets, bucketize


def rebucket(dataset: Dataset, preference: dict[str, np.ndarray], num_classes: int,
             threshold_quantile: float) -> tuple[Dataset, Buckets]:
    """The dataset with ratings 1..N bucketed from the continuous preference of each split
    (float [n_split]); edges are fitted on train and applied to valid / test."""
    for name, split in dataset.splits.items():
        if name not in preference or len(preference[name]) != len(split):
            got = None if name not in preference else len(preference[name])
            raise ValueError(f"preference[{name!r}] must hold one value per {name} example ({len(split)}), got {got}")
    buckets = bucketize(preference["train"], num_classes, threshold_quantile, name="train preference")
    splits = {}
    for name, split in dataset.splits.items():
        classes = buckets.classes if name == "train" else buckets.assign(preference[name], f"{name} preference")
        splits[name] = Split(split.features, classes, (classes > buckets.threshold).astype(np.float32))
    schema = dataclasses.replace(dataset.schema, num_ratings=num_classes, threshold=buckets.threshold)
    stats = {**dataset.stats, "bandwidth": num_classes, "threshold_quantile": threshold_quantile}
    return dataclasses.replace(dataset, name=f"{dataset.name}_N{num_classes}", schema=schema, stats=stats,
                               **splits), buckets

def check_same_labels(datasets: dict[int, Dataset]) -> None:
    """Raise ValueError unless every dataset has the same binary labels in every split."""
    first_n, first = next(iter(datasets.items()))
    for n, dataset in datasets.items():
        for name, split in dataset.splits.items():
            other = first.splits[name].label
            if split.label.shape != other.shape or not np.array_equal(split.label, other):
                diff = int(np.sum(split.label != other)) if split.label.shape == other.shape else "all"
                raise ValueError(f"binary {name} labels differ between N={first_n} and N={n} ({diff} examples); "
                                 "the sweep would not compare like with like")

def bandwidth_datasets(dataset: Dataset, preference: dict[str, np.ndarray], class_counts, threshold_quantile: float):
    """{N: (dataset, buckets)} for every N, after checking that the binary labels agree."""
    out = {int(n): rebucket(dataset, preference, int(n), threshold_quantile) for n in class_counts}
    check_same_labels({n: d for n, (d, _) in out.items()})
    return out

def load_data(config: dict) -> tuple[Dataset, dict[str, np.ndarray]]:
    """The config's synthetic preset (bandwidth.preset, bandwidth.data_seed) with the continuous
    preference of every split's rows."""
    return synthetic_dataset(config["bandwidth"]["preset"], config["bandwidth"]["data_seed"], return_preference=True)
