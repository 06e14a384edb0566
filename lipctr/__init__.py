"""lipctr: scaled (multi-rating) supervision as an implicit Lipschitz regulariser for CTR models."""

__version__ = "0.1.0"
