"""Experiment configs: plain, validated data.

A config is a nested dict with exactly these sections and keys (`DEFAULTS`); a named config
`<model>_<dataset>` (e.g. "dcnv2_ml1m") is the defaults, then the dataset's settings, then the
model's, then the (model, dataset) overrides of the authors' runs (REFERENCE.md section 2).
`validate` rejects unknown keys and wrong types, naming the key.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from pathlib import Path

from lipctr.controls import ControlError, Controls
from lipctr.data import PRESETS, DataError, get_preset
from lipctr.embedding_optim import EMBEDDING_OPTIMIZERS, SPARSE_OPTIMIZERS
from lipctr.ensemble import MEMBER_MODES
from lipctr.precision import COMPUTE_DTYPES
from lipctr.losses import AGGREGATIONS, LossConfig
from lipctr.models import MODEL_NAMES, default_hparams
from lipctr.sharding import MeshError, parse_mesh
from lipctr.train import TrainConfig

from experiments import data_source

DATASETS = tuple(PRESETS)  # the real presets of lipctr.data.registry

DEFAULTS: dict = {
    "model": "dcnv2",
    "dataset": "ml100k",
    "data_path": "",  # dataset folder; "" = the preset's folder under datasets/
    "data": {},  # lipctr.data.DataConfig fields for the data (experiments.data_source); {} = the preset's
    "model_hparams": {},  # overrides of the model's own defaults (lipctr.models.default_hparams)
    "train": {k: v for k, v in dataclasses.asdict(TrainConfig()).items()},  # lipctr.train's defaults
    "loss": {  # lipctr.losses.LossConfig's defaults: lambda_r 0.7, aggregation "prob" (eq. 11; "logit_sum" =
        # the authors' code), scale_penalty True (the backbone's L2 term scaled by 1 - lambda_r, as the authors do)
        key: getattr(LossConfig(), key) for key in ("lambda_r", "aggregation", "scale_penalty")
    },
    "controls": {  # the mechanism study's controls (lipctr.controls); the defaults change nothing
        "rating_noise": "none",  # "within_label": training ratings permuted within their binary class
        "rating_noise_seed": 0,
        "rating_classes": 0,  # N > 0: ratings merged into N classes (ML: 3 = 1-2/3/4-5, 2 = binary)
        "aux_rating": False,  # smooth = the K = 1 BCE head plus a separate rating head
        "label_smoothing": 0.0,  # epsilon of the BCE targets, in [0, 1)
        "embedding_l2": 0.0,  # weight of an explicit squared-L2 term on the embedding tables
    },
    "variants": ["orig", "smooth"],
    "seeds": [2020, 2021, 2022, 2023, 2024],
    "lambda_sweep": [],
    "checkpoint_every": 1,  # epochs between resumable-state checkpoints (and always at the end)  # e.g. [0.1, 0.3, 0.5, 0.7, 0.9]: smooth members for every (lambda, seed)
    "grid": {},  # per-member hyper-parameter grid {dotted_key: [values]}, one ensemble (experiments.configs.grid)
    "grid_programs": {},  # shape-changing grid {dotted_key: [values]}: one program per point, one after another
    "select_lambda": False,  # also train the lambda_r sweep and report smooth at the validation-chosen lambda_r
    "max_members": 0,  # a grid's members per wave (program); 0 = all at once on CPU, from free memory on accelerators
    "mesh": "",  # device mesh, e.g. "seeds=4" or "seeds=2,data=2" (lipctr.sharding); "" = one device
    "log": {"tensorboard": False},  # true: TensorBoard event files per member (experiments.tensorboard_log)
    "eval": {
        "num_negatives": 100,
        "relevance": "positive",  # "positive" (label 1) or "any" (every rated test item, RecBole)
        "ranking_seed": 0,
        "ks": [10, 20],
    },
}

# lambda_r and learning rates of the authors' runs (REFERENCE.md section 2); ml100k uses ml1m's.
MODEL_SETTINGS: dict[str, dict] = {
    "widedeep": {"train": {"learning_rate": 5e-3}, "loss": {"lambda_r": 0.1}},
    "nfm": {"train": {"learning_rate": 5e-3}, "loss": {"lambda_r": 0.5}},
    "xdeepfm": {"train": {"learning_rate": 5e-4}, "loss": {"lambda_r": 0.1}},
    "autoint": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.5}},
    "fignn": {"train": {"learning_rate": 5e-3}, "loss": {"lambda_r": 0.1}},
    "dcnv2": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.7}},
    "eulernet": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.1}},
    # no authors' runs: learning rate 1e-3 of RecBole's / FuxiCTR's published settings; lambda_r 0.5,
    # the middle of the paper's grid (tune it on validation); architecture: the registry defaults (docs/models.md)
    "deepfm": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.5}},
    "dcn": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.5}},
    "finalmlp": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.5}},
    "gdcn": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.5}},
    "dcnv3": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.5}},
}

MODEL_DATASET_SETTINGS: dict[tuple[str, str], dict] = {
    ("dcnv2", "yelp2018"): {"train": {"learning_rate": 5e-3}, "model_hparams": {"mlp_hidden_size": [64, 64, 64]}},
    ("widedeep", "yelp2018"): {
        "train": {"learning_rate": 5e-4},
        "model_hparams": {"mlp_hidden_size": [256, 256, 256], "dropout_prob": 0.1},
    },
    ("xdeepfm", "yelp2018"): {"model_hparams": {"cin_layer_size": [100, 100, 100]}},
    ("autoint", "yelp2018"): {
        "loss": {"lambda_r": 0.5},
        "model_hparams": {"dropout_probs": [0.0, 0.0, 0.0], "mlp_hidden_size": [128, 128, 128]},
    },
    ("eulernet", "yelp2018"): {"loss": {"lambda_r": 0.5}, "model_hparams": {"drop_im": 0.3}},
    ("dcnv2", "amazon_book"): {"model_hparams": {"cross_layer_num": 4, "mlp_hidden_size": [64, 64]}},
    ("widedeep", "amazon_book"): {
        "train": {"learning_rate": 5e-4},
        "model_hparams": {"mlp_hidden_size": [64, 64, 64], "dropout_prob": 0.1},
    },
    ("xdeepfm", "amazon_book"): {
        "train": {"learning_rate": 1e-4},
        "model_hparams": {"dropout_prob": 0.5, "mlp_hidden_size": [256, 256, 256]},
    },
    ("autoint", "amazon_book"): {
        "loss": {"lambda_r": 0.5},
        "model_hparams": {"mlp_hidden_size": [64, 64, 64], "dropout_probs": [0.0, 0.0, 0.0]},
    },
    ("eulernet", "amazon_book"): {"loss": {"lambda_r": 0.5}, "model_hparams": {"reg_weight": 0.0}},
}


class ConfigError(ValueError):
    """A config key that is unknown, of the wrong type, or out of range."""


def merge(base: dict, update: dict) -> dict:
    """A deep copy of base with update's keys written over it (nested dicts merged)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "model_hparams":
            out[key] = merge(out[key], value)
        elif key == "model_hparams":
            out[key] = {**out.get(key, {}), **copy.deepcopy(value)}
        else:
            out[key] = copy.deepcopy(value)
    return out


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
                                  f"(e.g. dcnv2_ml100k), got {name!r}; <model> is one of {', '.join(MODEL_NAMES)}, <dataset> one of "
                                  f"{', '.join(DATASETS)}")
            base = named_config(name)
        return validate(merge(base, data), source=str(path))
    return named_config(name_or_path)


