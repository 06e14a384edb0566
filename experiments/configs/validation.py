"""Config validation: `validate` rejects unknown keys, wrong types and out-of-range values, naming
the key (with experiments.configs.error's `ConfigError`)."""

from __future__ import annotations

from experiments import data_source
from experiments.configs.defaults import DATASETS, DEFAULTS, merge
from experiments.configs.error import ConfigError
from experiments.configs.grid import check_grids
from lipctr.controls import ControlError, Controls
from lipctr.data import DataError, get_preset
from lipctr.data.registry import SYNTHETIC_PRESETS
from lipctr.embedding_optim import EMBEDDING_OPTIMIZERS, SPARSE_OPTIMIZERS
from lipctr.ensemble import MEMBER_MODES
from lipctr.losses import AGGREGATIONS
from lipctr.models import MODEL_NAMES, default_hparams
from lipctr.precision import COMPUTE_DTYPES
from lipctr.sharding import MeshError, parse_mesh
from lipctr.shuffle import SHUFFLES


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
        raise ConfigError(f"{source}: key 'seeds' must be a non-empty list of non-negative ints, "
                          f"got {config['seeds']!r}")
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
    if config["train"]["shuffle"] not in SHUFFLES:
        raise ConfigError(f"{source}: key 'train.shuffle' must be one of {', '.join(SHUFFLES)}, "
                          f"got {config['train']['shuffle']!r}")
    _check_embedding_optimizer(config["train"], source)
    _check_bandwidth(config["bandwidth"], source)
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
        config = check_grids(config, source, validate)
    return config


def _check_embedding_optimizer(train: dict, source: str) -> None:
    if train["embedding_optimizer"] not in EMBEDDING_OPTIMIZERS:
        raise ConfigError(f"{source}: key 'train.embedding_optimizer' must be one of "
                          f"{', '.join(EMBEDDING_OPTIMIZERS)}, "
                          f"got {train['embedding_optimizer']!r}")
    rate = train["embedding_learning_rate"]
    if not 0 <= rate < float("inf"):
        raise ConfigError(f"{source}: key 'train.embedding_learning_rate' must be >= 0 (0 = train.learning_rate), "
                          f"got {rate}")
    if rate and train["embedding_optimizer"] == "adamw":
        raise ConfigError(f"{source}: key 'train.embedding_learning_rate' applies to a sparse "
                          "train.embedding_optimizer "
                          f"({', '.join(SPARSE_OPTIMIZERS)}); with 'adamw' the tables train at train.learning_rate")


def _check_bandwidth(table: dict, source: str) -> None:
    """The bandwidth sweep's [bandwidth] table (experiments.bandwidth)."""
    if table["preset"] not in SYNTHETIC_PRESETS:
        raise ConfigError(f"{source}: key 'bandwidth.preset' must be one of {', '.join(SYNTHETIC_PRESETS)}, "
                          f"got {table['preset']!r}")
    classes = table["classes"]
    if not classes or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 2 for n in classes):
        raise ConfigError(f"{source}: key 'bandwidth.classes' must list numbers of rating classes >= 2, "
                          f"got {classes!r}")
    _check_distinct(classes, "bandwidth.classes", source)
    if not 0.0 < table["quantile"] < 1.0:
        raise ConfigError(f"{source}: key 'bandwidth.quantile' must lie in (0, 1), got {table['quantile']}")
    for key in ("data_seed", "lipschitz_examples", "power_iters"):
        if table[key] < (0 if key == "data_seed" else 1):
            raise ConfigError(f"{source}: key 'bandwidth.{key}' must be >= {0 if key == 'data_seed' else 1}, "
                              f"got {table[key]}")


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
        raise ConfigError(f"{source}: key 'train.learning_rate' must be a positive number, "
                          f"got {train['learning_rate']}")
    if not 0 <= train["weight_decay"] < float("inf"):
        raise ConfigError(f"{source}: key 'train.weight_decay' must be >= 0, got {train['weight_decay']}")
    if ev["num_negatives"] < 1:
        raise ConfigError(f"{source}: key 'eval.num_negatives' must be >= 1 (items ranked against each positive), "
                          f"got {ev['num_negatives']}")
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ev["ks"]):
        raise ConfigError(f"{source}: key 'eval.ks' must list cutoffs k >= 1 (NDCG@k, Recall@k), got {ev['ks']!r}")
    _check_distinct(ev["ks"], "eval.ks", source)
