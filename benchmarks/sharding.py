"""Sharding benchmark: one training epoch of the 5-seed DCNV2 ensemble on the synthetic ML-1M
preset, unsharded (one device) vs sharded over N devices.

    python benchmarks/sharding.py [--devices 2] [--epochs 1] [--preset ml1m] [--model dcnv2]

Each layout runs in a fresh process: "unsharded" on one device; "seeds=N" splits the ensemble
(padded to a multiple of N with stopped dummy members, which still cost compute); "seeds=1,data=N"
splits every batch. One untimed warm-up epoch (it includes compilation) precedes `--epochs` timed
ones; examples/second = training examples / median epoch seconds (each example trains every
member); "cores busy" = CPU seconds / wall seconds of the process over the timed epochs. On a
CPU-only machine the N devices are forced host devices (--xla_force_host_platform_device_count)
that share the same cores, so the ratio measures the overhead of sharding, not a speed-up. On a
GPU/TPU machine the first N real devices are used. Synthetic data only: timings, not results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lipctr.io import OutputPathError, check_output

REPO = Path(__file__).resolve().parents[1]


def child(layout: str, devices: int, epochs: int, preset: str, model: str, root: Path) -> dict:
    """Time the epochs of one layout in this process; -> a JSON-able dict."""
    sys.path.insert(0, str(REPO))
    import jax
    import numpy as np

    from experiments.configs import merge, named_config, validate
    from experiments.run import build_trainer
    from lipctr import sharding
    from lipctr.data import synthetic_dataset
    from lipctr.train import to_device

    start = time.perf_counter()
    dataset = synthetic_dataset(preset, cache=True, path=str(root / f"synthetic-{preset}"))
    load_seconds = time.perf_counter() - start
    config = validate(merge(named_config(f"{model}_ml1m"), {"variants": ["orig"]}))
    visible = jax.devices()
    if layout and len(visible) < devices:
        raise SystemExit(f"--devices {devices}: only {len(visible)} {visible[0].platform} device(s) visible")
    mesh = sharding.make_mesh(layout, visible[:devices]) if layout else None
    trainer = build_trainer(config, dataset, "orig", mesh)
    train = to_device(dataset.train, mesh)
    seeds = config["seeds"]
    state, stopping = trainer.init(train["features"], seeds, [0.0] * len(seeds))
    times, cpu = [], []
    for _ in range(epochs + 1):
        begin, begin_cpu = time.perf_counter(), time.process_time()
        state, stats = trainer.train_epoch(state, stopping, train)
        jax.block_until_ready((state, stats))
        times.append(time.perf_counter() - begin)
        cpu.append(time.process_time() - begin_cpu)
    loss = np.asarray(stats.loss)[: len(seeds)]
    if not np.all(np.isfinite(loss)):
        raise RuntimeError(f"{layout or 'unsharded'}: non-finite training loss {loss}")
    seconds = float(np.median(times[1:]))
    return {
        "layout": layout or "unsharded", "platform": visible[0].platform, "device_kind": visible[0].device_kind,
        "devices": devices if mesh else 1, "members": len(seeds),
        "members_computed": int(jax.tree.leaves(state.params)[0].shape[0]),
        "train_examples": len(dataset.train), "load_seconds": load_seconds,
        "warmup_seconds": times[0], "epoch_seconds": seconds, "examples_per_second": len(dataset.train) / seconds,
        "cpu_cores": os.cpu_count(), "cores_busy": float(np.sum(cpu[1:]) / np.sum(times[1:])),
    }


def run_child(layout: str, args, root: Path) -> dict:
    env = dict(os.environ)
    if layout:  # only the host (CPU) platform is affected; GPUs and TPUs are used as they are
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    command = [sys.executable, __file__, "--child", layout, "--devices", str(args.devices), "--epochs",
               str(args.epochs), "--preset", args.preset, "--model", args.model, "--root", str(root)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"layout {layout or 'unsharded'} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(args, root: Path) -> list[dict]:
    layouts = ["", f"seeds={args.devices}", f"seeds=1,data={args.devices}"]
    results = [run_child(layout, args, root) for layout in layouts]
    base = results[0]
    print(f"{args.model} on synthetic {args.preset}: {base['train_examples']:,} training examples, "
          f"{base['members']} seeds, platform {base['platform']} ({base['device_kind']}), "
          f"{base['cpu_cores']} CPU cores")
    print(f"{'layout':<16} {'devices':>7} {'members':>9} {'warm-up s':>9} {'epoch s':>8} {'examples/s':>11} "
          f"{'ratio':>6} {'cores busy':>10}")
    for r in results:
        members = f"{r['members_computed']}" + (f" ({r['members']}+{r['members_computed'] - r['members']})"
                                                 if r["members_computed"] > r["members"] else "")
        ratio = r["examples_per_second"] / base["examples_per_second"]
        print(f"{r['layout']:<16} {r['devices']:>7} {members:>9} {r['warmup_seconds']:9.1f} {r['epoch_seconds']:8.2f} "
              f"{r['examples_per_second']:11,.0f} {ratio:6.2f} {r['cores_busy']:10.2f}")
    if base["platform"] == "cpu":
        print(f"On CPU the {args.devices} devices are forced host devices sharing the same "
              f"{base['cpu_cores']} cores: the ratio (sharded / unsharded examples per second) measures the "
              "overhead of sharding, not a speed-up. Padding members (seeds=N when N does not divide 5) "
              "are computed too.")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=2, help="devices of the sharded layouts (default 2)")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up epoch (default 1)")
    parser.add_argument("--preset", default="ml1m", help="synthetic preset (default ml1m)")
    parser.add_argument("--model", default="dcnv2", help="backbone, with its <model>_ml1m config (default dcnv2)")
    parser.add_argument("--root", type=Path, help="folder for the synthetic data cache (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", metavar="LAYOUT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.devices < 1 or args.epochs < 1:
        parser.error("--devices and --epochs must be >= 1")
    try:
        if args.json:
            check_output("--json", args.json, {"--root": args.root})
        if args.root:
            check_output("--root", args.root, folder=True)
    except OutputPathError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.child is not None:
        print(json.dumps(child(args.child, args.devices, args.epochs, args.preset, args.model, args.root)))
        return 0
    with tempfile.TemporaryDirectory(prefix="lipctr-sharding-") as tmp:
        results = report(args, args.root or Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
