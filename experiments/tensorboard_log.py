"""TensorBoard event files of a variant (config key `log.tensorboard`, docs/cli.md).

`<variant dir>/tensorboard/<member>/` is one TensorBoard run per member: at step = epoch, a scalar
for each numeric column of that member's metrics.csv row (`SCALARS`: training loss, embedding
gradient norms, validation AUC / LogLoss, stopped 0/1, the epoch's training and evaluation
seconds), and the member's hyper-parameters (the config's keys, variant, seed, lambda_r, grid
point) as an hparams-plugin session, so `tensorboard --logdir runs/` overlays the members of every
variant and run in one chart per metric and tabulates them in its HPARAMS tab.

The event files are written here without TensorFlow or any other package: each record is
TFRecord-framed (length, masked CRC-32C of the length, the bytes, their masked CRC-32C) and holds an
`Event` protobuf encoded by hand (the few fields used: wall_time, step, file_version, summary with
simple_value scalars or plugin metadata). A dependency (tensorboardX) would pin the protobuf runtime
for a file format this small; the tests read the files back with the `tensorboard` package's own
reader (`EventAccumulator`, the `test` extra), independently of this code.

Resume: `start` rewrites each member's events from the rows of the saved state (metrics.csv's rows
up to the resumed epoch; later epochs are retrained) into a fresh file, put in place by rename
before the member's older event files are removed, so the event files always hold exactly the
rows of metrics.csv, each epoch once. Only process 0 writes (experiments/run.py).
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from pathlib import Path

SCALARS = ("train_loss", "user_grad_norm", "item_grad_norm", "valid_auc", "valid_logloss", "stopped",
           "train_seconds", "eval_seconds")
HPARAMS_TAG = "_hparams_/session_start_info"  # tensorboard.plugins.hparams.metadata
_NULL_TENSOR = b"\x08\x01\x12\x02\x12\x00"  # TensorProto: DT_FLOAT, shape [0] (the hparams plugin's)


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecord framing."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> bytes:
    crc = crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def record(data: bytes) -> bytes:
    """One TFRecord: uint64 length, its masked CRC-32C, the data, the data's masked CRC-32C."""
    length = struct.pack("<Q", len(data))
    return length + _masked(length) + data + _masked(data)


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _double(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + struct.pack("<d", value)


def event(step: int, summary: bytes = b"", version: str = "", wall_time: float | None = None) -> bytes:
    """An Event: wall_time (1), step (2), file_version (3) or summary (5)."""
    out = _double(1, time.time() if wall_time is None else wall_time) + _varint(2 << 3) + _varint(step)
    return out + (_field(3, version.encode()) if version else b"") + (_field(5, summary) if summary else b"")


def scalars_summary(values: dict[str, float]) -> bytes:
    """A Summary of simple_value scalars (Summary.Value: tag 1, simple_value 2, as float32)."""
    return b"".join(_field(1, _field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value))
                    for tag, value in values.items())


def _value(value) -> bytes:
    """A google.protobuf.Value: number (2), string (3) or bool (4)."""
    if isinstance(value, bool):
        return _varint(4 << 3) + _varint(int(value))
    if isinstance(value, (int, float)):
        return _double(2, float(value))
    return _field(3, str(value).encode())


def hparams_summary(hparams: dict, start_time: float) -> bytes:
    """The hparams plugin's session_start_info (HParamsPluginData field 3: SessionStartInfo's
    hparams map (1) and start_time_secs (5)) as a Summary.Value's plugin metadata (9)."""
    entries = b"".join(_field(1, _field(1, key.encode()) + _field(2, _value(value))) for key, value in hparams.items())
    content = _field(3, entries + _double(5, start_time))
    metadata = _field(1, _field(1, b"hparams") + _field(2, content))  # SummaryMetadata.plugin_data
    return _field(1, _field(1, HPARAMS_TAG.encode()) + _field(8, _NULL_TENSOR) + _field(9, metadata))


def flat_hparams(config: dict, prefix: str = "") -> dict:
    """The config's keys as dotted names (lists as text; the grid tables left out: each member's
    point is its own hparams)."""
    out = {}
    for key, value in config.items():
        if key in ("grid", "grid_programs") and not prefix:
            continue
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{prefix}{key}."))
        elif isinstance(value, (bool, int, float, str)):
            out[prefix + key] = value
        else:
            out[prefix + key] = str(value)
    return out


class TensorBoardLog:
    """The event files of one variant: `start` once (with the history of a resumed state), then
    `write` each epoch's metrics.csv rows."""

    def __init__(self, directory: Path, hparams: dict[str, dict]):
        self.directory = directory
        self.hparams = hparams  # member label -> its hyper-parameters
        self.files: dict[str, Path] = {}

    def start(self, history: list[dict]) -> None:
        now = time.time()
        for member, hparams in self.hparams.items():
            folder = self.directory / member
            folder.mkdir(parents=True, exist_ok=True)
            old = [p for p in folder.iterdir() if "tfevents" in p.name]
            name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}.{time.time_ns()}"
            data = record(event(0, version="brain.Event:2", wall_time=now))
            data += record(event(0, hparams_summary(hparams, now), wall_time=now))
            data += b"".join(record(self._row_event(row, now)) for row in history if row["member"] == member)
            temporary = folder / f".{name}.tmp"  # not an event file until renamed
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, folder / name)
            for path in old:
                path.unlink(missing_ok=True)
            self.files[member] = folder / name

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            with open(self.files[row["member"]], "ab") as handle:
                handle.write(record(self._row_event(row)))

    @staticmethod
    def _row_event(row: dict, wall_time: float | None = None) -> bytes:
        values = {tag: float(row[tag]) for tag in SCALARS}
        return event(int(row["epoch"]), scalars_summary(values), wall_time=wall_time)


def open_log(config: dict, out: Path, variant: str, labels: list[str], members, points: list[dict],
             history: list[dict]) -> TensorBoardLog | None:
    """The variant's TensorBoardLog, started with `history`, when the config's `log.tensorboard`
    is on (else None); call it on process 0 only."""
    if not config.get("log", {}).get("tensorboard", False):
        return None
    shared = flat_hparams(config)
    hparams = {
        label: {**shared, "variant": variant, "member": label, "seed": m.seed, "lambda_r": m.lambda_r,
                **{f"grid.{k}": v for k, v in point.items()}}
        for label, m, point in zip(labels, members, points)
    }
    for values in hparams.values():
        for key, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                values[key] = str(value)
    log = TensorBoardLog(out / "tensorboard", hparams)
    log.start(history)
    return log
