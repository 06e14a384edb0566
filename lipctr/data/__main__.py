"""python -m lipctr.data <dataset> [--synthetic] [--root DIR] [--no-cache]

Loads a dataset preset, preprocesses it and prints its summary (counts, positives, splits, fields).
ML-100K is fetched when absent from the default folder, never into a --path folder.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from lipctr.data.errors import DataError, DataWarning
from lipctr.data.loader import load_dataset
from lipctr.data.registry import get_preset
from lipctr.data.summary import format_summary
from lipctr.data.synthetic import synthetic_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lipctr.data", description=__doc__.split("\n")[2])
    parser.add_argument("dataset", help="ml100k, ml1m, yelp2018, amazon_book (or ml-100k, ml-1m, amazon-book); "
                                        "with --synthetic also tiny, small")
    parser.add_argument("--synthetic", action="store_true", help="the synthetic preset of that name")
    parser.add_argument("--seed", type=int, default=0, help="synthetic generator seed")
    parser.add_argument("--path", help="the dataset folder (default <datasets root>/<name>)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    args = parser.parse_args(argv)
    overrides = {"path": args.path} if args.path else {}
    try:
        if args.synthetic:
            config = synthetic_config(args.dataset, args.seed, **overrides)
        else:
            config = get_preset(args.dataset, **overrides)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)  # printed below, one line each
            dataset = load_dataset(config, cache=not args.no_cache)
        seconds = time.perf_counter() - start
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for message in dataset.stats.get("warnings", []):
        print(f"warning: {message}", file=sys.stderr)
    print(format_summary(dataset))
    print(f"loaded in {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
