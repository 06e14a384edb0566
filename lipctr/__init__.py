"""lipctr: scaled (multi-rating) supervision as an implicit Lipschitz regulariser for CTR models.

The public API, each name imported on first use (so `import lipctr` stays cheap):

- losses (per-example, optax style): `scaled_supervision_loss`, `aux_rating_loss`;
  scoring: `click_probability`, `click_score`; a final layer: `RatingHead` (lipctr.supervision)
- implicit feedback -> ratings: `signal_to_ratings` (lipctr.rating_buckets)
- the built-in backbones: `build_model` (lipctr.models)
- the ensemble engine for any flax model: `Trainer`, `fit`, `TrainConfig`, `LossConfig`,
  `to_device` (lipctr.trainer, lipctr.train, lipctr.losses; docs/own-model.md)
- finished runs: `load_run` (lipctr.inference), `load_exported` (lipctr.export)
"""

__version__ = "0.1.0"

_LAZY = {
    "scaled_supervision_loss": "lipctr.supervision", "aux_rating_loss": "lipctr.supervision",
    "click_probability": "lipctr.supervision", "click_score": "lipctr.supervision", "RatingHead": "lipctr.supervision",
    "signal_to_ratings": "lipctr.rating_buckets", "build_model": "lipctr.models",
    "Trainer": "lipctr.trainer", "fit": "lipctr.trainer", "TrainConfig": "lipctr.train", "to_device": "lipctr.train",
    "LossConfig": "lipctr.losses", "load_run": "lipctr.inference", "load_exported": "lipctr.export",
}


def __getattr__(name: str):
    """A public name of `__all__`, imported from its module on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lipctr' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["__version__", *_LAZY]
