"""Controls of the mechanism study: each changes one thing about how a variant is supervised.

  rating_noise = "within_label"  every training rating is redrawn from the ratings of its own
                                 binary class: a seeded permutation within the class, so the class's
                                 rating frequencies in the training split are kept exactly; drawn
                                 once, so fixed per example across epochs; labels,
                                 head width and loss are unchanged. Keeps the head, drops the
                                 rating information beyond the label.
  rating_classes = N             ratings merged into N contiguous classes that never straddle the
                                 threshold (ML's 1..5 at t = 3: N = 3 is 1-2 / 3 / 4-5, N = 2 is
                                 the binary label as a 2-logit softmax head); 0 keeps the scale.
  aux_rating                     the K = 1 BCE head plus a separate rating head on the same
                                 representation (lipctr.models.controlled); clicks are scored by
                                 the BCE head only.
  label_smoothing = eps          BCE against y (1 - eps) + eps / 2 (a generic regulariser for orig).
  embedding_l2 = w               w * sum of the squared Frobenius norms of the field embedding
                                 tables, added to the backbone's own L2 term (lipctr.models.controlled).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lipctr.data.schema import Schema, Split

RATING_NOISE = ("none", "within_label")


class ControlError(ValueError):
    """A control option with a bad value; the message names its key (controls.<name>)."""


@dataclasses.dataclass(frozen=True)
class Controls:
    rating_noise: str = "none"
    rating_noise_seed: int = 0
    rating_classes: int = 0  # 0: the dataset's own rating scale
    aux_rating: bool = False
    label_smoothing: float = 0.0
    embedding_l2: float = 0.0

    def __post_init__(self):
        if self.rating_noise not in RATING_NOISE:
            raise ControlError(f"controls.rating_noise must be one of {RATING_NOISE}, got {self.rating_noise!r}")
        for key in ("rating_noise_seed", "rating_classes"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ControlError(f"controls.{key} must be a non-negative int, got {value!r}")
        if not isinstance(self.aux_rating, bool):
            raise ControlError(f"controls.aux_rating must be true or false, got {self.aux_rating!r}")
        if not _is_number(self.label_smoothing) or not 0.0 <= self.label_smoothing < 1.0:
            raise ControlError(f"controls.label_smoothing (epsilon) must lie in [0, 1), got {self.label_smoothing!r}")
        if not _is_number(self.embedding_l2) or not self.embedding_l2 >= 0.0:
            raise ControlError(f"controls.embedding_l2 must be a number >= 0, got {self.embedding_l2!r}")

    def check_scale(self, num_ratings: int, threshold: int) -> None:
        """ControlError naming controls.rating_classes unless it can merge ratings 1..num_ratings."""
        merge_groups(num_ratings, threshold, self.rating_classes)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def merge_groups(num_ratings: int, threshold: int, classes: int) -> tuple[tuple[int, ...], ...]:
    """The ratings of each merged class, in order: `classes` contiguous groups of 1..num_ratings,
    none straddling the threshold. The positive side (ratings > threshold) gets
    round(classes * positives / num_ratings) groups (at least 1), the negative side the rest; a side
    is cut as evenly as possible, larger groups at the low end. classes 0 = one class per rating."""
    ratings = np.arange(1, num_ratings + 1)
    if classes == 0:
        return tuple((int(r),) for r in ratings)
    positives = num_ratings - threshold
    num_positive = min(max(1, round(classes * positives / num_ratings)), positives)
    num_negative = classes - num_positive
    if not 2 <= classes <= num_ratings or not 1 <= num_negative <= threshold:
        raise ControlError(
            f"controls.rating_classes = {classes} does not divide the rating scale 1..{num_ratings} "
            f"(threshold {threshold}): use 0 (keep it) or 2..{num_ratings} contiguous classes, "
            f"none straddling the threshold"
        )
    sides = (np.array_split(ratings[:threshold], num_negative), np.array_split(ratings[threshold:], num_positive))
    return tuple(tuple(int(r) for r in group) for side in sides for group in side)


def rating_class_map(num_ratings: int, threshold: int, classes: int) -> np.ndarray:
    """int32 [num_ratings + 1]: map[r] is the merged class (1-based) of rating r (map[0] = 0)."""
    mapping = np.zeros(num_ratings + 1, np.int32)
    for index, group in enumerate(merge_groups(num_ratings, threshold, classes)):
        mapping[list(group)] = index + 1
    return mapping


def controlled_schema(schema: Schema, controls: Controls) -> Schema:
    """The schema the head is built for: num_ratings and threshold on the merged scale."""
    if controls.rating_classes == 0:
        return schema
    mapping = rating_class_map(schema.num_ratings, schema.threshold, controls.rating_classes)
    return dataclasses.replace(schema, num_ratings=int(mapping.max()), threshold=int(mapping[schema.threshold]))


def redraw_within_label(rating: np.ndarray, label: np.ndarray, seed: int) -> np.ndarray:
    """The ratings of each binary class dealt out again at random among that class's examples
    (a seeded within-label permutation), int32 [n]: every label and each class's rating counts
    are kept exactly, the link between an example and its rating beyond the label is gone."""
    rng = np.random.default_rng(seed)
    out = rating.astype(np.int32)
    for value in np.unique(label):
        index = np.flatnonzero(label == value)
        out[index] = rng.permutation(out[index])
    return out


def controlled_train_split(split: Split, schema: Schema, controls: Controls) -> Split:
    """The training split with its ratings merged (rating_classes) and then redrawn within their
    binary class (rating_noise); features and labels untouched. `schema` is the dataset's own."""
    rating = split.rating.astype(np.int32)
    if controls.rating_classes:
        rating = rating_class_map(schema.num_ratings, schema.threshold, controls.rating_classes)[rating]
    if controls.rating_noise == "within_label":
        rating = redraw_within_label(rating, split.label, controls.rating_noise_seed)
    return Split(split.features, rating, split.label)
