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


def parse_cases(text: str, known) -> list[str] | None:
    """The cases of a comma-separated --cases; None after one `error:` line naming an unknown one."""
    cases = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(known))
    if unknown:
        print(f"error: --cases: unknown case(s) {unknown}; known: {','.join(known)}", file=sys.stderr)
        return None
    return cases
