"""A config's hyper-parameter grids: parsing and validation, naming the key.

Two tables, each {dotted_key: [values]} (a TOML table may also nest them: [grid.train]):
  grid           per-member keys (lipctr.member_hparams): every point of their product is trained
                 inside ONE compiled ensemble, crossed with the seeds;
  grid_programs  keys that change a shape or are not numbers (embedding_dim, mlp_hidden_size,
                 layer counts, ...): one program per point, run one after another, each holding
                 the whole per-member grid.
"""

from __future__ import annotations

import re

from experiments.configs.defaults import DEFAULTS, merge
from experiments.configs.error import ConfigError
from experiments.configs.toml import parse_toml_value
from lipctr.member_hparams import check_value, member_hparam, per_member_keys
from lipctr.models import default_hparams

SECTIONS = ("train", "loss", "controls", "model_hparams")  # where grid keys live
TABLES = {"grid": "--grid", "grid_programs": "--grid-programs"}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def flatten(table: dict, name: str, source: str, prefix: str = "") -> dict:
    """{dotted_key: values} of a grid table that may nest sections; ConfigError on a key given twice."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: key {name!r} must be a table of KEY = [values], got {type(table).__name__}")
    flat: dict = {}
    for key, value in table.items():
        full = f"{prefix}{key}"
        items = flatten(value, name, source, full + ".") if isinstance(value, dict) else {full: value}
        for k, v in items.items():
            if k in flat:
                raise ConfigError(f"{source}: {name} key {k!r} is given twice")
            flat[k] = v
    return flat


def parse_flag(flag: str, text: str) -> tuple[str, list]:
    """KEY=VALUES of --grid / --grid-programs: VALUES comma-separated TOML values (1e-3,5e-3) or
    one TOML array of them ([[64, 64], [128]]); (key, values) with each value parsed."""
    if "=" not in text:
        raise ConfigError(f"{flag} {text!r}: expected KEY=VALUES, e.g. train.learning_rate=1e-3,5e-3")
    key, values = (part.strip() for part in text.split("=", 1))
    if not values:
        raise ConfigError(f"{flag} key {key!r}: empty list of values; expected e.g. {key}=0.1,0.3")
    if values.startswith("["):
        try:
            parsed = parse_toml_value(values, strict=True)
        except ValueError:
            raise ConfigError(f"{flag} key {key!r}: {values!r} is not a TOML array of values") from None
        return key, parsed
    try:
        # --grid-programs: a bare word is a string (train.embedding_optimizer=adamw,lazy_adam)
        words = flag == "--grid-programs"
        return key, [parse_toml_value(item.strip(), strict=not (words and _WORD.fullmatch(item.strip())))
                     for item in values.split(",")]
    except ValueError as error:
        raise ConfigError(f"{flag} key {key!r}: {error}; expected comma-separated values, e.g. 1e-3,5e-3") from None


def _known_key(key: str, config: dict, name: str, source: str) -> None:
    section, _, leaf = key.partition(".")
    known = default_hparams(config["model"]) if section == "model_hparams" else DEFAULTS.get(section, {})
    if section not in SECTIONS or leaf not in known:
        raise ConfigError(f"{source}: unknown {name} key {key!r}; a grid key is one of "
                          f"{', '.join(s + '.<key>' for s in SECTIONS)} naming a config key "
                          f"(per-member: {', '.join(per_member_keys(config['model']))})")


def _check_values(key: str, values, name: str, config: dict, source: str, numeric: bool, validate) -> None:
    where = f"{source}: {name} key {key!r}"
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"{where}: expected a non-empty list of values, got {values!r}")
    for value in values:
        if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{where}: value {value!r} is not a number (per-member values are numbers)")
        if values.count(value) > 1:
            raise ConfigError(f"{where}: lists {value!r} more than once; each point needs its own value")
        section, leaf = key.split(".", 1)
        single = merge({**config, "grid": {}, "grid_programs": {}}, {section: {leaf: value}})
        try:
            if not (numeric and isinstance(_default(config, key), (list, tuple))):  # AutoInt's dropout_probs: one rate
                validate(single, source=source)
            if numeric:
                check_value(key, value)
        except (ConfigError, ValueError) as error:
            reason = str(error).removeprefix(source + ": ").removeprefix(f"grid {key}: ")
            raise ConfigError(f"{where} value {value!r}: {reason}") from None


def _default(config: dict, key: str):
    section, leaf = key.split(".", 1)
    return (default_hparams(config["model"]) if section == "model_hparams" else DEFAULTS[section]).get(leaf)


def check_grids(config: dict, source: str, validate) -> dict:
    """config with its grid tables flattened to {dotted_key: [values]} and checked: known keys,
    per-member keys only in `grid`, non-empty lists of distinct valid values (each written over the
    config and checked by `validate`, experiments.configs.validation's); ConfigError naming the key."""
    grid = flatten(config["grid"], "grid", source)
    programs = flatten(config["grid_programs"], "grid_programs", source)
    for key in grid.keys() & programs.keys():
        raise ConfigError(f"{source}: key {key!r} is in both grid and grid_programs; give it once")
    for name, table in (("grid", grid), ("grid_programs", programs)):
        for key, values in table.items():
            _known_key(key, config, name, source)
            per_member = member_hparam(key, config["model"]) is not None
            if name == "grid" and not per_member:
                raise ConfigError(f"{source}: grid key {key!r} changes a shape or is not a number, so it cannot "
                                  f"differ inside one program; give it as grid_programs / --grid-programs "
                                  f"(one program per value; per-member keys: "
                                  f"{', '.join(per_member_keys(config['model']))})")
            _check_values(key, values, name, config, source, name == "grid", validate)
    if "loss.lambda_r" in grid or "loss.lambda_r" in programs:
        if config["lambda_sweep"]:
            raise ConfigError(f"{source}: grid key 'loss.lambda_r' and key 'lambda_sweep' both set lambda_r; give one")
        if "smooth" not in config["variants"]:
            raise ConfigError(f"{source}: grid key 'loss.lambda_r' needs the smooth variant (orig has lambda_r 0)")
    return {**config, "grid": grid, "grid_programs": programs}


def variant_grid(config: dict, variant: str) -> dict:
    """The per-member grid a variant trains: smooth the whole grid, orig the grid without
    loss.lambda_r (orig's lambda_r is 0), so both are tuned over the same shared keys."""
    return {k: v for k, v in config["grid"].items() if variant != "orig" or k != "loss.lambda_r"}
