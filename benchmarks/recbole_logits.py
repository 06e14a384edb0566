"""Same weights, same logits: lipctr's DeepFM, DCN, WideDeep and NFM against RecBole 1.2.1's own models
(issue 27, item 2).

lipctr's side (this process, lipctr's venv) builds each case with its `<model>_ml100k` config's
hyper-parameters and a K = 1 (orig) head, initialises it, redraws every leaf that starts constant
(biases, batch-norm scale / shift / running statistics: no term may hide behind a zero or a one),
and writes the parameters, a batch of real ML-100K rows (lipctr's ids, and the raw token of every
id) and its own eval-mode logits to an .npz. The reference side (a subprocess in the bench venv,
torch + recbole 1.2.1, set up as `python -m benchmarks.vs_torch --help` says) builds RecBole's
model on the same atomic files with the same settings (`vs_torch.recbole_config`), maps every
tensor in, lets RecBole's own dataset join the user / item features of the batch's (user, item)
pairs, checks that they are the rows lipctr scored, and runs the eval-mode forward. Per case it
prints max |RecBole logit - lipctr logit| over the batch, raw and after the first-order pooling
gap (below); it exits 0 when the latter is <= --tol (1e-5) for every case, and says which cases
have the same logits outright.

First-order pooling: RecBole's first-order term (FMFirstOrderLinear) SUMS a token_seq field's
weights over the sequence (the non-padding ids). lipctr's FirstOrderLinear does what the
backbones' `first_order_pooling` hyper-parameter says: "mean" (the default, as both sides pool
the field embeddings) or "sum". The cases with a first-order term are built with
--first-order-pooling, "sum" by default, so their logits are RecBole's outright; with "mean" the
`class` (genre) field's term differs, `first_order_pooling_gap` computes RecBole's minus lipctr's
term per row, and the residual after it shows that nothing else differs. DCN has no first-order term.

Cases (K = 1):
  deepfm         the registry's DeepFM; its FM readout fm_weights [d, 1] (the d parameters RecBole
                 lacks) keeps its initial ones, with which it is RecBole's FM sum
  deepfm_scalar  scalar_side_branches=True: RecBole's parameter set exactly
  dcn            the registry's DCN
  widedeep       the registry's WideDeep
  nfm            the registry's NFM

Tensor map, lipctr -> RecBole 1.2.1 (ids translated through the raw tokens, since each side numbers
a field's tokens itself; RecBole keeps all token fields in one table at offsets, a token_seq field
in a table of its own; RecBole's field order is its own, so the flat [F * d] rows of the first
dense kernel, the cross weights and the predict layer are re-ordered when it differs):
  embedding/tables/<f>/embedding [V, d]     token_embedding_table.embedding.weight rows, or
                                            token_seq_embedding_table.<i>.weight
  first_order/weights/<f>/embedding [V, 1]  first_order_linear.{token_embedding_table.embedding,
                                            token_seq_embedding_table.<i>}.weight (WideDeep: wide/...)
  first_order/bias [1]                      first_order_linear.bias (WideDeep: wide/bias)
  mlp/Dense_<i>/kernel [in, out], bias      mlp_layers.mlp_layers.<j>.weight [out, in] (transposed), bias
  mlp/BatchNorm_<i>/scale, bias; batch_stats mean, var
                                            mlp_layers.mlp_layers.<j>.weight, bias, running_mean, running_var
  deep_output/kernel [128, 1], bias         deep_predict_layer.weight [1, 128], bias (DeepFM)
  prediction/kernel [128, 1], bias          deep_predict_layer.weight [1, 128], bias (WideDeep)
  cross/w_<l>, b_<l> [F * d]                cross_layer_w.<l>, cross_layer_b.<l> (DCN)
  prediction/kernel [F * d + 256, 1], bias  predict_layer.weight [1, F * d + 256], bias (DCN)
  prediction/kernel [512, 1]                predict_layer.weight [1, 512] (NFM, no bias)
  bi_batch_norm/scale, bias; batch_stats mean, var
                                            bn.weight, bias, running_mean, running_var (NFM)

    python -m benchmarks.recbole_logits --torch-python /work/venv-bench/bin/python
    python -m benchmarks.recbole_logits --torch-python /work/venv-bench/bin/python --first-order-pooling mean
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import parse_cases, refuse_json_output

REPO = Path(__file__).resolve().parents[1]
CASES = {"deepfm": ("deepfm", {}), "deepfm_scalar": ("deepfm", {"scalar_side_branches": True}), "dcn": ("dcn", {}),
         "widedeep": ("widedeep", {}), "nfm": ("nfm", {})}
POOLINGS = ("sum", "mean")  # --first-order-pooling: "sum" is RecBole's FMFirstOrderLinear
FIRST_ORDER = ("first_order", "wide")  # lipctr's first-order module, by backbone (WideDeep: "wide")
KEEP = ("fm_weights",)  # leaves kept as initialised (RecBole has no such parameter)
PAD = "[PAD]"  # the raw token of id 0 written for every field (RecBole's own name for it)


# ----------------------------------------------------------------------------- lipctr's side (numpy >= 2, jax)


def flat_leaves(tree, prefix: str) -> dict[str, np.ndarray]:
    """{"<prefix>/<path>": array} of a nested dict of arrays ("/"-joined keys)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}"
        out.update(flat_leaves(value, name) if isinstance(value, dict) else {name: np.asarray(value)})
    return out


