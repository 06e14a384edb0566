"""What a run needs of its data, checked before any run directory exists: every split non-empty,
both labels in train, valid and test (AUC and early stopping are undefined otherwise), and enough
unseen items per test user for the ranking candidates (eval.num_negatives, `test_candidates`).
Each refusal names the split, the counts and the user's raw id."""

from __future__ import annotations

import numpy as np

from experiments.configs import ConfigError
from lipctr.data import DataError, Dataset
from lipctr.ranking import ranking_candidates


def raw_id(dataset: Dataset, field: str, index: int):
    """The raw value of id `index` of a token field (the id itself without a vocabulary)."""
    vocabulary = dataset.vocabularies.get(field)
    return index if vocabulary is None or not 1 <= index <= len(vocabulary) else vocabulary[index - 1].item()


def check_evaluable(config: dict, dataset: Dataset) -> None:
    """DataError (one line) unless a run of `config` on `dataset` can be trained and evaluated."""
    sizes = "/".join(f"{len(s):,}" for s in dataset.splits.values())
    threshold = dataset.schema.threshold
    for name, split in dataset.splits.items():
        if len(split) == 0:
            raise DataError(f"data set {dataset.name!r} is too small: the {name} split is empty (train/valid/test "
                            f"{sizes} interactions); give more interactions or change data.split_ratios")
        positives = int(np.asarray(split.label).sum())
        if len(split) == 1:
            raise DataError(f"data set {dataset.name!r} is too small: the {name} split holds 1 interaction, which "
                            f"cannot have both labels (train/valid/test {sizes}); give more interactions")
        if positives in (0, len(split)):
            missing = "positive (rating > threshold)" if positives == 0 else "negative (rating <= threshold)"
            ratings = np.unique(np.asarray(split.rating))
            raise DataError(
                f"data set {dataset.name!r} cannot be evaluated: the {name} split has no {missing} examples "
                f"({positives:,} of {len(split):,} have label 1 with threshold {threshold}; its ratings: "
                f"{', '.join(map(str, ratings))}); train, valid and test each need both labels. Give more varied "
                f"data or another threshold (--set data.threshold=T); train/valid/test {sizes}")
    _check_ranking(config, dataset)


def _check_ranking(config: dict, dataset: Dataset) -> None:
    """Every test user needs eval.num_negatives items it never interacted with."""
    need = int(config["eval"]["num_negatives"])
    user_field, item_field = dataset.schema.user_field, dataset.schema.item_field
    num_items = int(dataset.schema[item_field].vocab_size) - 1
    pairs = np.unique(np.concatenate([
        np.asarray(s.features[user_field], np.int64) * (num_items + 1) + np.asarray(s.features[item_field], np.int64)
        for s in dataset.splits.values()]))
    seen = np.bincount(pairs // (num_items + 1))
    test_users = np.unique(np.asarray(dataset.test.features[user_field], np.int64))
    unseen = num_items - seen[test_users]
    short = unseen < need
    if not short.any():
        return
    worst = int(np.argmin(unseen))
    user, most = raw_id(dataset, user_field, int(test_users[worst])), int(unseen.min())
    advice = (f"lower eval.num_negatives to at most {most} (--set eval.num_negatives={most}) or give more items"
              if most > 0 else "no eval.num_negatives can work; give more items")
    raise DataError(
        f"data set {dataset.name!r} is too small for the ranking evaluation: {int(short.sum()):,} of "
        f"{len(test_users):,} test users have fewer than eval.num_negatives = {need} items they never "
        f"interacted with; user {user!r} interacted with {int(seen[test_users[worst]]):,} of the {num_items:,} "
        f"items, leaving {most}; {advice}")


def test_candidates(config: dict, dataset: Dataset):
    """The test split's ranking candidates of a config; ConfigError if eval.num_negatives exceeds
    the items some test user never interacted with (the only items it can be ranked against)."""
    ev = config["eval"]
    try:
        return ranking_candidates(dataset, "test", ev["num_negatives"], ev["ranking_seed"], ev["relevance"])
    except ValueError as error:
        raise ConfigError(f"key 'eval.num_negatives' = {ev['num_negatives']}: {error}") from None
