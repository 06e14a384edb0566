"""Data pipeline: readers (RecBole atomic, GroupLens ML-1M, CSV / Parquet), preprocessing into
the device-ready `Dataset` (lipctr.data.schema), an on-disk cache, the ML-100K fetcher and a
synthetic planted-preference generator."""

from lipctr.data.config import DataConfig, dataset_dir, datasets_root
from lipctr.data.encode import sequence_lengths
from lipctr.data.errors import DataError, DatasetNotFoundError, DataWarning
from lipctr.data.loader import load_dataset, read_raw, synthetic_dataset
from lipctr.data.preprocess import preprocess
from lipctr.data.raw import RawData, RawTable
from lipctr.data.registry import PRESETS, get_preset
from lipctr.data.schema import Dataset, Field, Schema, Split
from lipctr.data.summary import format_summary
from lipctr.data.synthetic import synthetic_raw

__all__ = [
    "PRESETS", "DataConfig", "DataError", "DataWarning", "Dataset", "DatasetNotFoundError", "Field", "RawData",
    "RawTable", "Schema", "Split", "dataset_dir", "datasets_root", "format_summary", "get_preset",
    "load_dataset", "preprocess", "read_raw", "sequence_lengths", "synthetic_dataset", "synthetic_raw",
]
