"""Model registry: `build_model("dcnv2", schema, num_outputs=5, **hparams)`.

Each backbone lives in its own file; its hyper-parameters are the dataclass fields of its
module, with the authors' ML-1M settings as defaults (the five added
backbones: RecBole's / FuxiCTR's published settings, docs/models.md) (`default_hparams(name)`).
"""

from __future__ import annotations

import dataclasses
import importlib

import jax
import jax.numpy as jnp

from lipctr.data.schema import Schema
from lipctr.models.base import CTRModel, embedding_table

_REGISTRY = {
    "widedeep": "lipctr.models.widedeep:WideDeep",
    "nfm": "lipctr.models.nfm:NFM",
    "xdeepfm": "lipctr.models.xdeepfm:XDeepFM",
    "autoint": "lipctr.models.autoint:AutoInt",
    "fignn": "lipctr.models.fignn:FiGNN",
    "dcnv2": "lipctr.models.dcnv2:DCNV2",
    "eulernet": "lipctr.models.eulernet:EulerNet",
    "deepfm": "lipctr.models.deepfm:DeepFM",
    "dcn": "lipctr.models.dcn:DCN",
    "finalmlp": "lipctr.models.finalmlp:FinalMLP",
    "gdcn": "lipctr.models.gdcn:GDCN",
    "dcnv3": "lipctr.models.dcnv3:DCNv3",
}
MODEL_NAMES = tuple(_REGISTRY)
_BASE_FIELDS = {"schema", "num_outputs", "parent", "name"}


def model_class(name: str) -> type[CTRModel]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    module_name, class_name = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def default_hparams(name: str) -> dict:
    """The model's hyper-parameters and their defaults (embedding_dim included)."""
    return {
        f.name: f.default
        for f in dataclasses.fields(model_class(name))
        if f.name not in _BASE_FIELDS and f.default is not dataclasses.MISSING
    }


def build_model(name: str, schema: Schema, num_outputs: int = 1, **hparams) -> CTRModel:
    """The backbone `name` (one of MODEL_NAMES) for a dataset's `schema`, with num_outputs logits
    (1: orig; N: one per rating; 1 + N: click logit + aux rating head) and any of its
    hyper-parameters (`default_hparams(name)`); apply it to a features dict -> logits [B, num_outputs].
    ValueError naming the model and the known names for an unknown model or hyper-parameter."""
    cls = model_class(name)
    unknown = set(hparams) - set(default_hparams(name))
    if unknown:
        raise ValueError(
            f"unknown hyper-parameter(s) {sorted(unknown)} for model {name!r}; "
            f"known: {sorted(default_hparams(name))}"
        )
    return cls(schema=schema, num_outputs=num_outputs, **hparams)


def check_model(name: str, schema: Schema, num_outputs: int = 1, **hparams) -> None:
    """ValueError (one line naming the hyper-parameter) unless the model builds on `schema`; the
    checks that need the data's fields (e.g. FinalMLP's contexts, DCNv3's width) run in an
    abstract init (shapes only, no compute). For a CLI to call before it creates a run directory."""
    model = build_model(name, schema, num_outputs, **hparams)
    shapes = {"token": lambda f: (2,), "token_seq": lambda f: (2, f.max_len), "float": lambda f: (2,)}
    features = {f.name: jnp.zeros(shapes[f.kind](f), jnp.float32 if f.kind == "float" else jnp.int32)
                for f in schema.fields}
    jax.eval_shape(model.init, jax.random.key(0), features)


__all__ = ["CTRModel", "MODEL_NAMES", "build_model", "check_model", "default_hparams", "embedding_table", "model_class"]
