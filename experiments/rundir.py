"""Run directories: created exclusively (distinct under concurrent starts), locked while a
process trains in them, and read back for a resume, which continues the stored config."""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
from pathlib import Path

from experiments.configs import ConfigError, merge, validate
from lipctr import sharding
from lipctr.io import write_json_atomic

# the flags that choose a run's config: refused with --resume, which continues the stored one (the
# shared ones of experiments.cli, the data flags of data_source, experiments.main's own)
CONFIG_FLAGS = {"config": "--config", "set": "--set", "seeds": "--seeds", "models": "--models",
                "data": "--data", "format": "--format", "inter": "--inter", "user": "--user", "item": "--item",
                "columns": "--columns", "field_types": "--field-types",
                "variant": "--variant", "lambda_r": "--lambda-r", "grid": "--grid", "grid_programs": "--grid-programs",
                "max_members": "--max-members", "select_lambda": "--select-lambda"}


class RunDirError(ValueError):
    """A run directory that cannot be resumed as it is (in use, or its files are damaged)."""


def create_run_dir(parent: Path, stamp: str) -> Path:
    """A new folder `parent/stamp`, or `parent/stamp-2`, `-3`, ... if that exists: mkdir is an
    exclusive create, so runs started in the same second by several processes never share one."""
    parent.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        path = parent / (stamp if number == 1 else f"{stamp}-{number}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            number += 1


def run_stamp() -> str:
    """A new run directory's name: the local time to the second."""
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def open_run_dir(config: dict, name: str, runs_dir: str | None, resume: str | None) -> tuple[Path, int | None]:
    """The run directory, locked, with config.json written: --resume's, or a new
    <runs_dir>/<name>/<local time to the second>; (path, the lock's descriptor)."""
    primary = sharding.is_primary()
    if resume:
        run_dir = Path(resume)
        lock = lock_run_dir(run_dir)
        if primary and read_run_config(run_dir) != config:
            write_json_atomic(run_dir / "config.json", config)  # what --epochs / --mesh changed
    else:
        parent = Path(runs_dir or "runs") / name
        try:
            made = create_run_dir(parent, run_stamp()).name if primary else ""
        except OSError as error:
            raise RunDirError(f"--runs-dir {runs_dir or 'runs'}: cannot create {parent} ({error.strerror})") from None
        run_dir = parent / sharding.broadcast_text(made)
        lock = lock_run_dir(run_dir)
        if primary:
            write_json_atomic(run_dir / "config.json", config)
    sharding.barrier(f"run directory {run_dir}")
    return run_dir, lock


def lock_run_dir(run_dir: Path) -> int | None:
    """Take the run directory's lock (flock on the folder itself; the OS drops it when the process
    ends, however it ends) on process 0, for as long as the returned descriptor stays open.
    RunDirError on every process if another process already holds it."""
    fd, busy = None, ""
    if sharding.is_primary():
        fd = os.open(run_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            fd, busy = None, "busy"
    if sharding.broadcast_text(busy):
        raise RunDirError(f"{run_dir} is in use by another process (a run or resume still running there); "
                          "wait for it to end or stop it, then resume")
    return fd


def read_run_config(run_dir: Path) -> dict:
    """The validated config.json of a run directory."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"--resume {run_dir}: no such directory")
    if not path.is_file():
        raise ConfigError(f"--resume {run_dir}: no config.json there; is it a run directory?")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a JSON object of config keys, got {type(config).__name__}")
    return validate(config, source=str(path))


def resume_config(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """The stored config of --resume RUN_DIR with the flags that are safe on resume applied, and
    what each applied flag did. ConfigError naming any flag that would change the stored config."""
    run_dir = Path(args.resume)
    stored = read_run_config(run_dir)
    for dest, flag in CONFIG_FLAGS.items():
        if getattr(args, dest, None) not in (None, []):
            raise ConfigError(f"{flag} cannot be combined with --resume: a resume continues the config stored in "
                              f"{run_dir / 'config.json'}; start a new run to change it (with --resume only --epochs "
                              "to train longer, --mesh, --no-progress and experiments.main's --analysis apply)")
    config, notes = merge(stored, {}), []
    if args.epochs is not None:
        before = stored["train"]["max_epochs"]
        if args.epochs < before:
            raise ConfigError(f"--epochs {args.epochs}: with --resume it can only raise the stored max_epochs {before}")
        config["train"]["max_epochs"] = args.epochs
        notes.append(f"--epochs {args.epochs}: max_epochs {before} -> {args.epochs} (members stopped by the epoch "
                     "limit train on; those stopped by patience or divergence stay stopped)")
    if args.mesh is not None:
        config["mesh"] = args.mesh
        notes.append(f"--mesh {args.mesh!r}")
    if args.no_progress:
        notes.append("--no-progress")
    if getattr(args, "analysis", None) is not None:
        notes.append(f"--analysis {args.analysis}")
    if args.runs_dir is not None:
        notes.append(f"--runs-dir ignored: a resume writes into {run_dir}")
    return validate(config, source=f"--resume {run_dir}"), notes
