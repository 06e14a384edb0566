"""Run directories: created exclusively (distinct under concurrent starts), locked while a
process trains in them, and read back for a resume."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from experiments.configs import ConfigError, validate
from lipctr import sharding


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
