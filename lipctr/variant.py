"""A variant of a backbone: what its prediction head is and how its members are supervised.

The paper compares two forms of every backbone:
  orig    K = 1 logit, BCE on the binary label (lambda_r = 0);
  smooth  K = N logits, one per rating, trained with eq. 13 at lambda_r (or a sweep of lambda_r
          values trained as one ensemble, lambda x seeds).
Everything that trains, evaluates, loads or reports a variant asks its `Variant` for the head
width, the members and the loss options, instead of re-deriving them from the name.

A variant also carries the `Controls` of the mechanism study (lipctr.controls): the rating
supervision of smooth (within-label noise, merged classes, an auxiliary rating head beside the
K = 1 head) and the generic regularisers of orig (label smoothing, embedding L2).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from lipctr.controls import Controls, controlled_schema
from lipctr.data.schema import Schema
from lipctr.losses import LossConfig, check_aggregation
from lipctr.member_hparams import check_value, short_name

NO_CONTROLS = Controls()

Kind = Literal["orig", "smooth"]
KINDS: tuple[Kind, ...] = ("orig", "smooth")


LAMBDA_KEY = "loss.lambda_r"
Point = tuple[tuple[str, float], ...]  # a grid point: sorted (dotted config key, value) pairs


@dataclasses.dataclass(frozen=True)
class Member:
    """One ensemble member: a seed, the lambda_r it is trained with and its own other
    hyper-parameters (a grid point without loss.lambda_r; () = the config's)."""

    seed: int
    lambda_r: float
    hparams: Point = ()

    def point_label(self, sweep: bool) -> str:
        """The member's hyper-parameters in its label, e.g. "lambda0.5_lr0.001" ("" = none)."""
        parts = ([f"lambda{self.lambda_r:g}"] if sweep else []) + [f"{short_name(k)}{v:g}" for k, v in self.hparams]
        return "_".join(parts)

    def label(self, sweep: bool) -> str:
        """The member's name in outputs (metrics.csv, checkpoints/<label>/): seed2020,
        seed2020_lambda0.5 in a lambda_r sweep, seed2020_lr0.001_wd0.0001 in a grid."""
        return "_".join(filter(None, [f"seed{self.seed}", self.point_label(sweep)]))


@dataclasses.dataclass(frozen=True)
class Variant:
    """name: the output folder (<run>/<name>/); kind: "orig" or "smooth";
    lambdas: the lambda_r of each member group ((0.0,) for orig); sweep: members are labelled by
    seed and lambda_r (a lambda_r sweep), else by seed; controls: the mechanism study's controls;
    points: a grid's points (each a Point; loss.lambda_r among its keys sets the members' lambda_r
    and makes the variant a sweep), () = no grid."""

    name: str
    kind: Kind
    lambdas: tuple[float, ...]
    sweep: bool = False
    aggregation: str = "prob"
    scale_penalty: bool = True
    controls: Controls = NO_CONTROLS
    points: tuple[Point, ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"variant {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not self.lambdas or not all(0.0 <= lam <= 1.0 for lam in self.lambdas):
            raise ValueError(f"variant {self.name!r}: lambda_r values must lie in [0, 1], got {list(self.lambdas)}")
        if self.kind == "orig" and self.lambdas != (0.0,):
            raise ValueError(f"variant {self.name!r}: orig trains with lambda_r = 0 only, got {list(self.lambdas)}")
        check_aggregation(self.aggregation, f"variant {self.name!r}: aggregation")
        rating_controls = (self.controls.aux_rating or self.controls.rating_classes
                           or self.controls.rating_noise != "none")
        if self.kind == "orig" and rating_controls:
            raise ValueError(f"variant {self.name!r}: the rating controls (rating_noise, rating_classes, aux_rating) "
                             f"change smooth's rating supervision; orig has none")
        self._check_points()

    def _check_points(self) -> None:
        if not self.points:
            return
        keys = [tuple(k for k, _ in point) for point in self.points]
        if any(k != keys[0] or list(k) != sorted(set(k)) for k in keys):
            raise ValueError(f"variant {self.name!r}: every grid point must hold the same keys, sorted, once each")
        if LAMBDA_KEY in keys[0] and (self.kind == "orig" or len(self.lambdas) > 1):
            why = "orig trains with lambda_r = 0 only" if self.kind == "orig" else "a lambda_r sweep sets it too"
            raise ValueError(f"variant {self.name!r}: grid {LAMBDA_KEY}: {why}")
        for point in self.points:
            for key, value in point:
                check_value(key, value)
        labels = [Member(0, self.lambdas[0], point).point_label(False) for point in self.points]
        if len(set(labels)) < len(labels):
            raise ValueError(f"variant {self.name!r}: grid points {labels} do not all differ at 6 significant digits")

    @property
    def rating_head(self) -> bool:
        """True when the head has one logit per rating (smooth), False for the K = 1 head."""
        return self.kind == "smooth"

    def schema(self, schema: Schema) -> Schema:
        """The dataset's schema on the rating scale this variant's head is built for."""
        return controlled_schema(schema, self.controls)

    def num_outputs(self, num_ratings: int) -> int:
        """The head width K (num_ratings on the scale of `schema`): 1, N, or 1 + N with aux_rating."""
        if not self.rating_head:
            return 1
        return 1 + num_ratings if self.controls.aux_rating else num_ratings

    def members(self, seeds) -> list[Member]:
        """Every (lambda_r, seed) pair, lambda-major: [Member] of length len(lambdas) x len(seeds);
        with a grid, every (point, seed) pair, point-major: len(points) x len(seeds)."""
        if not self.points:
            return [Member(int(seed), float(lam)) for lam in self.lambdas for seed in seeds]
        return [Member(int(seed), float(dict(point).get(LAMBDA_KEY, self.lambdas[0])),
                       tuple((k, float(v)) for k, v in point if k != LAMBDA_KEY))
                for point in self.points for seed in seeds]

    def member_point(self, member: Member) -> dict[str, float]:
        """The grid point member was trained at, {dotted key: value} ({} without a grid)."""
        if not self.points:
            return {}
        keys = dict(self.points[0])
        return {**({LAMBDA_KEY: member.lambda_r} if LAMBDA_KEY in keys else {}), **dict(member.hparams)}

    def loss_config(self, threshold: int) -> LossConfig:
        """The loss options; lambda_r is each member's own (the trainer carries it per member)."""
        return LossConfig(lambda_r=self.lambdas[0], threshold=threshold, aggregation=self.aggregation,
                          scale_penalty=self.scale_penalty, aux_rating=self.controls.aux_rating,
                          label_smoothing=self.controls.label_smoothing)


def orig(aggregation: str = "prob", scale_penalty: bool = True, controls: Controls = NO_CONTROLS,
         name: str = "orig") -> Variant:
    return Variant(name, "orig", (0.0,), aggregation=aggregation, scale_penalty=scale_penalty, controls=controls)


def smooth(lambda_r: float, aggregation: str = "prob", scale_penalty: bool = True, controls: Controls = NO_CONTROLS,
           name: str = "smooth") -> Variant:
    return Variant(name, "smooth", (float(lambda_r),), aggregation=aggregation, scale_penalty=scale_penalty,
                   controls=controls)


def lambda_sweep(lambdas, name: str = "lambda_sweep", aggregation: str = "prob",
                 scale_penalty: bool = True, controls: Controls = NO_CONTROLS) -> Variant:
    """smooth members for every lambda_r in `lambdas`, trained as one ensemble."""
    return Variant(name, "smooth", tuple(float(lam) for lam in lambdas), sweep=True,
                   aggregation=aggregation, scale_penalty=scale_penalty, controls=controls)
