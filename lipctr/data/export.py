"""Writing RawData as RecBole atomic files (e.g. to hand synthetic data to RecBole, or to
benchmark the file readers at scale)."""

from __future__ import annotations

from pathlib import Path

from lipctr.data.errors import DataError
from lipctr.data.raw import RawData
from lipctr.io import write_atomically


def write_atomic(raw: RawData, folder: Path, stem: str, separator: str = " ") -> list[Path]:
    """Write <stem>.inter / .user / .item (those present) into `folder`; -> their paths.

    Sequence cells are joined with `separator`; tokens and sequences must not contain tabs or
    newlines (DataError otherwise).
    """
    paths = []
    for table_name, table in raw.tables().items():
        frame = table.frame.copy()
        for name, kind in table.kinds.items():
            if kind in ("token_seq", "float_seq"):
                frame[name] = [separator.join(str(t) for t in cell) for cell in frame[name]]
            if kind != "float" and frame[name].dtype == object:
                bad = frame[name].astype(str).str.contains(r"[\t\n\r]", regex=True)
                if bad.any():
                    row = int(bad.to_numpy().argmax())
                    raise DataError(f"{table.where(row)}: field {name!r} holds a tab or newline")
        frame.columns = [f"{name}:{table.kinds[name]}" for name in frame.columns]
        path = Path(folder) / f"{stem}.{table_name}"
        write_atomically(path, lambda handle, frame=frame: frame.to_csv(handle, sep="\t", index=False))
        paths.append(path)
    return paths
