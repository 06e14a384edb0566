"""The bandwidth sweep's data: one synthetic dataset re-bucketed into N rating classes per N,
with binary labels identical for every N (see experiments.bandwidth)."""

from __future__ import annotations

import dataclasses

import numpy as np

from lipctr.losses import LossConfig
from lipctr.rating_buckets import Buckets, bucketize
from lipctr.train import TrainConfig
from lipctr.data.schema import Dataset, Split
from lipctr.data import synthetic_dataset


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep depends on; hyper-parameters not given come from `<model>_ml1m`."""

    preset: str = "small"
    data_seed: int = 0
    model: str = "dcnv2"
    class_counts: tuple[int, ...] = (2, 3, 5, 10, 20)
    seeds: tuple[int, ...] = (2020, 2021, 2022)
    lambda_r: float = LossConfig.lambda_r
    threshold_quantile: float = 0.6
    aggregation: str = LossConfig.aggregation
    max_epochs: int = 50
    patience: int = TrainConfig.patience
    batch_size: int | None = None  # None = the model config's
    learning_rate: float | None = None  # None = the model config's
    lipschitz_examples: int = 256
    power_iters: int = 30
    model_hparams: tuple[tuple[str, object], ...] = ()  # (name, value) overrides of the model config's

    def __post_init__(self):
        counts = self.class_counts
        if not counts or min(counts) < 2 or len(set(counts)) != len(counts):
            raise ValueError(f"class_counts must be distinct numbers of classes >= 2, got {list(counts)}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if not 0.0 <= self.lambda_r <= 1.0:
            raise ValueError(f"lambda_r must lie in [0, 1], got {self.lambda_r}")
        if self.max_epochs < 1 or self.patience < 1 or self.lipschitz_examples < 1 or self.power_iters < 1:
            raise ValueError("max_epochs, patience, lipschitz_examples and power_iters must be >= 1")

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

def load_data(config: SweepConfig) -> tuple[Dataset, dict[str, np.ndarray]]:
    """The synthetic preset with the continuous preference of every split's rows."""
    return synthetic_dataset(config.preset, config.data_seed, return_preference=True)
