"""Score with a finished run: `python -m lipctr.predict RUN_DIR --pairs pairs.csv --out scores.csv`
or `python -m lipctr.predict RUN_DIR --recommend --users 196,186 --k 10 --out top10.csv`.

RUN_DIR is a run directory (its --variant is used), a variant directory, or a folder written by
Run.export. Pairs and outputs are CSV or Parquet, by extension; pairs files have a header with
user_id and item_id (raw ids, as in the training files) and optionally feature columns
(lipctr.encoding); the raw column names the run was trained with (its --columns, e.g. userId,
movieId) are accepted too. The output is written atomically and never over an input file.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import warnings
from pathlib import Path

import pandas as pd

from lipctr.encoding import InputError, UnknownIdWarning
from lipctr.io import OutputPathError, check_output, write_bytes_atomic
from lipctr.run_files import RunFileError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class UsageError(ValueError):
    """A command-line option or file that cannot be used."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lipctr.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory, variant directory or exported folder")
    p.add_argument("--variant", default="smooth", help="orig, smooth or lambda_sweep (default smooth)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--pairs", metavar="FILE", help="CSV / Parquet of (user_id, item_id) pairs to score")
    what.add_argument("--recommend", action="store_true", help="top-k items of the full catalogue per user")
    p.add_argument("--users", help="with --recommend: comma-separated raw user ids, e.g. 196,186")
    p.add_argument("--users-file", metavar="FILE", help="with --recommend: CSV / Parquet with a user_id column")
    p.add_argument("--k", type=int, help="with --recommend: items per user (default 10)")
    p.add_argument("--include-seen", action="store_true", help="with --recommend: keep the users' training items")
    p.add_argument("--unknown", choices=["map", "error"], default="map",
                   help="ids the run never saw: score as the unknown id 0 and report their count (map, default), "
                        "or stop (error)")
    p.add_argument("--out", required=True, metavar="FILE", help="output .csv or .parquet")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def file_format(path: str, what: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"{what} {path}: unknown extension {suffix!r}; expected .csv, .parquet or .pq")
    return FORMATS[suffix]


def read_frame(path: str, what: str, renames: dict | None = None) -> pd.DataFrame:
    """A CSV (every cell read as text, so raw ids keep their spelling) or Parquet file, its raw
    columns renamed by `renames` (the run's --columns) where the field name is not there already."""
    kind = file_format(path, what)
    if not Path(path).is_file():
        raise UsageError(f"{what} {path}: no such file")
    try:
        frame = pd.read_csv(path, dtype=str) if kind == "csv" else pd.read_parquet(path)
    except Exception as error:  # pandas / pyarrow raise many kinds for unreadable files
        raise UsageError(f"{what} {path}: cannot be read as {kind} ({type(error).__name__}: {error})") from None
    mapping = {raw: field for raw, field in (renames or {}).items()
               if raw in frame.columns and field not in frame.columns}
    return frame.rename(columns=mapping)


def run_columns(run_dir: str) -> dict:
    """The raw -> field column renames the run was trained with (config.json's data.columns, set
    by --columns), {} for an export or a run without them."""
    for folder in (Path(run_dir), Path(run_dir).parent):
        path = folder / "config.json"
        if path.is_file():
            try:
                columns = json.loads(path.read_text(encoding="utf-8")).get("data", {}).get("columns", {})
            except (ValueError, AttributeError, UnicodeDecodeError):
                return {}
            return columns if isinstance(columns, dict) else {}
    return {}


def write_frame(frame: pd.DataFrame, path: str) -> None:
    if file_format(path, "--out") == "csv":
        write_bytes_atomic(path, frame.to_csv(index=False).encode("utf-8"))
        return
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    write_bytes_atomic(path, buffer.getvalue())


def catalogue_size(run) -> int | None:
    """Items a run can recommend (its item vocabulary less the unknown id 0)."""
    try:
        return int(run.schema[run.schema.item_field].vocab_size) - 1
    except (AttributeError, KeyError):
        return None


def load(run_dir: str, variant: str):
    """A loaded run, or an exported one when RUN_DIR is an export folder."""
    from lipctr.export import PROGRAM_FILE, load_exported
    from lipctr.inference import load_run

    if (Path(run_dir) / PROGRAM_FILE).is_file():
        return load_exported(run_dir)
    return load_run(run_dir, variant)


def check_options(args: argparse.Namespace) -> None:
    """UsageError for options of --recommend given with --pairs, and outputs aimed at an input."""
    if args.pairs:
        given = [flag for flag, value in (("--users", args.users), ("--users-file", args.users_file),
                                          ("--k", args.k), ("--include-seen", args.include_seen or None))
                 if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: only with --recommend; --pairs scores the pairs of its file "
                             "(its user_id column names the users)")
    if args.k is not None and args.k < 1:
        raise UsageError(f"--k {args.k}: expected a positive number of items per user")
    file_format(args.out, "--out")
    try:
        check_output("--out", args.out, {"--pairs": args.pairs, "--users-file": args.users_file,
                                         "RUN_DIR": args.run_dir})
    except OutputPathError as error:
        raise UsageError(str(error)) from None


def short_lists(out: pd.DataFrame, users: list, k: int, num_items: int | None, include_seen: bool) -> str | None:
    """A warning when some users got fewer than k items (a small catalogue, or few unseen items)."""
    counts = out.groupby(out.columns[0], sort=False).size() if len(out) else pd.Series(dtype=int)
    short = sum(int(counts.get(u, 0)) < k for u in dict.fromkeys(users))
    if not short:
        return None
    catalogue = f"the catalogue has {num_items:,} items" if num_items is not None else "the catalogue is smaller"
    seen = "" if include_seen else " less each user's training items (--include-seen keeps them)"
    return (f"--k {k}: {short:,} of {len(dict.fromkeys(users)):,} users got fewer than {k} items; "
            f"{catalogue}{seen}")


def users_of(args: argparse.Namespace, renames: dict | None = None) -> list:
    if bool(args.users) == bool(args.users_file):
        raise UsageError("--recommend needs exactly one of --users 1,2,3 or --users-file FILE")
    if args.users:
        return [u.strip() for u in args.users.split(",") if u.strip()]
    frame = read_frame(args.users_file, "--users-file", renames)
    if "user_id" not in frame.columns:
        raise UsageError(f"--users-file {args.users_file}: no user_id column; it has {list(frame.columns)}")
    return frame["user_id"].tolist()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_options(args)
        renames = run_columns(args.run_dir)
        if args.recommend:
            users = users_of(args, renames)
        else:
            pairs = read_frame(args.pairs, "--pairs", renames)
        run = load(args.run_dir, args.variant)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnknownIdWarning)
            if args.recommend:
                k = 10 if args.k is None else args.k
                out = run.recommend(users, k, exclude_seen=not args.include_seen, unknown=args.unknown,
                                    progress=not args.no_progress)
                short = short_lists(out, users, k, catalogue_size(run), args.include_seen)
            else:
                out = run.predict(pairs, unknown=args.unknown, progress=not args.no_progress,
                                  source=f"--pairs {args.pairs}")
        for message in [w.message for w in caught] + ([short] if args.recommend and short else []):
            print(f"warning: {message}", file=sys.stderr)
        write_frame(out, args.out)
    except (UsageError, RunFileError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(out):,} rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
