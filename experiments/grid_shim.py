"""TEMPORARY stand-in for grid-core's lipctr.member_hparams and run_variant(points=...): deleted at the merge."""

from __future__ import annotations

PER_MEMBER_KEYS = ("train.learning_rate", "train.weight_decay", "loss.lambda_r", "controls.label_smoothing",
                   "controls.embedding_l2", "model_hparams.reg_weight", "model_hparams.dropout_prob")


def member_hparam(dotted_key: str, model: str) -> str | None:
    return dotted_key if dotted_key in PER_MEMBER_KEYS else None


def run_points(run_variant, config, dataset, variant, run_dir, candidates, progress, output, mesh, points):
    """Only loss.lambda_r grids, through the lambda sweep machinery."""
    if points is None:
        return run_variant(config, dataset, variant, run_dir, candidates, progress, output, mesh=mesh)
    if any(set(p) - {"loss.lambda_r"} for p in points):
        raise NotImplementedError("shim: only loss.lambda_r grids until grid-core is merged")
    sweep = {**config, "lambda_sweep": [p["loss.lambda_r"] for p in points], "grid": {}}
    return run_variant(sweep, dataset, variant, run_dir, candidates, progress, output, mesh=mesh)
