"""Parameter counts of every registered backbone on the ML-100K schema, K = 1 and K = 5.

    python -m lipctr.models.parameter_counts

The schema is written out by hand from RecBole's ml-100k atomic files (vocabulary sizes count
the padding id 0): user_id 943 users, item_id 1,682 items, age 61 values, gender 2,
occupation 21, release_year 73 years, class 19 genres (token_seq, at most 6 per movie).
Hyper-parameters are the registry defaults (the authors' ML-1M settings; for DeepFM, DCN,
FinalMLP, GDCN and DCNv3 RecBole's / FuxiCTR's published settings). tests/test_models_new_backbones.py
checks those five against closed forms of the reference implementations (docs/models.md).
"""

from __future__ import annotations

import jax
import numpy as np

from lipctr.data.schema import Field, Schema
from lipctr.models import MODEL_NAMES, build_model


def ml100k_schema() -> Schema:
    """The 7 model input fields of ML-100K as RecBole's atomic files define them."""
    return Schema(
        fields=(
            Field("user_id", "token", "user", 944),
            Field("item_id", "token", "item", 1683),
            Field("age", "token", "user", 62),
            Field("gender", "token", "user", 3),
            Field("occupation", "token", "user", 22),
            Field("release_year", "token", "item", 74),
            Field("class", "token_seq", "item", 20, max_len=6),
        )
    )


def random_features(schema: Schema, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A random batch in the schema's layout (token_seq rows padded with 0 after a random length)."""
    features = {}
    for field in schema.fields:
        if field.kind == "token":
            features[field.name] = rng.integers(1, field.vocab_size, batch).astype(np.int32)
        elif field.kind == "token_seq":
            ids = rng.integers(1, field.vocab_size, (batch, field.max_len))
            lengths = rng.integers(1, field.max_len + 1, (batch, 1))
            features[field.name] = np.where(np.arange(field.max_len) < lengths, ids, 0).astype(np.int32)
        else:
            features[field.name] = rng.random(batch).astype(np.float32)
    return features


def count(tree) -> int:
    return int(sum(leaf.size for leaf in jax.tree.leaves(tree)))


def parameter_counts(name: str, schema: Schema, num_outputs: int) -> dict[str, int]:
    """Trainable parameters: total, in the field embeddings, and the rest (interaction + heads)."""
    model = build_model(name, schema, num_outputs)
    features = random_features(schema, 2, np.random.default_rng(0))
    params = jax.eval_shape(model.init, jax.random.key(0), features)["params"]
    total, embedding = count(params), count(params.get("embedding", {}))
    return {"total": total, "embedding": embedding, "rest": total - embedding}


def main() -> None:
    schema = ml100k_schema()
    fields = ", ".join(f"{f.name}({f.vocab_size})" for f in schema.fields)
    print(f"ML-100K schema, {schema.num_fields} fields: {fields}")
    print(f"{'model':<10} {'K=1 total':>10} {'K=5 total':>10} {'K=5-K=1':>8} {'embedding':>10} {'rest K=1':>10}")
    for name in MODEL_NAMES:
        try:
            one, five = parameter_counts(name, schema, 1), parameter_counts(name, schema, 5)
        except ImportError as error:
            print(f"{name:<10} not available: {error}")
            continue
        print(
            f"{name:<10} {one['total']:>10,} {five['total']:>10,} {five['total'] - one['total']:>8,} "
            f"{one['embedding']:>10,} {one['rest']:>10,}"
        )


if __name__ == "__main__":
    main()
