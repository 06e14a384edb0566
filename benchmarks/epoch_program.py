"""The compiled training epoch of a `<model>_ml100k` config, exactly as training runs it
(Trainer.train_epoch, compiled ahead): what benchmarks.vs_torch times and benchmarks.profile_epoch
traces. Call after lipctr.runtime.configure_xla()."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple


class EpochProgram(NamedTuple):
    compiled: Any  # compiled(state, stopping, train) -> (state, stats)
    state: Any
    stopping: Any
    train: dict
    config: dict
    num_train: int


def ml100k_epoch(model: str, variant: str, seeds, data: str) -> EpochProgram:
    """The epoch program of `variant` ("orig" / "smooth", the config's lambda_r) for `seeds`
    members on the ML-100K atomic files in `data`."""
    from experiments.configs import named_config
    from experiments.run import build_trainer, config_variant
    from lipctr.data import get_preset, load_dataset
    from lipctr.train import to_device

    config = named_config(f"{model}_ml100k")
    config["seeds"] = list(seeds)
    dataset = load_dataset(dataclasses.replace(get_preset("ml100k"), path=data))
    trainer = build_trainer(config, dataset, variant)
    train = to_device(dataset.train)
    members = config_variant(config, variant).members(config["seeds"])
    state, stopping = trainer.init(train["features"], [m.seed for m in members], [m.lambda_r for m in members])
    compiled = trainer.train_epoch.lower(state, stopping, train).compile()
    return EpochProgram(compiled, state, stopping, train, config, len(dataset.train))
