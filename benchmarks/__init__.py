"""Benchmarks: speed and memory measured side by side in one run (docs/benchmarks.md)."""

from __future__ import annotations

import sys

from lipctr.io import OutputPathError, check_output


def refuse_json_output(path: str | None, inputs: dict[str, str] | None = None) -> int | None:
    """A --json output path that is a folder or one of `inputs` ({flag: path}): print one
    `error:` line and return the exit code 2; None when it may be written (or is not given)."""
    if not path:
        return None
    try:
        check_output("--json", path, inputs or {})
    except OutputPathError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return None
