"""Per-member hyper-parameters: the numeric settings that change no shape, so that members
differing in them still train inside ONE compiled ensemble program (as seeds and lambda_r do).

A config key (dotted, as in experiments/configs) maps to the name the member carries in
`TrainState.hparams` (a float32 [] per member, [M] stacked):

  train.learning_rate, train.weight_decay   -> the member's AdamW (lipctr.train.make_optimizer)
  train.embedding_learning_rate             -> its sparse embedding optimizer's rate (lipctr.embedding_optim)
  controls.label_smoothing                  -> its LossConfig.label_smoothing
  controls.embedding_l2                     -> its controlled model's embedding_l2
  model_hparams.<dropout rate>              -> the backbone's field (dropout_prob, attn_dropout_prob,
                                               hidden_dropout_prob, drop_ex, drop_im, net_dropout,
                                               mlp1/2_dropout, deep/shallow_net_dropout; AutoInt's
                                               dropout_probs: one rate for all its layers)
  model_hparams.reg_weight                  -> the backbone's L2 weight (dcnv2, xdeepfm, eulernet, dcn)
  loss.lambda_r                             -> lambda_r, the member's own TrainState field

Everything else (embedding_dim, layer sizes and counts, booleans, names) is not per-member: a
grid over it is one program per value.
"""

from __future__ import annotations

import dataclasses
import itertools

from lipctr.losses import LossConfig
from lipctr.models import default_hparams

_FIXED = {"train.learning_rate": "learning_rate", "train.weight_decay": "weight_decay",
          "train.embedding_learning_rate": "embedding_learning_rate",
          "loss.lambda_r": "lambda_r", "controls.label_smoothing": "label_smoothing",
          "controls.embedding_l2": "embedding_l2"}
DROPOUT_FIELDS = ("dropout_prob", "dropout_probs", "attn_dropout_prob", "hidden_dropout_prob", "drop_ex", "drop_im",
                  "net_dropout", "mlp1_dropout", "mlp2_dropout", "deep_net_dropout", "shallow_net_dropout")
MODEL_FIELDS = DROPOUT_FIELDS + ("reg_weight",)
LOSS_NAMES = ("label_smoothing",)  # LossConfig fields (lambda_r is TrainState's own)
OPTIMIZER_NAMES = ("learning_rate", "weight_decay", "embedding_learning_rate")
SHORT_NAMES = {"train.learning_rate": "lr", "train.weight_decay": "wd", "train.embedding_learning_rate": "elr",
               "loss.lambda_r": "lambda", "controls.label_smoothing": "ls", "controls.embedding_l2": "embreg"}
# the values each name may take: (lowest, lowest included, highest, highest included)
_POSITIVE = (0.0, False, float("inf"), False)
_RANGES = {"learning_rate": _POSITIVE, "embedding_learning_rate": _POSITIVE, "lambda_r": (0.0, True, 1.0, True),
           "label_smoothing": (0.0, True, 1.0, False), **{f: (0.0, True, 1.0, False) for f in DROPOUT_FIELDS}}
_NON_NEGATIVE = (0.0, True, float("inf"), False)


def member_hparam(dotted_key: str, model: str) -> str | None:
    """The name a member of backbone `model` carries for a config key, e.g. "train.learning_rate" ->
    "learning_rate", "model_hparams.dropout_prob" -> "dropout_prob"; None when the key is not
    per-member (the caller checks that it is a config key at all)."""
    if dotted_key in _FIXED:
        return _FIXED[dotted_key]
    section, _, field = dotted_key.partition(".")
    if section == "model_hparams" and field in MODEL_FIELDS and field in default_hparams(model):
        return field
    return None


def per_member_keys(model: str) -> tuple[str, ...]:
    """Every per-member config key of backbone `model` (for error messages)."""
    fields = [f"model_hparams.{f}" for f in MODEL_FIELDS if f in default_hparams(model)]
    return tuple(_FIXED) + tuple(fields)


def short_name(dotted_key: str) -> str:
    """The key's name in member labels: "lr", "wd", "lambda", "ls", "embreg" or the model field."""
    return SHORT_NAMES.get(dotted_key, dotted_key.rpartition(".")[2])


def check_value(dotted_key: str, value) -> float:
    """value as a float; ValueError naming the key unless it is a number in the name's range
    (learning rate > 0; lambda_r in [0, 1]; dropout rates and label smoothing in [0, 1); others >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"grid {dotted_key}: expected a number, got {value!r}")
    name = _FIXED.get(dotted_key, dotted_key.rpartition(".")[2])
    low, low_in, high, high_in = _RANGES.get(name, _NON_NEGATIVE)
    inside = (value >= low if low_in else value > low) and (value <= high if high_in else value < high)
    if not inside:
        interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
        raise ValueError(f"grid {dotted_key}: {value!r} must lie in {interval}")
    return float(value)


def grid_points(grid: dict) -> list[dict]:
    """The product of a grid {dotted_key: [values]} in key order (the last key varies fastest):
    [{dotted_key: value}]; {} -> [{}] (one point, no grid)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def stacked_values(hparams_per_member, model: str) -> dict[str, list[float]]:
    """[(dotted_key, value) pairs] of each member (Member.hparams) -> {name: [value of each member]},
    the input of lipctr.train.init_members; loss.lambda_r is left out (it is Member.lambda_r)."""
    stacked: dict[str, list[float]] = {}
    for pairs in hparams_per_member:
        for key, value in pairs:
            name = member_hparam(key, model)
            if name is None:
                raise ValueError(f"grid {key}: not a per-member hyper-parameter of {model} "
                                 f"(per-member: {', '.join(per_member_keys(model))})")
            if name != "lambda_r":
                stacked.setdefault(name, []).append(float(value))
    lengths = {len(v) for v in stacked.values()}
    if len(lengths) > 1 or (stacked and lengths != {len(hparams_per_member)}):
        raise ValueError("every member must carry the same hyper-parameter keys")
    return stacked


def check_names(model, names) -> None:
    """ValueError unless every name is a per-member hyper-parameter `model` (a built CTRModel) has."""
    for name in names:
        model_field = name in MODEL_FIELDS or name == "embedding_l2"
        if not (name in OPTIMIZER_NAMES or name in LOSS_NAMES or (model_field and hasattr(model, name))):
            hint = (" (a per-member embedding_l2 needs lipctr.models.controlled.controlled_model(..., "
                    "per_member_embedding_l2=True))" if name == "embedding_l2" else "")
            raise ValueError(f"member hyper-parameter {name!r}: not one {type(model).__name__} takes per member{hint}")


def member_model(model, hparams: dict):
    """`model` with the member's own dropout rates, reg_weight and embedding_l2 (traced values);
    a tuple-valued rate field (AutoInt's dropout_probs) takes the one value in every entry."""
    fields = {}
    for name, value in hparams.items():
        if name in MODEL_FIELDS or name == "embedding_l2":
            current = getattr(model, name)
            fields[name] = tuple(value for _ in current) if isinstance(current, tuple) else value
    return model.clone(**fields) if fields else model


def member_loss_config(loss_config: LossConfig, lambda_r, hparams: dict) -> LossConfig:
    """`loss_config` with the member's lambda_r and label smoothing (traced values)."""
    own = {name: hparams[name] for name in LOSS_NAMES if name in hparams}
    return dataclasses.replace(loss_config, lambda_r=lambda_r, **own)
