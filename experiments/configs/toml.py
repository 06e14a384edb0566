"""TOML and configs: a config as TOML text (`dumps`, which `load_config` reads back to the same
validated config), and a command-line value in TOML syntax (`parse_toml_value`).

The writer is written here rather than taken from a package: a config holds only tables, strings,
booleans, integers, floats and arrays of them, which takes a few lines; tomllib (standard library)
only reads.
"""

from __future__ import annotations

import json
import math
import re
import tomllib

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dumps(config: dict, comments: tuple[str, ...] = ()) -> str:
    """TOML of a nested dict: `# comment` lines, then the top-level values, then one [table] per dict."""
    lines = [f"# {c}" for c in comments]
    _table(config, (), lines)
    return "\n".join(lines).strip("\n") + "\n"


def _table(table: dict, path: tuple[str, ...], lines: list[str]) -> None:
    values = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if path and (values or not tables):  # a table of tables needs no header of its own
        lines += ["", f"[{'.'.join(_key(p) for p in path)}]"]
    lines += [f"{_key(k)} = {_value(v)}" for k, v in values.items()]
    for key, sub in tables.items():
        _table(sub, (*path, key), lines)


def _key(key: str) -> str:
    return key if BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's; DEL, which JSON leaves as is, is escaped too."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"a config value must be a table, string, boolean, number or array, got {type(value).__name__}")


def parse_toml_value(text: str, strict: bool = False):
    """A command-line value in TOML syntax (5e-3, [64, 64], true, "x"). Text that is not TOML is
    the string itself, or with `strict` a ValueError."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if strict:
            raise ValueError(f"{text!r} is not a TOML value") from None
        return text
