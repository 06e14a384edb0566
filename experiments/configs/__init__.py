"""Experiment configs: plain, validated data.

A config is a nested dict with exactly these sections and keys (`DEFAULTS`); a named config
`<model>_<dataset>` (e.g. "dcnv2_ml1m") is the defaults, then the dataset's settings, then the
model's, then the (model, dataset) overrides of the authors' runs (REFERENCE.md section 2).
`validate` rejects unknown keys and wrong types, naming the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from experiments.configs.defaults import DATASETS, DEFAULTS, MODEL_DATASET_SETTINGS, MODEL_SETTINGS, PAPER_MODELS, merge
from experiments.configs.error import ConfigError
from experiments.configs.toml import parse_toml_value
from experiments.configs.validation import validate
from lipctr.models import MODEL_NAMES

__all__ = ["ConfigError", "DATASETS", "DEFAULTS", "MODEL_DATASET_SETTINGS", "MODEL_SETTINGS", "PAPER_MODELS",
           "config_names", "load_config", "merge", "model_hparams", "named_config", "parse_toml_value", "validate"]


def config_names() -> list[str]:
    return [f"{m}_{d}" for m in MODEL_NAMES for d in DATASETS]


def named_config(name: str) -> dict:
    """The config "<model>_<dataset>", e.g. "dcnv2_ml1m"."""
    for dataset in DATASETS:
        if name.endswith("_" + dataset):
            model = name[: -len(dataset) - 1]
            if model in MODEL_NAMES:
                config = merge(DEFAULTS, {"model": model, "dataset": dataset})
                config = merge(config, MODEL_SETTINGS[model])
                config = merge(config, MODEL_DATASET_SETTINGS.get((model, dataset), {}))
                return validate(config, source=name)
    raise ConfigError(f"unknown config {name!r}; known: {', '.join(config_names())}, or a .toml file")


def load_config(name_or_path: str) -> dict:
    """A named config, or a TOML file whose keys are written over the defaults."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {path}: {error}") from None
        base = DEFAULTS
        if "base" in data:
            name = data.pop("base")
            if not isinstance(name, str) or name not in config_names():
                raise ConfigError(f"config file {path}: key 'base' must name a built-in config <model>_<dataset> "
                                  f"(e.g. dcnv2_ml100k), got {name!r}; <model> is one of {', '.join(MODEL_NAMES)}, "
                                  "<dataset> one of "
                                  f"{', '.join(DATASETS)}")
            base = named_config(name)
        return validate(merge(base, data), source=str(path))
    return named_config(name_or_path)


def model_hparams(config: dict) -> dict:
    """The model's constructor keyword arguments (lists become tuples: flax fields are hashable)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config["model_hparams"].items()}
