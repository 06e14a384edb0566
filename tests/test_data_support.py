"""Helpers for the data tests (no tests here): small dataset files written by the tests themselves."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

INTER_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
USER_HEADER = ("user_id:token", "age:token", "gender:token", "score:float")
ITEM_HEADER = ("item_id:token", "year:token", "genre:token_seq")


def write_table(path: Path, header, rows, separator: str = "\t") -> Path:
    """Write a header line and rows (sequences of cells) as text; -> path."""
    lines = [separator.join(header)] + [separator.join(str(c) for c in row) for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def random_interactions(n_users: int, n_items: int, n: int, seed: int = 0) -> list[tuple]:
    """n distinct (user, item, rating, timestamp) rows with string ids "u<k>" / "i<k>"."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(n_users * n_items, size=n, replace=False)
    ratings = rng.integers(1, 6, n)
    times = rng.integers(0, 10**6, n)
    return [(f"u{k // n_items}", f"i{k % n_items}", int(r), int(t)) for k, r, t in zip(keys, ratings, times)]


def user_rows(n_users: int, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed + 1)
    return [
        (f"u{u}", int(rng.choice([18, 25, 35])), str(rng.choice(["F", "M"])), round(float(rng.uniform(0, 50)), 3))
        for u in range(n_users)
    ]


def item_rows(n_items: int, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed + 2)
    genres = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi"]
    return [
        (f"i{i}", int(rng.integers(1990, 1995)), " ".join(rng.choice(genres, int(rng.integers(1, 4)), replace=False)))
        for i in range(n_items)
    ]


def write_atomic_dataset(folder: Path, stem: str, inter, users=None, items=None) -> Path:
    """RecBole atomic files <stem>.inter / .user / .item with the headers above; -> folder."""
    write_table(folder / f"{stem}.inter", INTER_HEADER, inter)
    if users is not None:
        write_table(folder / f"{stem}.user", USER_HEADER, users)
    if items is not None:
        write_table(folder / f"{stem}.item", ITEM_HEADER, items)
    return folder


ML1M_RATINGS = ["1::10::5::978300760", "1::20::3::978302109", "2::10::4::978301968", "2::30::1::978300275"]
ML1M_USERS = ["1::F::1::10::48067", "2::M::56::16::70072"]
ML1M_MOVIES = [
    "10::GoldenEye (1995)::Action|Adventure|Thriller",
    "20::Pok\xe9mon: The First Movie (1998)::Animation|Children's",
    "30::Untitled::Drama",
]


def write_grouplens(folder: Path, as_zip: bool = False) -> Path:
    """A 4-rating GroupLens ML-1M look-alike ('::'-separated, latin-1); -> folder."""
    files = {"ratings.dat": ML1M_RATINGS, "users.dat": ML1M_USERS, "movies.dat": ML1M_MOVIES}
    folder.mkdir(parents=True, exist_ok=True)
    if as_zip:
        with zipfile.ZipFile(folder / "ml-1m.zip", "w") as archive:
            for name, lines in files.items():
                archive.writestr(f"ml-1m/{name}", ("\n".join(lines) + "\n").encode("latin-1"))
    else:
        for name, lines in files.items():
            (folder / name).write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return folder
