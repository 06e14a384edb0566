"""Same weights, same logits: lipctr's FinalMLP and GDCN against FuxiCTR's own model-zoo code, and
DCNv3 against its authors' code (github.com/salmon1802/DCNv3, built on fuxictr) (issue 27; DeepFM
and DCN are checked against RecBole by benchmarks.recbole_logits).

lipctr's side (this process) builds each case with the registry's hyper-parameters on ML-100K's six
token fields (real vocabulary sizes; ids drawn at random, seeded), initialises it, redraws every
leaf that starts constant (zero biases, FinalMLP's zero context bias: plus N(0, 0.05^2), so no term
may hide behind a zero; benchmarks.recbole_logits.redraw_constant_leaves), draws the embedding
tables N(0, 0.5^2) (--embedding-std; inputs of order 1, so that gates and ReLUs switch), and writes the
parameters, the batch and its own eval-mode logits [B, K] to an .npz. The reference
side (a subprocess in a python with torch and the `fuxictr` package, 2.3.10 when this was written)
imports FinalMLP / GDCN / GDCNP from a checkout of github.com/reczoo/FuxiCTR's model_zoo (DCNv3 from
a checkout of the authors' repository), builds the
model on a FeatureMap of the same fields, maps every tensor in, and runs the forward with the
output sigmoid replaced by the identity (logits). It prints max |reference logit - lipctr logit| per
case and exits 0 when every case is within --tol times max(1, max |logit|) and every lipctr
parameter was mapped.

FuxiCTR's models have one output. The K = 5 cases swap in FuxiCTR's own output modules built
K wide (FinalMLP: InteractionAggregation(output_dim=5); GDCN: the MLP's last nn.Linear; GDCNP:
fc; DCNv3: ECN.dfc and LCN.sfc) to check that lipctr's K-wide heads are FuxiCTR's layers with output_dim = K.

Tensor map, lipctr -> FuxiCTR (torch nn.Linear holds [out, in], so every kernel is transposed):
  embedding/tables/<f>/embedding [V, d]    embedding_layer.embedding_layer.embedding_layers.<f>.weight
  <mlp>/Dense_<i>, <mlp>/output, prediction
                                           the nn.Linear layers of the MLP_Block, in order
  cross/w_<l>, wg_<l> [D, D], b_<l> [D]    cross_net.w.<l>.weight, cross_net.wg.<l>.weight, cross_net.b.<l>
  fs<i>_gate/context_embedding/<f>/embedding
                                           fs_module.fs<i>_ctx_emb.embedding_layer.embedding_layers.<f>.weight
  fs<i>_gate/context_bias [d]              fs_module.fs<i>_ctx_bias [1, d]
  fs<i>_gate/mlp/...                       fs_module.fs<i>_gate (MLP_Block)
  fusion/w_x, w_y                          fusion_module.w_x, w_y
  fusion/w_xy [H, X/H, K, Y/H]             fusion_module.w_xy [H * X/H * Y/H, K] (the same memory)
  ecn|lcn/w_<l> [D, D/2], b_<l> [D]        ECN|LCN.w.<l>.weight, ECN|LCN.b.<l>
  ecn|lcn/layer_norm_<l>/scale, bias       ECN|LCN.layer_norm.<l>.weight, bias
  ecn/output, lcn/output                   ECN.dfc, LCN.sfc
  (DCNv3's tables [V, H * d]               embedding_layer.embedding_layer.embedding_layer.embedding_layers.<f>.weight)

The torch python: the bench venv of `benchmarks.vs_torch --help` plus
`pip install --no-deps fuxictr==2.3.10 && pip install polars h5py pydantic` (fuxictr's ray and
pyarrow requirements are for its data pipeline, which this never runs: the worker stubs ray).

    git clone https://github.com/reczoo/FuxiCTR /path/FuxiCTR   # checked at 0245987
    git clone https://github.com/salmon1802/DCNv3 /path/DCNv3   # checked at df6da8b
    python -m benchmarks.fuxictr_logits --torch-python /work/venv-bench/bin/python \
        --fuxictr-zoo /path/FuxiCTR/model_zoo --dcnv3-repo /path/DCNv3
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
from benchmarks.recbole_logits import redraw_constant_leaves

# case: (lipctr model, hyper-parameters beyond the registry's, K)
CASES = {
    "finalmlp": ("finalmlp", {}, 1),
    "finalmlp_no_context": ("finalmlp", {"fs1_context": (), "fs2_context": ()}, 1),
    "finalmlp_k5": ("finalmlp", {}, 5),
    "gdcn": ("gdcn", {}, 1),
    "gdcn_parallel": ("gdcn", {"structure": "parallel"}, 1),
    "gdcn_k5": ("gdcn", {}, 5),
    "dcnv3": ("dcnv3", {}, 1),
    "dcnv3_heads2": ("dcnv3", {"num_heads": 2}, 1),
    "dcnv3_k5": ("dcnv3", {}, 5),
}
TOKEN_FIELDS = ("user_id", "item_id", "age", "gender", "occupation", "release_year")  # ML-100K's, no token_seq


# ----------------------------------------------------------------------------- lipctr's side


def schema():
    """ML-100K's token fields (the registry's default model inputs, less the token_seq 'class')."""
    from lipctr.data.schema import Schema
    from lipctr.models.parameter_counts import ml100k_schema

    return Schema(tuple(f for f in ml100k_schema().fields if f.name in TOKEN_FIELDS))


def export_case(case: str, rows: int, seed: int, embedding_std: float = 0.5) -> dict[str, np.ndarray]:
    """params/<path> (float32, lipctr's shapes), features/<field> int32 [B], logits float32 [B, K], and
    the model's settings (hparams/<name>, JSON) for the reference."""
    import jax
    import jax.numpy as jnp

    from lipctr.models import build_model, default_hparams

    name, extra, k = CASES[case]
    fields = schema()
    rng = np.random.default_rng(seed)
    features = {f.name: rng.integers(1, f.vocab_size, size=rows).astype(np.int32) for f in fields.fields}
    model = build_model(name, fields, k, **extra)
    variables = jax.jit(model.init)({"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)},
                                    {f: jnp.asarray(v[:2]) for f, v in features.items()})
    leaves, tree = jax.tree.flatten_with_path(variables["params"])
    names = ["/".join(str(p.key) for p in path) for path, _ in leaves]
    drawn = redraw_constant_leaves({n: np.asarray(leaf) for n, (_, leaf) in zip(names, leaves)}, seed)
    for n in names:  # inputs of order 1 (not the init's small ones), so the gates and ReLUs are exercised
        if n.endswith("/embedding"):
            drawn[n] = (embedding_std * rng.normal(size=drawn[n].shape)).astype(np.float32)
    params = jax.tree.unflatten(tree, [jnp.asarray(drawn[n]) for n in names])
    logits = model.apply({"params": params}, {f: jnp.asarray(v) for f, v in features.items()}, deterministic=True)
    hparams = {**default_hparams(name), **extra}
    settings = {"model": name, "k": k, "fields": [[f.name, f.source, f.vocab_size] for f in fields.fields],
                "hparams": {key: list(v) if isinstance(v, tuple) else v for key, v in hparams.items()}}
    return {**{f"params/{n}": v for n, v in drawn.items()}, **{f"features/{f}": v for f, v in features.items()},
            "logits": np.asarray(logits, np.float32), "settings": np.asarray(json.dumps(settings))}


# ----------------------------------------------------------------------------- FuxiCTR's side (torch)


def _stub_ray() -> None:
    """fuxictr's package __init__ imports its data pipeline, which imports ray (not needed to build a
    model): any `ray.*` import gets an empty module whose attributes are empty classes."""
    import importlib.abc
    import importlib.machinery
    import types

    class Stub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name == "ray" or name.startswith("ray."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            module = types.ModuleType(spec.name)
            module.__path__ = []
            module.__getattr__ = Stub.attribute
            return module

        @staticmethod
        def attribute(attr: str):
            if attr.startswith("__"):  # inspect and others probe dunder names: the stub has none
                raise AttributeError(attr)
            return type(attr, (), {})

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Stub())


def linears(block) -> list:
    """The nn.Linear layers of a FuxiCTR MLP_Block, in order."""
    import torch

    return [m for m in block.mlp if isinstance(m, torch.nn.Linear)]


def dense_names(arrays: dict, prefix: str) -> list[str]:
    """lipctr's dense layers under `prefix` in order: Dense_0, Dense_1, ..., then output if present."""
    names = sorted({n.rsplit("/", 1)[0] for n in arrays if n.startswith(f"params/{prefix}/Dense_")},
                   key=lambda n: int(n.rsplit("_", 1)[1]))
    return names + ([f"params/{prefix}/output"] if f"params/{prefix}/output/kernel" in arrays else [])


def fill_linears(state: dict, layers: list, names: list[str], arrays: dict, module_names: dict) -> None:
    if len(layers) != len(names):
        raise ValueError(f"{len(layers)} FuxiCTR linear layers against lipctr's {names}")
    for layer, name in zip(layers, names):
        state[module_names[layer] + ".weight"] = arrays[f"{name}/kernel"].T
        state[module_names[layer] + ".bias"] = arrays[f"{name}/bias"]


def source_file(model: str, zoo: str, dcnv3_repo: str) -> Path:
    """The reference's source file of a lipctr model name."""
    if model == "dcnv3":
        return Path(dcnv3_repo) / "src" / "DCNv3.py"
    folder = {"finalmlp": "FinalMLP", "gdcn": "GDCN"}[model]
    return Path(zoo) / folder / "src" / f"{folder}.py"


def reference_model(zoo_module, settings: dict, feature_map, root: str):
    """The reference's model of `settings` in eval mode, its output layers K wide, logits out."""
    import torch

    hp, k = settings["hparams"], settings["k"]
    common = {"feature_map": feature_map, "gpu": -1, "embedding_dim": hp["embedding_dim"], "optimizer": "adam",
              "loss": "binary_crossentropy", "verbose": 0, "model_root": root, "metrics": ["AUC"]}
    if settings["model"] == "finalmlp":
        names = {"user": settings["fields"][0][0], "item": settings["fields"][1][0]}
        model = zoo_module.FinalMLP(
            **common, mlp1_hidden_units=hp["mlp1_hidden_units"], mlp2_hidden_units=hp["mlp2_hidden_units"],
            mlp1_dropout=hp["mlp1_dropout"], mlp2_dropout=hp["mlp2_dropout"], mlp1_batch_norm=hp["mlp1_batch_norm"],
            mlp2_batch_norm=hp["mlp2_batch_norm"], use_fs=hp["use_fs"], fs_hidden_units=hp["fs_hidden_units"],
            num_heads=hp["num_heads"], fs1_context=[names.get(c, c) for c in hp["fs1_context"]],
            fs2_context=[names.get(c, c) for c in hp["fs2_context"]])
        if k != 1:
            model.fusion_module = zoo_module.InteractionAggregation(
                hp["mlp1_hidden_units"][-1], hp["mlp2_hidden_units"][-1], output_dim=k, num_heads=hp["num_heads"])
    elif settings["model"] == "dcnv3":
        model = zoo_module.DCNv3(
            **common, num_deep_cross_layers=hp["num_deep_cross_layers"],
            num_shallow_cross_layers=hp["num_shallow_cross_layers"], deep_net_dropout=hp["deep_net_dropout"],
            shallow_net_dropout=hp["shallow_net_dropout"], layer_norm=hp["layer_norm"], batch_norm=hp["batch_norm"],
            num_heads=hp["num_heads"])
        if k != 1:
            model.ECN.dfc = torch.nn.Linear(model.ECN.dfc.in_features, k)
            model.LCN.sfc = torch.nn.Linear(model.LCN.sfc.in_features, k)
    else:
        parallel = hp["structure"] == "parallel"
        model = (zoo_module.GDCNP if parallel else zoo_module.GDCN)(
            **common, dnn_hidden_units=hp["dnn_hidden_units"], num_cross_layers=hp["num_cross_layers"],
            net_dropout=hp["net_dropout"], batch_norm=hp["batch_norm"])
        if k != 1 and parallel:
            model.fc = torch.nn.Linear(model.fc.in_features, k)
        elif k != 1:
            model.dnn.mlp[-1] = torch.nn.Linear(model.dnn.mlp[-1].in_features, k)
    model.output_activation = torch.nn.Identity()
    return model.eval()


def reference_state(model, arrays: dict, settings: dict) -> dict[str, np.ndarray]:
    """{reference state_dict key: lipctr's array in the reference's layout} (the tensor map above)."""
    hp, k, module_names = settings["hparams"], settings["k"], {m: n for n, m in model.named_modules()}
    state: dict[str, np.ndarray] = {}
    tables = "embedding_layer.embedding_layer" + (".embedding_layer" if settings["model"] == "dcnv3" else "")
    for name, _, _ in settings["fields"]:
        state[f"{tables}.embedding_layers.{name}.weight"] = arrays[f"params/embedding/tables/{name}/embedding"]
    if settings["model"] == "finalmlp":
        fill_linears(state, linears(model.mlp1), dense_names(arrays, "mlp1"), arrays, module_names)
        fill_linears(state, linears(model.mlp2), dense_names(arrays, "mlp2"), arrays, module_names)
        for i in (1, 2):
            gate = f"fs{i}_gate"
            fill_linears(state, linears(getattr(model.fs_module, gate)), dense_names(arrays, f"{gate}/mlp"), arrays,
                         module_names)
            context = [n for n in arrays if n.startswith(f"params/{gate}/context_embedding/")]
            for leaf in context:
                field = leaf.split("/")[-2]
                state[f"fs_module.fs{i}_ctx_emb.embedding_layer.embedding_layers.{field}.weight"] = arrays[leaf]
            if not context:
                state[f"fs_module.fs{i}_ctx_bias"] = arrays[f"params/{gate}/context_bias"][None, :]
        for w in ("w_x", "w_y"):
            state[f"fusion_module.{w}.weight"] = arrays[f"params/fusion/{w}/kernel"].T
            state[f"fusion_module.{w}.bias"] = arrays[f"params/fusion/{w}/bias"]
        state["fusion_module.w_xy"] = arrays["params/fusion/w_xy"].reshape(-1, k)
    elif settings["model"] == "dcnv3":
        for net, layers, output in (("ECN", hp["num_deep_cross_layers"], "dfc"),
                                    ("LCN", hp["num_shallow_cross_layers"], "sfc")):
            ours = f"params/{net.lower()}"
            for layer in range(layers):
                state[f"{net}.w.{layer}.weight"] = arrays[f"{ours}/w_{layer}/kernel"].T
                state[f"{net}.b.{layer}"] = arrays[f"{ours}/b_{layer}"]
                if hp["layer_norm"]:
                    state[f"{net}.layer_norm.{layer}.weight"] = arrays[f"{ours}/layer_norm_{layer}/scale"]
                    state[f"{net}.layer_norm.{layer}.bias"] = arrays[f"{ours}/layer_norm_{layer}/bias"]
            state[f"{net}.{output}.weight"] = arrays[f"{ours}/output/kernel"].T
            state[f"{net}.{output}.bias"] = arrays[f"{ours}/output/bias"]
    else:
        for layer in range(hp["num_cross_layers"]):
            state[f"cross_net.w.{layer}.weight"] = arrays[f"params/cross/w_{layer}"].T
            state[f"cross_net.wg.{layer}.weight"] = arrays[f"params/cross/wg_{layer}"].T
            state[f"cross_net.b.{layer}"] = arrays[f"params/cross/b_{layer}"]
        output = [model.fc] if hp["structure"] == "parallel" else []  # GDCN's output layer ends its MLP_Block
        fill_linears(state, linears(model.dnn) + output, [*dense_names(arrays, "mlp"), "params/prediction"], arrays,
                     module_names)
    return state


def reference_logits(npz: str, zoo: str, dcnv3_repo: str) -> dict:
    """The reference's eval-mode logits [B, K] on the batch in `npz`, with the weights in it."""
    import collections
    import importlib.util

    import torch

    _stub_ray()
    from fuxictr import __version__ as fuxictr_version
    from fuxictr.features import FeatureMap

    arrays = dict(np.load(npz))
    settings = json.loads(str(arrays["settings"]))
    spec = importlib.util.spec_from_file_location(settings["model"], source_file(settings["model"], zoo, dcnv3_repo))
    zoo_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo_module)
    with tempfile.TemporaryDirectory(prefix="fuxictr-") as root:
        feature_map = FeatureMap("lipctr", root)
        feature_map.features = collections.OrderedDict(
            (name, {"type": "categorical", "source": source, "vocab_size": vocab})
            for name, source, vocab in settings["fields"])
        feature_map.num_fields = feature_map.get_num_fields()
        feature_map.default_emb_dim = settings["hparams"]["embedding_dim"]
        model = reference_model(zoo_module, settings, feature_map, root)
    state = reference_state(model, arrays, settings)
    own = model.state_dict()
    for key, value in state.items():
        if tuple(own[key].shape) != value.shape:
            raise ValueError(f"{key}: reference {tuple(own[key].shape)}, mapped {value.shape}")
    model.load_state_dict({**own, **{key: torch.from_numpy(np.ascontiguousarray(v, np.float32))
                                     for key, v in state.items()}})
    batch = {name: torch.from_numpy(arrays[f"features/{name}"].astype(np.int64)) for name, _, _ in settings["fields"]}
    with torch.no_grad():
        logits = model(batch)["y_pred"].numpy()
    return {"logits": logits.astype(np.float64).tolist(), "torch": torch.__version__, "fuxictr": fuxictr_version,
            "mapped_elements": int(sum(v.size for v in state.values())),
            "unfilled_fuxictr": sorted(set(own) - set(state))}


# ----------------------------------------------------------------------------- the check


def check_case(case: str, args) -> dict:
    """Export lipctr's side of `case`, run FuxiCTR's in the torch python, compare."""
    from benchmarks.vs_torch import run_worker

    arrays = export_case(case, args.rows, args.seed, args.embedding_std)
    with tempfile.TemporaryDirectory(prefix="fuxictr-logits-") as folder:
        npz = str(Path(folder) / f"{case}.npz")
        np.savez(npz, **arrays)
        reference = run_worker(args.torch_python, ["--npz", npz, "--fuxictr-zoo", args.fuxictr_zoo,
                                                   "--dcnv3-repo", args.dcnv3_repo], script=Path(__file__).resolve())
    theirs = np.asarray(reference["logits"], np.float64).reshape(arrays["logits"].shape)
    diff = float(np.abs(theirs - arrays["logits"].astype(np.float64)).max())
    lipctr_elements = int(sum(v.size for n, v in arrays.items() if n.startswith("params/")))
    return {"case": case, "rows": int(theirs.shape[0]), "k": int(theirs.shape[1]), "max_abs_diff": diff,
            "max_abs_logit": float(np.abs(arrays["logits"]).max()),
            "passed": diff <= args.tol * max(1.0, float(np.abs(arrays["logits"]).max()))
                      and reference["mapped_elements"] == lipctr_elements,
            "lipctr_elements": lipctr_elements, **{k: v for k, v in reference.items() if k != "logits"}}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {','.join(CASES)}")
    p.add_argument("--torch-python", default=os.environ.get("LIPCTR_BENCH_PYTHON", sys.executable),
                   help="python with torch and fuxictr (default $LIPCTR_BENCH_PYTHON, else this python)")
    p.add_argument("--fuxictr-zoo", default=os.environ.get("LIPCTR_FUXICTR_ZOO", ""),
                   help="the model_zoo folder of a FuxiCTR checkout (default $LIPCTR_FUXICTR_ZOO)")
    p.add_argument("--dcnv3-repo", default=os.environ.get("LIPCTR_DCNV3_REPO", ""),
                   help="a checkout of github.com/salmon1802/DCNv3, the DCNv3 cases' reference (default "
                        "$LIPCTR_DCNV3_REPO)")
    p.add_argument("--rows", type=int, default=256, help="rows in the batch (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the ids and parameters (default 0)")
    p.add_argument("--embedding-std", type=float, default=0.5,
                   help="std of the drawn embedding tables (default 0.5; 0.1 keeps DCNv3's logits of order 1)")
    p.add_argument("--tol", type=float, default=1e-5,
                   help="max |logit difference| allowed, times max(1, max |logit|): float32 rounding grows with the "
                        "logits, and DCNv3's exponential cross network reaches hundreds here (default 1e-5)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--npz", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(reference_logits(args.npz, args.fuxictr_zoo, args.dcnv3_repo)))
        return 0
    cases = parse_cases(args.cases, CASES)
    if cases is None:
        return 2
    for model in sorted({CASES[c][0] for c in cases}):
        flag, folder, what = (("--dcnv3-repo", args.dcnv3_repo, "a checkout of github.com/salmon1802/DCNv3")
                              if model == "dcnv3" else
                              ("--fuxictr-zoo", args.fuxictr_zoo, "the model_zoo folder of a FuxiCTR checkout"))
        path = source_file(model, args.fuxictr_zoo, args.dcnv3_repo)
        if not path.is_file():
            print(f"error: {flag} {folder!r}: no {path.relative_to(folder or '.')} there ({what})", file=sys.stderr)
            return 2
    if args.rows < 1:
        print("error: --rows must be >= 1", file=sys.stderr)
        return 2
    if (refused := refuse_json_output(args.json, {"--fuxictr-zoo": args.fuxictr_zoo})) is not None:
        return refused
    results = []
    for case in cases:
        r = check_case(case, args)
        results.append(r)
        print(f"{case:<20} K={r['k']}  max|diff| {r['max_abs_diff']:.3e}  (max|logit| {r['max_abs_logit']:.2f}, "
              f"{r['rows']} rows; {r['mapped_elements']:,} of lipctr's {r['lipctr_elements']:,} parameters mapped; "
              f"tol {args.tol:g})  {'PASS' if r['passed'] else 'FAIL'}", flush=True)
        if r["unfilled_fuxictr"]:
            print(f"  FuxiCTR tensors left as initialised: {r['unfilled_fuxictr']}")
    print(f"torch {results[0]['torch']}, fuxictr {results[0]['fuxictr']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
