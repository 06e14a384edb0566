"""lipctr: scaled (multi-rating) supervision as an implicit Lipschitz regulariser for CTR models."""

__version__ = "0.1.0"

_LAZY = {"load_run": "lipctr.inference", "load_exported": "lipctr.export"}


def __getattr__(name: str):
    """`lipctr.load_run` / `lipctr.load_exported`, imported on first use (so `import lipctr` stays cheap)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lipctr' has no attribute {name!r}")


__all__ = ["__version__", "load_run", "load_exported"]
