"""Human-readable summary of a preprocessed Dataset (counts, positives, splits, field schema)."""

from __future__ import annotations

from lipctr.data.schema import Dataset


def format_summary(dataset: Dataset) -> str:
    """Multi-line summary: interactions, users, items, positives, rating counts, filtering,
    split sizes and one line per model input field."""
    s, schema = dataset.stats, dataset.schema
    total = s["interactions"]
    ratings = "  ".join(f"{r}: {c:,} ({c / total:.1%})" for r, c in s["rating_counts"].items())
    dropped = ", ".join(
        f"{s[k]:,} {label}" for k, label in (
            ("duplicates_dropped", "duplicates"), ("missing_user_dropped", "without user features"),
            ("missing_item_dropped", "without item features"), ("kcore_dropped", "by k-core"),
        ) if k in s
    )
    lines = [
        f"dataset {dataset.name}: {total:,} interactions, {s['users']:,} users, {s['items']:,} items "
        f"(density {s['density']:.4f})",
        f"positives: {s['positives']:,} ({s['positive_rate']:.1%}), label = rating > {schema.threshold}",
        f"ratings 1..{schema.num_ratings}: {ratings}",
        f"read {s['raw_interactions']:,} raw interactions; dropped {dropped}",
        f"split: train {s['train']:,} / valid {s['valid']:,} / test {s['test']:,}",
        f"fields ({schema.num_fields}): {', '.join(schema.names)}",
    ]
    for field in schema.fields:
        extra = f"  max_len {field.max_len}" if field.kind == "token_seq" else ""
        vocab = f"vocab {field.vocab_size:,}" if field.kind != "float" else "min-max normalised"
        lines.append(f"  {field.name:<20} {field.kind:<10} {field.source:<6} {vocab}{extra}")
    if s.get("cache_file"):
        lines.append(f"cache: {s['cache']} ({s['cache_file']})")
    return "\n".join(lines)
