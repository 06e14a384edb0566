"""Reader of GroupLens's raw MovieLens-1M: ratings.dat, users.dat, movies.dat ("::"-separated,
latin-1), from the dataset folder, its extracted ml-1m/ subfolder, or ml-1m.zip itself.

Fields are named as in RecBole's ml-1m atomic files: inter user_id, item_id, rating, timestamp;
user user_id, gender, age, occupation, zip_code; item item_id, movie_title (token_seq of title
words), release_year (parsed from the title's trailing "(YYYY)"), genre (token_seq, "|"-split).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from lipctr.data.atomic import rename_columns
from lipctr.data.config import DataConfig, dataset_dir
from lipctr.data.errors import DataError
from lipctr.data.raw import RawData, RawTable, split_tokens
from lipctr.data.text import check_fields, line_layout, read_columns

FILES = {
    "inter": ("ratings.dat", ("user_id", "item_id", "rating", "timestamp")),
    "user": ("users.dat", ("user_id", "gender", "age", "occupation", "zip_code")),
    "item": ("movies.dat", ("item_id", "movie_title", "genre")),
}
ITEM_FIELDS = ("item_id", "movie_title", "release_year", "genre")
KINDS = {"rating": "float", "timestamp": "float", "movie_title": "token_seq", "genre": "token_seq"}
ZIP_NAME = "ml-1m.zip"


def grouplens_source(config: DataConfig) -> Path | None:
    """The folder holding ratings.dat (the dataset folder or its ml-1m/), else ml-1m.zip, else None."""
    folder = dataset_dir(config)
    for candidate in (folder, folder / "ml-1m"):
        if (candidate / "ratings.dat").is_file():
            return candidate
    return folder / ZIP_NAME if (folder / ZIP_NAME).is_file() else None


def source_files(config: DataConfig) -> list[Path] | None:
    """The files whose contents determine the dataset (for the cache key); None if incomplete."""
    source = grouplens_source(config)
    if source is None or source.suffix == ".zip":
        return None if source is None else [source]
    files = [source / FILES[t][0] for t in _tables(config)]
    return files if all(f.is_file() for f in files) else None


def _tables(config: DataConfig) -> list[str]:
    return list(FILES) if config.load_col is None else [t for t in FILES if t in config.load_col]


def read_grouplens(config: DataConfig) -> RawData:
    """Read the tables selected by config.load_col (None: all three) into RawData."""
    source = grouplens_source(config)
    if source is None:
        raise DataError(f"{dataset_dir(config)}: no ratings.dat, ml-1m/ratings.dat or {ZIP_NAME}")
    tables = {}
    for table in _tables(config):
        file_name, fields = FILES[table]
        data, label = _file_bytes(source, file_name)
        raw = _parse(data, label, fields, config)
        if table == "item":
            raw = _movie_fields(raw)
        tables[table] = _select(raw, table, config)
    return RawData(**tables)


def _file_bytes(source: Path, file_name: str) -> tuple[bytes, str]:
    if source.suffix != ".zip":
        path = source / file_name
        if not path.is_file():
            raise DataError(f"{path}: missing (GroupLens ML-1M ships ratings.dat, users.dat, movies.dat)")
        return path.read_bytes(), str(path)
    try:
        with zipfile.ZipFile(source) as archive:
            members = [m for m in archive.namelist() if m.rsplit("/", 1)[-1] == file_name]
            if not members:
                raise DataError(f"{source}: no member named {file_name} in the archive")
            return archive.read(members[0]), f"{source}:{members[0]}"
    except zipfile.BadZipFile as error:
        raise DataError(f"{source}: not a valid zip archive ({error})") from None


def _parse(data: bytes, label: str, fields: tuple[str, ...], config: DataConfig) -> RawTable:
    tab = data.find(b"\t")
    if tab >= 0:
        line = data.count(b"\n", 0, tab) + 1
        raise DataError(f"{label} line {line}: a tab character; GroupLens files are '::'-separated")
    data = data.replace(b"::", b"\t")
    lines, counts = line_layout(data, "\t")
    check_fields(label, lines, counts, len(fields), f"'::'-separated {', '.join(fields)}")
    numeric = {f for f in fields if KINDS.get(f) == "float"}
    frame = read_columns(
        data, source=label, separator="\t", encoding=config.encoding or "latin-1", skip_records=0,
        positions=list(range(len(fields))), names=list(fields), numeric=numeric,
    )
    return RawTable(frame, {f: KINDS.get(f, "token") for f in fields}, label, lines)


def _movie_fields(table: RawTable) -> RawTable:
    """Title "Toy Story (1995)" -> movie_title ["Toy", "Story"], release_year "1995"."""
    title = table.frame["movie_title"].astype(str)
    parts = title.str.extract(r"^(.*?)\s*(?:\((\d{4})\))?\s*$")
    frame = table.frame.assign(
        movie_title=split_tokens(parts[0].fillna(""), " "),
        release_year=parts[1].fillna("").astype(str),
        genre=split_tokens(table.frame["genre"].astype(str), "|"),
    )[list(ITEM_FIELDS)]
    kinds = {f: KINDS.get(f, "token") for f in ITEM_FIELDS}
    return RawTable(frame, kinds, table.source, table.lines)


def _select(table: RawTable, name: str, config: DataConfig) -> RawTable:
    if config.load_col is not None:
        wanted = list(config.load_col[name])
        unknown = [c for c in wanted if c not in table.frame.columns]
        if unknown:
            raise DataError(
                f"{table.source}: load_col[{name!r}] asks for field(s) {unknown}; "
                f"GroupLens {name} fields are {list(table.frame.columns)}"
            )
        table = RawTable(table.frame[wanted], {c: table.kinds[c] for c in wanted}, table.source, table.lines)
    return rename_columns(table, config.columns)