def _type_name(value) -> str:
    return type(value).__name__


def _check(value, default, key: str, source: str):
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, (list, tuple))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"{source}: key {key!r} must be {_type_name(default)}, got {_type_name(value)} ({value!r})"
        )


def _check_section(config: dict, defaults: dict, prefix: str, source: str):
    for key, value in config.items():
        full = f"{prefix}{key}"
        if key not in defaults:
            raise ConfigError(f"{source}: unknown key {full!r}; known: {', '.join(prefix + k for k in defaults)}")
        if isinstance(defaults[key], dict) and key not in ("model_hparams", "data", "grid", "grid_programs"):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: key {full!r} must be a table/dict, got {_type_name(value)}")
            _check_section(value, defaults[key], full + ".", source)
        else:
            _check(value, defaults[key], full, source)


def validate(config: dict, source: str = "config") -> dict:
    """Check keys, types and values; return the config with every section filled in."""
    _check_section(config, DEFAULTS, "", source)
    config = merge(DEFAULTS, config)
    if config["model"] not in MODEL_NAMES:
        raise ConfigError(f"{source}: key 'model' must be one of {', '.join(MODEL_NAMES)}, got {config['model']!r}")
    if config["dataset"] not in DATASETS:
        raise ConfigError(f"{source}: key 'dataset' must be one of {', '.join(DATASETS)}, got {config['dataset']!r}")
    known = default_hparams(config["model"])
    for key, value in config["model_hparams"].items():
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key 'model_hparams.{key}' for model {config['model']!r}; "
                f"known: {', '.join(sorted(known))}"
            )
        if known[key] is not None:
            _check(value, list(known[key]) if isinstance(known[key], tuple) else known[key],
                   f"model_hparams.{key}", source)
    try:
        data_source.check_table(config["data"])
        data_source.dataset_config(config)
    except DataError as error:
        raise ConfigError(f"{source}: {error}") from None
    if not set(config["variants"]) <= {"orig", "smooth"} or not config["variants"]:
        raise ConfigError(f"{source}: key 'variants' must list 'orig' and/or 'smooth', got {config['variants']!r}")
    if not config["seeds"] or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                      for s in config["seeds"]):
        raise ConfigError(f"{source}: key 'seeds' must be a non-empty list of non-negative ints, got {config['seeds']!r}")
    _check_distinct(config["seeds"], "seeds", source)
    for lam in [config["loss"]["lambda_r"], *config["lambda_sweep"]]:
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= float(lam) <= 1.0:
            raise ConfigError(f"{source}: lambda_r values must lie in [0, 1], got {lam!r}")
    _check_distinct(config["lambda_sweep"], "lambda_sweep", source)
    _check_training_numbers(config, source)
    if config["mesh"]:
        try:
            shards = parse_mesh(config["mesh"])["data"]
        except MeshError as error:
            raise ConfigError(f"{source}: key 'mesh': {error}") from None
        if data_source.placement(config) == "sharded" and config["train"]["batch_size"] % shards:
            raise ConfigError(f"{source}: key 'train.batch_size' ({config['train']['batch_size']}) must be a multiple "
                              f"of the mesh's data axis ({shards}) under data.placement 'sharded'")
    try:
        preset = get_preset(config["dataset"])
        Controls(**config["controls"]).check_scale(preset.num_ratings, preset.threshold)
    except ControlError as error:
        raise ConfigError(f"{source}: {error}") from None
    if config["train"]["members"] not in MEMBER_MODES:
        raise ConfigError(f"{source}: key 'train.members' must be one of {', '.join(MEMBER_MODES)}, "
                          f"got {config['train']['members']!r}")
    if config["train"]["compute_dtype"] not in COMPUTE_DTYPES:
        raise ConfigError(f"{source}: key 'train.compute_dtype' must be one of {', '.join(COMPUTE_DTYPES)}, "
                          f"got {config['train']['compute_dtype']!r}")
    _check_embedding_optimizer(config["train"], source)
    if config["loss"]["aggregation"] not in AGGREGATIONS:
        raise ConfigError(f"{source}: key 'loss.aggregation' must be 'prob' or 'logit_sum'")
    if config["eval"]["relevance"] not in ("positive", "any"):
        raise ConfigError(f"{source}: key 'eval.relevance' must be 'positive' or 'any'")
    if config["checkpoint_every"] < 1:
        raise ConfigError(f"{source}: key 'checkpoint_every' must be >= 1, got {config['checkpoint_every']}")
    if config["max_members"] < 0:
        raise ConfigError(f"{source}: key 'max_members' must be >= 0 (0 = automatic), got {config['max_members']}")
    if config["select_lambda"] and (config["grid"] or config["grid_programs"]):
        raise ConfigError(f"{source}: key 'select_lambda' (--select-lambda) cannot be combined with a grid; "
                          "put loss.lambda_r in the grid instead")
    if config["grid"] or config["grid_programs"]:
        from experiments.configs.grid import check_grids  # it validates each grid value with this function

        config = check_grids(config, source)
    return config