def redraw_constant_leaves(leaves: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Every leaf whose values are all equal (zeros / ones at initialisation), except KEEP, redrawn:
    running variances times U(0.5, 2), anything else plus N(0, 0.05^2). Shapes and dtypes kept."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, leaf in leaves.items():
        if leaf.size and np.ptp(leaf) == 0 and name.rsplit("/", 1)[-1] not in KEEP:
            if name.endswith("/var"):
                leaf = leaf * rng.uniform(0.5, 2.0, leaf.shape)
            else:
                leaf = leaf + 0.05 * rng.normal(size=leaf.shape)
        out[name] = np.asarray(leaf, np.float32)
    return out


def unflatten(leaves: dict[str, np.ndarray], prefix: str) -> dict:
    """Inverse of `flat_leaves` for the keys under `prefix`."""
    tree: dict = {}
    for name, leaf in leaves.items():
        if not name.startswith(prefix + "/"):
            continue
        *path, last = name[len(prefix) + 1:].split("/")
        node = tree
        for key in path:
            node = node.setdefault(key, {})
        node[last] = leaf
    return tree


def field_tokens(dataset, field) -> np.ndarray:
    """Raw token (str) of each id 0..V-1 of a token / token_seq field; id 0 is PAD."""
    vocab = dataset.vocabularies.get(field.name)
    tokens = [str(t) for t in vocab] if vocab is not None else [str(i) for i in range(1, field.vocab_size)]
    return np.asarray([PAD, *tokens], dtype=str)


def case_hparams(case: str, pooling: str = "sum") -> tuple[str, dict]:
    """(model name, the hyper-parameters beyond its `<model>_ml100k` config's) of a case;
    first_order_pooling = `pooling` for a backbone that has a first-order term."""
    from lipctr.models import default_hparams

    model_name, extra = CASES[case]
    has_first_order = "first_order_pooling" in default_hparams(model_name)
    return model_name, {**extra, **({"first_order_pooling": pooling} if has_first_order else {})}


def export_case(case: str, dataset, rows: int, seed: int = 0, pooling: str = "sum") -> dict[str, np.ndarray]:
    """Everything the reference needs for one case, as named arrays:
    params/<path>, batch_stats/<path>     the model's variables (float32, lipctr's shapes)
    features/<field>                       `rows` test rows, lipctr's ids: int32 [B] or [B, L]
    tokens/<field>                         raw token of each id, str [V] (token / token_seq fields)
    logits                                 lipctr's eval-mode logits, float32 [B]
    fields                                 the schema's field names in order, str [F]
    first_order_pooling                    the model's first_order_pooling, str [] ("" without one)
    """
    import jax

    from experiments.configs import named_config
    from lipctr.models import build_model

    model_name, extra = case_hparams(case, pooling)
    hparams = {**named_config(f"{model_name}_ml100k")["model_hparams"], **extra}
    model = build_model(model_name, dataset.schema, 1, **hparams)
    features = {name: np.asarray(values[:rows]) for name, values in dataset.test.features.items()}
    variables = jax.jit(model.init)({"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)}, features)
    leaves = redraw_constant_leaves({k: v for c, t in variables.items() for k, v in flat_leaves(t, c).items()}, seed)
    variables = {c: unflatten(leaves, c) for c in variables}
    logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, deterministic=True))(variables, features))
    return {
        **leaves,
        **{f"features/{name}": values for name, values in features.items()},
        **{f"tokens/{f.name}": field_tokens(dataset, f) for f in dataset.schema.fields if f.kind != "float"},
        "logits": logits[:, 0].astype(np.float32),
        "fields": np.asarray(dataset.schema.names, dtype=str),
        "first_order_pooling": np.asarray(extra.get("first_order_pooling", ""), dtype=str),
    }


