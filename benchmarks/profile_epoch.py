"""Where a training epoch's CPU time goes, per backbone: a profiler trace of one compiled epoch,
attributed to the optimised HLO's instructions.

    python -m benchmarks.profile_epoch [--models nfm,dcnv2] [--variant orig] [--seeds 1] [--dot-forms]
                                       [--data datasets/ml-100k]

For each backbone (the `<model>_ml100k` config, `--seeds` members, real ML-100K): the epoch program
that training runs (Trainer.train_epoch, compiled ahead), one untimed epoch, one timed untraced
epoch (its wall time, and the process's CPU time over it as "cores busy": 2.0 means both cores
of this machine worked the whole epoch, so a vmapped ensemble has no idle core to use), then one
epoch under `jax.profiler.trace` with XLA:CPU's per-thunk trace events on. Every event is matched to the HLO
instruction it ran, and that instruction is classed by what it computes:

  dot          dot / convolution (or a fusion holding one); FLOPs counted from the HLO shapes
  rng          a fusion or loop holding the threefry hash (uint32 xor / shift): dropout masks, permutation
  gather       embedding lookups          scatter   embedding-table gradients
  reduce       reductions (batch-norm statistics, attention sums, gradient sums over the batch;
               XLA:CPU sums a long axis as a tree of reduce-windows, 32 rows at a time)
  copy         copies and transposes (layout changes)
  elementwise  everything else (activations, Adam's update, masks applied, loss)

XLA:CPU runs a dot asynchronously on Eigen's threads, so its trace event covers only the launch;
dots are therefore timed two ways: `dot_s`, their FLOPs (counted from the HLO shapes) at the matmul
rate measured in the same process (a 4096x512 @ 512x512 fp32 matmul in a scan; this CPU's fp32
peak is about 333 GFLOP/s on 2 cores), a lower bound; and `dot_measured_s`, every distinct dot of
the step (operand shapes and dimension numbers as in the optimised HLO) compiled alone and timed
in a loop, times how often the epoch runs it: the epoch's dots at XLA:CPU's own rate for each
shape (transposed and skinny operands run well below peak). `--dot-forms` also times the five
largest in their other forms (operands swapped, one operand transposed first) and says whether
each gives the same bits: a faster form that does is a free speed-up. The other classes'
shares are of the CPU time of their events (one per task and thread, synchronous), and the
largest of them are listed with the JAX operation they came from (a class "rng" fusion also
applies the mask it draws). `--json` writes it all.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import math
import os
import re
import tempfile
import time

from benchmarks import refuse_json_output

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w\-]+)\((.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{\s*$")
_SHAPE = re.compile(r"[a-z0-9]+\[([0-9,]*)\]")
CONTROL = {"while", "conditional", "call"}
CLASSES = ("dot", "rng", "gather", "scatter", "reduce", "copy", "elementwise")
_DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16", "f64": "float64"}  # HLO's names -> numpy's


def _dims(shape: str) -> list[int]:
    m = _SHAPE.match(shape)
    return [int(d) for d in m.group(1).split(",") if d] if m else []


def _dot_flops(out_shape: str, rest: str, shapes: dict[str, str]) -> int:
    """2 x output elements x contracted size, from `dot(%lhs, %rhs), lhs_contracting_dims={..}`."""
    lhs = _dims(shapes.get(re.match(r"\s*%([\w.\-]+)", rest).group(1), ""))
    contracting = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", rest)
    size = math.prod(lhs[int(i)] for i in contracting.group(1).split(",") if i) if contracting else 1
    return 2 * math.prod(_dims(out_shape)) * size


def parse_hlo(text: str) -> dict[str, dict]:
    """{instruction name: {"class", "flops", "opcode", "in_step", "op_name"}} for every instruction
    of the module; in_step: not inside a fusion (the fusion instruction counts its dots' FLOPs)."""
    computations: dict[str, list[tuple]] = collections.defaultdict(list)
    current = None
    for line in text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = header.group(1)
            continue
        found = _INSTRUCTION.match(line)
        if found and current:
            computations[current].append(found.groups())
    shapes = {name: shape for instructions in computations.values() for name, shape, _, _ in instructions}
    fused = {c for instructions in computations.values() for _, _, op, rest in instructions if op == "fusion"
             for c in re.findall(r"calls=%([\w.\-]+)", rest)}

    def describe(opcode: str, shape: str, rest: str) -> tuple[str, int]:
        if opcode in ("dot", "convolution"):
            return "dot", _dot_flops(shape, rest, shapes)
        if opcode == "fusion" or opcode in CONTROL:
            called = re.findall(r"(?:calls|body|to_apply)=%([\w.\-]+)", rest)
            inner = [describe(op, s, r) for c in called for _, s, op, r in computations.get(c, [])]
            opcodes = {op for c in called for _, _, op, _ in computations.get(c, [])}
            flops = sum(f for _, f in inner)
            for cls in ("dot", "scatter", "gather"):
                if any(k == cls for k, _ in inner):
                    return cls, flops
            if {"xor", "shift-right-logical"} <= opcodes:
                return "rng", flops
            if opcodes & {"reduce", "reduce-window"}:  # XLA:CPU sums long axes as a tree of reduce-windows
                return "reduce", flops
            if opcodes <= {"copy", "transpose", "parameter", "bitcast", "broadcast", "constant"} and opcodes:
                return "copy", flops
            return "elementwise", flops
        if opcode in ("scatter", "gather"):
            return opcode, 0
        if opcode in ("reduce", "reduce-window"):
            return "reduce", 0
        if opcode in ("copy", "transpose"):
            return "copy", 0
        if opcode in ("xor", "shift-right-logical", "rng-bit-generator"):
            return "rng", 0
        return "elementwise", 0

    def dots_within(opcode: str, shape: str, rest: str) -> list[tuple]:
        if opcode in ("dot", "convolution"):
            return [dot_signature(shape, rest, shapes)] if opcode == "dot" else []
        if opcode == "fusion":
            return [d for c in re.findall(r"calls=%([\w.\-]+)", rest)
                    for _, s, op, r in computations.get(c, []) for d in dots_within(op, s, r)]
        return []

    table = {}
    for computation, instructions in computations.items():
        for name, shape, opcode, rest in instructions:
            cls, flops = describe(opcode, shape, rest)
            op_name = re.search(r'op_name="([^"]*)"', rest)
            table[name] = {"class": cls, "flops": flops, "opcode": opcode, "in_step": computation not in fused,
                           "op_name": op_name.group(1) if op_name else "", "dots": dots_within(opcode, shape, rest)}
    return table


def dot_signature(out_shape: str, rest: str, shapes: dict[str, str]) -> tuple:
    """(lhs dtype, lhs dims, rhs dtype, rhs dims, (contracting, batch) dimension numbers, output dtype)
    of an HLO dot, dtypes as HLO names them (f32, bf16)."""
    lhs, rhs = re.match(r"\s*%([\w.\-]+),\s*%([\w.\-]+)", rest).groups()

    def dims(key: str) -> tuple[int, ...]:
        found = re.search(key + r"=\{([0-9,]*)\}", rest)
        return tuple(int(i) for i in found.group(1).split(",") if i) if found else ()

    numbers = ((dims("lhs_contracting_dims"), dims("rhs_contracting_dims")),
               (dims("lhs_batch_dims"), dims("rhs_batch_dims")))
    return (shapes[lhs].split("[")[0], tuple(_dims(shapes[lhs])), shapes[rhs].split("[")[0], tuple(_dims(shapes[rhs])),
            numbers, out_shape.split("[")[0])


def signature_flops(signature: tuple) -> int:
    """2 x output elements x contracted size of a dot signature."""
    _, lhs, _, rhs, ((lhs_c, rhs_c), (lhs_b, rhs_b)), _ = signature
    free = ([n for i, n in enumerate(lhs) if i not in lhs_c + lhs_b]
            + [n for i, n in enumerate(rhs) if i not in rhs_c + rhs_b])
    return 2 * math.prod(lhs[i] for i in lhs_b) * math.prod(free) * math.prod(lhs[i] for i in lhs_c)


def describe_dot(signature: tuple) -> str:
    """E.g. "f32[4096,512] x f32[512,512] contract 1|0"."""
    lhs_dtype, lhs, rhs_dtype, rhs, ((lhs_c, rhs_c), (lhs_b, rhs_b)), _ = signature

    def axes(a):
        return ",".join(map(str, a))

    batch = f" batch {axes(lhs_b)}|{axes(rhs_b)}" if lhs_b else ""
    return f"{lhs_dtype}[{axes(lhs)}] x {rhs_dtype}[{axes(rhs)}] contract {axes(lhs_c)}|{axes(rhs_c)}{batch}"


def dot_forms(signature: tuple) -> dict:
    """Ways to compute the dot `signature` that give its output [same shape]: "as compiled", and for
    a dot without batch dimensions "operands swapped" (the transposed product, transposed back),
    "lhs transposed first" and "rhs transposed first" (a materialised transposed copy of that
    operand, contracted on its other axis). All read the same operands; which is fastest, and
    whether they agree bit for bit, is what `compare_dot_forms` measures."""
    from jax import lax

    lhs_dtype, lhs_dims, rhs_dtype, rhs_dims, numbers, out_dtype = signature
    (lhs_c, rhs_c), (lhs_b, rhs_b) = numbers
    out = _DTYPES[out_dtype]

    def dot(a, b, dims=numbers):
        return lax.dot_general(a, b, dims, preferred_element_type=out)

    forms = {"as compiled": dot}
    if lhs_b or len(lhs_dims) != 2 or len(rhs_dims) != 2 or len(lhs_c) != 1:
        return forms
    forms["operands swapped"] = lambda a, b: dot(b, a, ((rhs_c, lhs_c), ((), ()))).T
    forms["lhs transposed first"] = lambda a, b: dot(lax.optimization_barrier(a.T), b,
                                                     (((1 - lhs_c[0],), rhs_c), ((), ())))
    forms["rhs transposed first"] = lambda a, b: dot(a, lax.optimization_barrier(b.T),
                                                     ((lhs_c, (1 - rhs_c[0],)), ((), ())))
    return forms


def time_dot(signature: tuple, calls: int = 10, form: str = "as compiled") -> float:
    """Seconds per call of the dot `signature` compiled alone, computed as `form` (see `dot_forms`;
    best of 3 loops of `calls`). The operands pass through an optimization barrier each iteration,
    so XLA cannot hoist the dot out of the loop, and the result is carried, so no iteration is dead."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    dot = dot_forms(signature)[form]
    lhs, rhs = dot_operands(signature)

    def body(_, carry):
        a, b, _ = carry
        a, b = lax.optimization_barrier((a, b))
        return a, b, dot(a, b)

    out = jax.eval_shape(dot, lhs, rhs)
    run = jax.jit(lambda a, b: lax.fori_loop(0, calls, body, (a, b, jnp.zeros(out.shape, out.dtype)))[2])
    return best_seconds(run, (lhs, rhs), repeats=3) / calls


def dot_operands(signature: tuple):
    """Standard-normal operands of the dot `signature` (fixed keys)."""
    import jax

    lhs_dtype, lhs_dims, rhs_dtype, rhs_dims, _, _ = signature
    return (jax.random.normal(jax.random.key(0), lhs_dims).astype(_DTYPES[lhs_dtype]),
            jax.random.normal(jax.random.key(1), rhs_dims).astype(_DTYPES[rhs_dtype]))


def compare_dot_forms(signature: tuple, calls: int = 10) -> dict:
    """{form: {"ms": per call, "bit_equal": output bitwise equal to "as compiled"'s}} for every
    form of `dot_forms(signature)`, on the same operands."""
    import jax
    import numpy as np

    lhs, rhs = dot_operands(signature)
    values = {name: np.asarray(jax.jit(dot)(lhs, rhs)) for name, dot in dot_forms(signature).items()}
    reference = values["as compiled"]
    return {name: {"ms": 1e3 * time_dot(signature, calls, name),
                   "bit_equal": value.shape == reference.shape and value.tobytes() == reference.tobytes()}
            for name, value in values.items()}


def best_seconds(run, args: tuple, repeats: int) -> float:
    """Fastest of `repeats` timed calls of the jitted `run(*args)`, after one untimed call."""
    run(*args).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(*args).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best


def trace_events(trace_dir: str) -> list[tuple[str, int]]:
    """(event name, duration ns) of every event in the trace's host plane."""
    from jax._src.lib import _profile_data

    path = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0]
    data = _profile_data.ProfileData.from_file(path)
    return [(event.name, event.duration_ns) for plane in data.planes for line in plane.lines for event in line.events]


def profile_backbone(model: str, variant: str, data: str, matmul_rate: float, seeds: int = 1,
                     compare_forms: bool = False) -> dict:
    import jax

    from benchmarks.epoch_program import ml100k_epoch

    program = ml100k_epoch(model, variant, [2020 + i for i in range(seeds)], data)
    compiled, stopping, train = program.compiled, program.stopping, program.train
    hlo = parse_hlo(compiled.as_text())

    def epoch(state):
        """(state after one epoch, its wall seconds, the process's CPU seconds over it)."""
        start, cpu = time.perf_counter(), time.process_time()
        state, stats = compiled(state, stopping, train)
        jax.block_until_ready(stats)
        return state, time.perf_counter() - start, time.process_time() - cpu

    state, _, _ = epoch(program.state)  # untimed
    state, untraced, cpu = epoch(state)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            state, wall, _ = epoch(state)
        events = trace_events(trace_dir)
    per_class = collections.Counter()
    per_instruction = collections.Counter()
    for name, ns in events:
        info = hlo.get(name)
        if info is None or info["opcode"] in CONTROL or info["class"] == "dot":
            continue  # framework events, loops (their bodies' thunks count themselves), async dots
        per_class[info["class"]] += ns
        per_instruction[name] += ns
    steps = math.ceil(program.num_train / program.config["train"]["batch_size"])
    dot_flops = steps * sum(i["flops"] for i in hlo.values() if i["class"] == "dot" and i["opcode"] not in CONTROL
                            and i["in_step"])
    total = sum(per_class.values())
    per_step = collections.Counter(d for i in hlo.values() if i["in_step"] and i["opcode"] not in CONTROL
                                   for d in i["dots"])
    timed = sorted(((d, n, 1e3 * time_dot(d)) for d, n in per_step.items()), key=lambda t: -t[1] * t[2])
    dots = [{"dot": describe_dot(d), "per_step": n, "ms": ms, "gflop": signature_flops(d) / 1e9,
             **({"forms": compare_dot_forms(d)} if compare_forms and rank < 5 else {})}
            for rank, (d, n, ms) in enumerate(timed)]
    return {
        "model": model, "variant": variant, "members": seeds, "wall_s": wall, "untraced_wall_s": untraced,
        "cores_busy": cpu / untraced, "other_cpu_s": total / 1e9,
        "dot_gflop": dot_flops / 1e9, "dot_s": dot_flops / 1e9 / matmul_rate,
        "dot_measured_s": steps * sum(d["per_step"] * d["ms"] for d in dots) / 1e3, "dots": dots,
        "share_of_other": {c: per_class[c] / total for c in CLASSES if c != "dot"},
        "top": [{"instruction": n, "class": hlo[n]["class"], "cpu_ms": ns / 1e6, "op": hlo[n]["op_name"][-90:]}
                for n, ns in per_instruction.most_common(6)],
    }


def matmul_rate() -> float:
    """GFLOP/s of a [4096, 512] @ [512, 512] fp32 matmul (20 in a scan, best of 5)."""
    import jax
    import jax.numpy as jnp

    a, b = jnp.ones((4096, 512)), jnp.full((512, 512), 1e-3)
    run = jax.jit(lambda a, b: jax.lax.scan(lambda c, _: (jnp.tanh(c @ b), ()), a, None, length=20)[0])
    return 20 * 2 * 4096 * 512 * 512 / best_seconds(run, (a, b), repeats=5) / 1e9


def print_profile(r: dict) -> None:
    shares = "  ".join(f"{c} {100 * v:4.1f}%" for c, v in r["share_of_other"].items())
    print(f"\n{r['model']} ({r['variant']}, {r['members']} member{'s' if r['members'] > 1 else ''}): epoch "
          f"{r['untraced_wall_s']:.3f} s untraced ({r['untraced_wall_s'] / r['members']:.3f} s per member), "
          f"{r['cores_busy']:.2f} cores busy; traced {r['wall_s']:.3f} s")
    print(f"  dots {r['dot_gflop']:.1f} GFLOP = {r['dot_s']:.3f} s at the matmul rate "
          f"({100 * r['dot_s'] / r['wall_s']:.0f}% of the traced epoch); other ops {r['other_cpu_s']:.3f} CPU-s:")
    print(f"  {shares}")
    for t in r["top"]:
        print(f"  {t['cpu_ms']:8.1f} ms  {t['class']:11s} {t['instruction']:32s} {t['op']}")
    print(f"  dots at their own measured rates: {r['dot_measured_s']:.3f} s per epoch "
          f"({r['dot_gflop'] / r['dot_measured_s']:.0f} GFLOP/s overall, "
          f"{100 * r['dot_measured_s'] / r['wall_s']:.0f}% of the traced epoch); the largest:")
    for d in r["dots"][:5]:
        print(f"  {d['per_step']:3d} x {d['ms']:7.3f} ms  {d['gflop'] / d['ms'] * 1e3:5.0f} GFLOP/s  {d['dot']}")
        for name, form in d.get("forms", {}).items():
            if name != "as compiled":
                bits = "bit-equal" if form["bit_equal"] else "DIFFERENT bits"
                print(f"          {name:22s} {form['ms']:7.3f} ms  {bits}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_epoch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="widedeep,nfm,xdeepfm,autoint,fignn,dcnv2,eulernet")
    p.add_argument("--variant", default="orig", choices=["orig", "smooth"])
    p.add_argument("--data", default="datasets/ml-100k", help="ML-100K atomic files")
    p.add_argument("--seeds", type=int, default=1, help="members trained at once (vmapped), default 1")
    p.add_argument("--dot-forms", action="store_true",
                   help="also time the five largest dots in their other bit-for-bit forms (operands swapped, "
                        "an operand transposed first)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be at least 1, got {args.seeds}")
    if (refused := refuse_json_output(args.json, {"--data": args.data})) is not None:
        return refused
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()
    from lipctr import runtime

    runtime.configure_xla()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    rate = matmul_rate()
    print(f"matmul rate: {rate:.0f} GFLOP/s (fp32, {os.cpu_count()} cores)")
    results = []
    for model in args.models.split(","):
        results.append(profile_backbone(model.strip(), args.variant, args.data, rate, args.seeds, args.dot_forms))
        print_profile(results[-1])
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_gflops": rate, "backbones": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
