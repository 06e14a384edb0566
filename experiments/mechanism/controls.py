"""The controls of the mechanism study, each one change relative to orig or smooth.

A control names the variant it trains ("orig" or "smooth" of a config with the control's keys
written over it) and one or more candidates; with several (a small grid, e.g. label-smoothing
epsilons) the candidate with the best mean validation AUC over seeds is the one reported.
"""

from __future__ import annotations

import dataclasses

from lipctr.models import MODEL_NAMES, default_hparams, model_class
from lipctr.models.base import CTRModel

LABEL_SMOOTHING_GRID = (0.05, 0.1, 0.2)
EMBEDDING_L2_GRID = (1e-4, 1e-3, 1e-2)


@dataclasses.dataclass(frozen=True)
class Candidate:
    label: str  # its folder name, e.g. "eps0.1"
    update: dict  # config keys written over the backbone's config


@dataclasses.dataclass(frozen=True)
class Control:
    name: str
    variant: str  # "orig" or "smooth"
    what: str  # one line for the report
    candidates: tuple[Candidate, ...]
    only: tuple[str, ...] = ()  # the backbones it applies to; () = all

    def applies_to(self, model: str) -> bool:
        return not self.only or model in self.only


def _one(update: dict) -> tuple[Candidate, ...]:
    return (Candidate("default", update),)


def _has_penalty(model: str) -> bool:
    return model_class(model).penalty is not CTRModel.penalty


def controls() -> dict[str, Control]:
    """Every control by name, in report order (orig and smooth first: the references)."""
    side = tuple(m for m in MODEL_NAMES if "scalar_side_branches" in default_hparams(m))
    penalised = tuple(m for m in MODEL_NAMES if _has_penalty(m))
    entries = [
        Control("orig", "orig", "K = 1, BCE (the reference)", _one({})),
        Control("smooth", "smooth", "K = N rating head, eq. 13 (the reference)", _one({})),
        Control("within_label", "smooth", "smooth, training ratings permuted within their binary class",
                _one({"controls": {"rating_noise": "within_label"}})),
        Control("classes3", "smooth", "smooth on 3 merged classes (1-2 / 3 / 4-5)",
                _one({"controls": {"rating_classes": 3}})),
        Control("classes2", "smooth", "smooth on 2 classes: a 2-logit softmax head on the binary label",
                _one({"controls": {"rating_classes": 2}})),
        Control("aux_rating", "smooth", "K = 1 BCE head plus a separate rating head (clicks from the BCE head)",
                _one({"controls": {"aux_rating": True}})),
        Control("label_smoothing", "orig", f"orig, BCE with label smoothing (epsilon on validation from "
                f"{list(LABEL_SMOOTHING_GRID)})",
                tuple(Candidate(f"eps{e:g}", {"controls": {"label_smoothing": e}}) for e in LABEL_SMOOTHING_GRID)),
        Control("embedding_l2", "orig", f"orig, explicit squared L2 on the embeddings (weight on validation from "
                f"{list(EMBEDDING_L2_GRID)})",
                tuple(Candidate(f"l2_{w:g}", {"controls": {"embedding_l2": w}}) for w in EMBEDDING_L2_GRID)),
        Control("logit_sum", "smooth", "smooth with the authors' logit-sum aggregation",
                _one({"loss": {"aggregation": "logit_sum"}})),
        Control("scalar_side", "smooth", "smooth with width-1 scalar side branches, as in the authors' code",
                _one({"model_hparams": {"scalar_side_branches": True}}), only=side),
        Control("scale_penalty_off", "smooth", "smooth with the backbone's L2 term not scaled by (1 - lambda_r)",
                _one({"loss": {"scale_penalty": False}}), only=penalised),
    ]
    return {c.name: c for c in entries}


def choose(names: str | None) -> list[Control]:
    """The controls of a comma list (orig and smooth always included), or all; ValueError naming
    an unknown control."""
    known = controls()
    if not names or names == "all":
        return list(known.values())
    asked = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in asked if n not in known]
    if unknown:
        raise ValueError(f"--controls: unknown control(s) {unknown}; known: {', '.join(known)}")
    return [c for name, c in known.items() if name in ("orig", "smooth") or name in asked]