def first_order_prefix(arrays: dict[str, np.ndarray]) -> str | None:
    """"params/<module>" of lipctr's first-order term in the exported arrays; None without one (DCN)."""
    found = [f"params/{m}" for m in FIRST_ORDER if f"params/{m}/bias" in arrays]
    return found[0] if found else None


def first_order_pooling_gap(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """RecBole's first-order term minus lipctr's, [B]: for each token_seq field RecBole's
    FMFirstOrderLinear SUMS the field's weights over the non-padding ids; lipctr's FirstOrderLinear
    does too under first_order_pooling "sum" (gap 0), and takes their MEAN under "mean" (as both
    sides pool the field embeddings)."""
    gap = np.zeros(arrays["logits"].shape, np.float64)
    prefix = first_order_prefix(arrays)
    if prefix is None or str(arrays.get("first_order_pooling", "mean")) == "sum":
        return gap
    for name in arrays["fields"]:
        weights = arrays.get(f"{prefix}/weights/{name}/embedding")
        ids = arrays[f"features/{name}"]
        if weights is None or ids.ndim != 2:
            continue
        mask = ids != 0
        summed = (weights[ids, 0].astype(np.float64) * mask).sum(-1)
        gap += summed - summed / np.maximum(mask.sum(-1), 1)
    return gap


# ----------------------------------------------------------------------------- RecBole's side (numpy < 2, torch)


def rows_of_tokens(target: np.ndarray, source: np.ndarray) -> np.ndarray:
    """For each id of the `target` vocabulary (raw tokens [V]), the id of the same token in `source`
    [V]; ValueError unless the two are the same set of tokens (a permutation)."""
    index = {token: i for i, token in enumerate(source)}
    missing = [t for t in target if t not in index]
    if missing or len(target) != len(source):
        raise ValueError(f"vocabularies differ: {len(target)} vs {len(source)} tokens, missing {missing[:5]}")
    return np.asarray([index[t] for t in target], np.int64)


def flat_order(rb_fields: list[str], lip_fields: list[str], dim: int) -> np.ndarray:
    """Index into lipctr's flat [F * d] layout of each position of RecBole's (int [F * d])."""
    return np.concatenate([lip_fields.index(f) * dim + np.arange(dim) for f in rb_fields])


def recbole_state(network, arrays: dict[str, np.ndarray], lip_of_rb: dict[str, np.ndarray]) -> tuple[dict, list]:
    """RecBole's state dict filled from lipctr's arrays (numpy), and the lipctr leaves left unused."""
    import torch

    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        used.add(name)
        return arrays[name]

    def tables(prefix: str, names: list[str]) -> np.ndarray:  # RecBole row r of field f = lipctr row lip_of_rb[f][r]
        return np.concatenate([take(f"{prefix}/{f}/embedding")[lip_of_rb[f]] for f in names])

    if network.float_field_names or network.float_seq_field_names:
        raise ValueError("float fields: not mapped (ML-100K has none)")
    lip_fields = [str(f) for f in arrays["fields"]]
    rb_fields = network.token_seq_field_names + network.token_field_names  # RecBole's concat: token_seq first
    dim = network.embedding_size
    order = flat_order(rb_fields, lip_fields, dim)
    width = len(rb_fields) * dim
    state = {}
    first_order = first_order_prefix(arrays)  # None: DCN (RecBole builds a first-order term and never calls it)
    for table, prefix in (("", "params/embedding/tables"), ("first_order_linear.", f"{first_order}/weights")):
        if f"{prefix}/{lip_fields[0]}/embedding" not in arrays:
            continue
        state[f"{table}token_embedding_table.embedding.weight"] = tables(prefix, network.token_field_names)
        for i, name in enumerate(network.token_seq_field_names):
            state[f"{table}token_seq_embedding_table.{i}.weight"] = tables(prefix, [name])
    if first_order is not None:
        state["first_order_linear.bias"] = take(f"{first_order}/bias")
    modules = network.mlp_layers.mlp_layers
    linears = [i for i, m in enumerate(modules) if isinstance(m, torch.nn.Linear)]
    norms = [i for i, m in enumerate(modules) if isinstance(m, torch.nn.BatchNorm1d)]
    for n, i in enumerate(linears):
        kernel = take(f"params/mlp/Dense_{n}/kernel")  # the flat embeddings' rows re-ordered (NFM's: [d, .])
        state[f"mlp_layers.mlp_layers.{i}.weight"] = (kernel[order] if n == 0 and len(kernel) == width else kernel).T
        state[f"mlp_layers.mlp_layers.{i}.bias"] = take(f"params/mlp/Dense_{n}/bias")
    for n, i in enumerate(norms):
        for rb_name, lip_name in (("weight", "params/mlp/BatchNorm_{}/scale"), ("bias", "params/mlp/BatchNorm_{}/bias"),
                                  ("running_mean", "batch_stats/mlp/BatchNorm_{}/mean"),
                                  ("running_var", "batch_stats/mlp/BatchNorm_{}/var")):
            state[f"mlp_layers.mlp_layers.{i}.{rb_name}"] = take(lip_name.format(n))
    if hasattr(network, "deep_predict_layer"):  # DeepFM (deep_output), WideDeep (prediction)
        layer = "params/deep_output" if "params/deep_output/kernel" in arrays else "params/prediction"
        state["deep_predict_layer.weight"] = take(f"{layer}/kernel").T
        state["deep_predict_layer.bias"] = take(f"{layer}/bias")
    if hasattr(network, "cross_layer_w"):  # DCN
        for layer in range(network.cross_layer_num):
            state[f"cross_layer_w.{layer}"] = take(f"params/cross/w_{layer}")[order]
            state[f"cross_layer_b.{layer}"] = take(f"params/cross/b_{layer}")[order]
        kernel = take("params/prediction/kernel")
        state["predict_layer.weight"] = np.concatenate([kernel[:width][order], kernel[width:]]).T
        state["predict_layer.bias"] = take("params/prediction/bias")
    elif hasattr(network, "predict_layer"):  # NFM: bias-free, on the MLP's output
        state["predict_layer.weight"] = take("params/prediction/kernel").T
    if hasattr(network, "bn"):  # NFM: batch-norm of the bi-interaction vector
        for rb_name, lip_name in (("weight", "params/bi_batch_norm/scale"), ("bias", "params/bi_batch_norm/bias"),
                                  ("running_mean", "batch_stats/bi_batch_norm/mean"),
                                  ("running_var", "batch_stats/bi_batch_norm/var")):
            state[f"bn.{rb_name}"] = take(lip_name)
    if "params/fm_weights" in arrays:  # DeepFM's FM readout: RecBole's FM only while every weight is 1
        if not np.all(take("params/fm_weights") == 1.0):
            raise ValueError("fm_weights differ from 1: RecBole's FM has no readout weights")
    unused = sorted(k for k in arrays if k.startswith(("params/", "batch_stats/")) and k not in used)
    return state, unused


def reference_logits(npz: str, settings: dict) -> dict:
    """RecBole's eval-mode logits [B] on the batch in `npz`, with the weights in it."""
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.data.interaction import Interaction
    from recbole.utils import get_model, init_seed

    arrays = dict(np.load(npz))
    config = Config(model=settings["model"], dataset=settings["dataset"], config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    train, _, _ = data_preparation(config, create_dataset(config))
    dataset = train.dataset  # its user / item features are Interactions (RecBole's own batches join them)
    network = get_model(config["model"])(config, dataset).eval()
    names = network.token_field_names + network.token_seq_field_names
    lip_of_rb = {f: rows_of_tokens(dataset.field2id_token[f], arrays[f"tokens/{f}"]) for f in names}
    filled, unused = recbole_state(network, arrays, lip_of_rb)
    state = network.state_dict()
    for key, value in filled.items():
        if tuple(state[key].shape) != value.shape:
            raise ValueError(f"{key}: RecBole {tuple(state[key].shape)}, mapped {value.shape}")
        state[key] = torch.from_numpy(np.ascontiguousarray(value, np.float32))
    network.load_state_dict(state)
    rb_of_lip = {f: np.argsort(lip_of_rb[f]) for f in (dataset.uid_field, dataset.iid_field)}
    batch = Interaction({f: torch.from_numpy(rb_of_lip[f][arrays[f"features/{f}"]]) for f in rb_of_lip})
    batch = dataset.join(batch)  # RecBole's own user / item features of these rows
    for f in names:  # ... are the rows lipctr scored
        mine, theirs = arrays[f"features/{f}"], lip_of_rb[f][batch[f].numpy()]
        if theirs.ndim == 2:
            width = max(mine.shape[1], theirs.shape[1])
            mine, theirs = (np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in (mine, theirs))
        if not np.array_equal(mine, theirs):
            raise ValueError(f"field {f}: RecBole's joined batch differs from lipctr's in {(mine != theirs).sum()} ids")
    with torch.no_grad():
        logits = network(batch).numpy()
    return {"logits": logits.astype(np.float64).tolist(), "torch": torch.__version__,
            "unused_lipctr": unused, "unfilled_recbole": sorted(k for k in state if k not in filled)}


# ----------------------------------------------------------------------------- the check


def compare(case: str, arrays: dict[str, np.ndarray], reference: dict, tol: float) -> dict:
    """max |RecBole - lipctr| over the batch, raw and after the first-order pooling gap (0 under "sum")."""
    diff = np.asarray(reference["logits"], np.float64) - arrays["logits"].astype(np.float64)
    residual = diff - first_order_pooling_gap(arrays)
    raw, explained = float(np.abs(diff).max()), float(np.abs(residual).max())
    return {"case": case, "rows": int(diff.size), "first_order_pooling": str(arrays.get("first_order_pooling", "")),
            "max_abs_diff": raw, "max_abs_diff_after_known_gap": explained,
            "max_abs_logit": float(np.abs(arrays["logits"]).max()), "passed": explained <= tol,
            "same_logits": raw <= tol, "torch": reference["torch"], "unused_lipctr": reference["unused_lipctr"],
            "unfilled_recbole": reference["unfilled_recbole"]}


def check_case(case: str, dataset, args) -> dict:
    """Export lipctr's side of `case`, run RecBole's in the bench venv, compare."""
    from benchmarks.vs_torch import recbole_config, run_worker

    arrays = export_case(case, dataset, args.rows, args.seed, args.first_order_pooling)
    with tempfile.TemporaryDirectory(prefix="recbole-logits-") as folder:
        npz = str(Path(folder) / f"{case}.npz")
        np.savez(npz, **arrays)
        settings = recbole_config(CASES[case][0], args.data, args.seed)
        settings.pop("first_order_pooling", None)  # lipctr's switch; RecBole's term always sums
        reference = run_worker(args.torch_python, ["--npz", npz, "--settings", json.dumps(settings)],
                               script=Path(__file__).resolve())
    return compare(case, arrays, reference, args.tol)


def print_result(r: dict, tol: float) -> None:
    status = "same logits" if r["same_logits"] else "PASS after the pooling gap" if r["passed"] else "FAIL"
    pooling = f"first_order_pooling {r['first_order_pooling']}" if r["first_order_pooling"] else "no first-order term"
    print(f"{r['case']:<14} max|diff| {r['max_abs_diff']:.3e}  "
          f"after pooling gap {r['max_abs_diff_after_known_gap']:.3e}  "
          f"(max|logit| {r['max_abs_logit']:.2f}, {r['rows']} rows, {pooling}, tol {tol:g})  {status}", flush=True)


def notes(r: dict) -> list[str]:
    """What a result left out: lipctr leaves never mapped, RecBole tensors never filled (their step counters aside)."""
    unfilled = [k for k in r["unfilled_recbole"] if not k.endswith("num_batches_tracked")]
    return ([f"lipctr leaves not mapped: {r['unused_lipctr']}"] if r["unused_lipctr"] else []) + (
        [f"RecBole tensors kept as RecBole initialised them (its forward never uses them): {unfilled}"]
        if unfilled else [])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {','.join(CASES)}")
    p.add_argument("--torch-python", default=os.environ.get("LIPCTR_BENCH_PYTHON", sys.executable),
                   help="python with torch and recbole 1.2.1 (default $LIPCTR_BENCH_PYTHON, else this python)")
    p.add_argument("--data", default=str(Path(os.environ.get("LIPCTR_DATA", REPO / "datasets")) / "ml-100k"),
                   help="folder with ml-100k.{inter,user,item} (default $LIPCTR_DATA/ml-100k)")
    p.add_argument("--rows", type=int, default=512, help="test rows in the batch (default 512)")
    p.add_argument("--first-order-pooling", choices=POOLINGS, default="sum",
                   help="lipctr's first_order_pooling for the cases with a first-order term (default sum, RecBole's; "
                        "mean: lipctr's default, which differs on the token_seq field 'class')")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    p.add_argument("--tol", type=float, default=1e-5, help="max |logit difference| allowed (default 1e-5)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--npz", help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(reference_logits(args.npz, json.loads(args.settings))))
        return 0
    cases = parse_cases(args.cases, CASES)
    if cases is None:
        return 2
    if not (Path(args.data) / "ml-100k.inter").is_file():
        print(f"error: --data {args.data}: ml-100k.inter not found (RecBole atomic files of ML-100K)", file=sys.stderr)
        return 2
    if args.rows < 1:
        print("error: --rows must be >= 1", file=sys.stderr)
        return 2
    if (refused := refuse_json_output(args.json, {"--data": args.data})) is not None:
        return refused
    import dataclasses

    from lipctr.data import get_preset, load_dataset

    args.data = str(Path(args.data).resolve())
    dataset = load_dataset(dataclasses.replace(get_preset("ml100k"), path=args.data))
    results = []
    for case in cases:
        results.append(check_case(case, dataset, args))
        print_result(results[-1], args.tol)
    for r in results:
        for line in notes(r):
            print(f"  {r['case']}: {line}")
    if any(not r["same_logits"] for r in results if r["passed"]):
        print("pooling gap: RecBole's first-order term sums a token_seq field's weights over the sequence "
              "(FMFirstOrderLinear), lipctr's averages them under first_order_pooling 'mean' (FirstOrderLinear)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
