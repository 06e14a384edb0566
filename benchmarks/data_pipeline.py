"""Data pipeline benchmark on the synthetic presets at the paper's scales.

    python benchmarks/data_pipeline.py [--presets ml1m yelp2018 amazon_book] [--root DIR] [--no-files]

For each preset, in fresh processes (so each peak RSS is its own):
  synthetic  generate + preprocess (+ writing the cache), the end-to-end preprocessing time;
  cached     load_dataset hitting that cache;
  files      the same data written as RecBole atomic files, then read + preprocessed from them
             (the path real ML-1M / Yelp2018 / Amazon-book take), and its cached load.
Peak memory is the process's peak resident set size (resource.getrusage), interpreter included.
Targets on a 2-core machine: ml1m end to end < 10 s, cached load < 1 s, amazon_book < 60 s and
< 4 GiB. Synthetic data only: these are pipeline timings, not results on real data.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"ml1m": 10.0, "amazon_book": 60.0}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, preset: str, root: Path) -> dict:
    """One measurement in this process; -> a JSON-able dict."""
    sys.path.insert(0, str(REPO))
    from lipctr.data import DataConfig, load_dataset
    from lipctr.data.cache import save_cache
    from lipctr.data.export import write_atomic
    from lipctr.data.loader import cache_file
    from lipctr.data.preprocess import preprocess
    from lipctr.data.synthetic import synthetic_config, synthetic_raw

    config = synthetic_config(preset, 0, path=str(root / f"synthetic-{preset}"))
    files = DataConfig(preset, path=str(root / f"files-{preset}"), k_core=config.k_core)
    result = {"mode": mode, "preset": preset}
    start = time.perf_counter()
    if mode == "synthetic":
        raw = synthetic_raw(preset, 0)
        generated = time.perf_counter()
        dataset, rows = preprocess(raw, config)
        processed = time.perf_counter()
        save_cache(cache_file(config), dataset, rows)
        result.update(generate_s=generated - start, preprocess_s=processed - generated,
                      cache_write_s=time.perf_counter() - processed)
    elif mode == "write-files":
        write_atomic(synthetic_raw(preset, 0), Path(files.path), preset)
    elif mode in ("files", "cached", "files-cached"):
        target = config if mode == "cached" else files
        dataset = load_dataset(target, cache=mode != "files")
        expected = "hit" if mode != "files" else "off"
        if dataset.stats["cache"] != expected:
            raise RuntimeError(f"{mode}: cache {dataset.stats['cache']}, expected {expected}")
        if mode == "files":
            load_dataset(target)  # writes the cache for files-cached
    result["seconds"] = time.perf_counter() - start
    result["peak_mib"] = _peak_mib()
    if mode != "write-files":
        result.update({k: dataset.stats[k] for k in ("interactions", "users", "items", "train", "valid", "test")})
    return result


def run_child(mode: str, preset: str, root: Path) -> dict:
    command = [sys.executable, __file__, "--child", mode, preset, "--root", str(root)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} {preset} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(presets: list[str], root: Path, with_files: bool) -> None:
    print(f"{'preset':<12} {'step':<26} {'seconds':>8} {'peak MiB':>9}  notes")
    for preset in presets:
        s = run_child("synthetic", preset, root)
        notes = (f"{s['interactions']:,} interactions, {s['users']:,} users, {s['items']:,} items; "
                 f"generate {s['generate_s']:.1f} s + preprocess {s['preprocess_s']:.1f} s "
                 f"+ cache write {s['cache_write_s']:.1f} s")
        total = s["generate_s"] + s["preprocess_s"]
        target = TARGETS.get(preset)
        verdict = f" [target < {target:.0f} s: {'met' if total < target else 'MISSED'}]" if target else ""
        print(f"{preset:<12} {'synthetic end to end':<26} {total:8.2f} {s['peak_mib']:9.0f}  {notes}{verdict}")
        c = run_child("cached", preset, root)
        verdict = f" [target < 1 s: {'met' if c['seconds'] < 1 else 'MISSED'}]"
        print(f"{preset:<12} {'cached load':<26} {c['seconds']:8.2f} {c['peak_mib']:9.0f} {verdict}")
        if with_files:
            run_child("write-files", preset, root)
            f = run_child("files", preset, root)
            print(f"{preset:<12} {'atomic files end to end':<26} {f['seconds']:8.2f} {f['peak_mib']:9.0f}  "
                  f"read + preprocess from {preset}.inter/.user/.item")
            fc = run_child("files-cached", preset, root)
            print(f"{preset:<12} {'atomic files cached load':<26} {fc['seconds']:8.2f} {fc['peak_mib']:9.0f}  "
                  "includes hashing the files for the cache key")
        if preset == "amazon_book":
            verdict = "met" if s["peak_mib"] < 4096 else "MISSED"
            print(f"{'':<12} amazon_book peak memory target < 4096 MiB: {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["ml1m", "yelp2018", "amazon_book"])
    parser.add_argument("--root", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--no-files", action="store_true", help="skip the atomic-file round trip")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PRESET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.root)))
        return 0
    if args.root is not None:
        report(args.presets, args.root, not args.no_files)
        return 0
    with tempfile.TemporaryDirectory(prefix="lipctr-bench-") as tmp:
        report(args.presets, Path(tmp), not args.no_files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