def _check_embedding_optimizer(train: dict, source: str) -> None:
    if train["embedding_optimizer"] not in EMBEDDING_OPTIMIZERS:
        raise ConfigError(f"{source}: key 'train.embedding_optimizer' must be one of {', '.join(EMBEDDING_OPTIMIZERS)}, "
                          f"got {train['embedding_optimizer']!r}")
    rate = train["embedding_learning_rate"]
    if not 0 <= rate < float("inf"):
        raise ConfigError(f"{source}: key 'train.embedding_learning_rate' must be >= 0 (0 = train.learning_rate), "
                          f"got {rate}")
    if rate and train["embedding_optimizer"] == "adamw":
        raise ConfigError(f"{source}: key 'train.embedding_learning_rate' applies to a sparse train.embedding_optimizer "
                          f"({', '.join(SPARSE_OPTIMIZERS)}); with 'adamw' the tables train at train.learning_rate")


def _check_distinct(values: list, key: str, source: str) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ConfigError(f"{source}: key {key!r} lists {repeated} more than once; each member needs its own value")


def _check_training_numbers(config: dict, source: str) -> None:
    """Ranges of the numeric train and eval keys (the dataset-dependent upper bound of
    eval.num_negatives is checked when the ranking candidates are drawn, before any output)."""
    train, ev = config["train"], config["eval"]
    for key in ("batch_size", "eval_batch_size", "max_epochs", "patience"):
        if train[key] < 1:
            raise ConfigError(f"{source}: key 'train.{key}' must be >= 1, got {train[key]}")
    if not 0 < train["learning_rate"] < float("inf"):
        raise ConfigError(f"{source}: key 'train.learning_rate' must be a positive number, got {train['learning_rate']}")
    if not 0 <= train["weight_decay"] < float("inf"):
        raise ConfigError(f"{source}: key 'train.weight_decay' must be >= 0, got {train['weight_decay']}")
    if ev["num_negatives"] < 1:
        raise ConfigError(f"{source}: key 'eval.num_negatives' must be >= 1 (items ranked against each positive), "
                          f"got {ev['num_negatives']}")
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ev["ks"]):
        raise ConfigError(f"{source}: key 'eval.ks' must list cutoffs k >= 1 (NDCG@k, Recall@k), got {ev['ks']!r}")
    _check_distinct(ev["ks"], "eval.ks", source)


def parse_toml_value(text: str, strict: bool = False):
    """A command-line value in TOML syntax (5e-3, [64, 64], true, "x"). Text that is not TOML is
    the string itself, or with `strict` a ValueError."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if strict:
            raise ValueError(f"{text!r} is not a TOML value") from None
        return text


def model_hparams(config: dict) -> dict:
    """The model's constructor keyword arguments (lists become tuples: flax fields are hashable)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config["model_hparams"].items()}
