"""Helpers for the data tests (no tests here): small dataset files written by the tests themselves."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

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


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under `folder` outside cache/ (folders too, as '')."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(folder.rglob("*")) if p.relative_to(folder).parts[0] != "cache"
    }


def ratings_rows(n_users: int = 12, n_items: int = 10, seed: int = 0) -> list[tuple[int, int, int]]:
    """(user, item, rating 1-5) for about 60 % of the user x item pairs; integer ids from 1."""
    rng = np.random.default_rng(seed)
    return [(u, i, int(rng.integers(1, 6))) for u in range(1, n_users + 1) for i in range(1, n_items + 1)
            if rng.random() < 0.6]


def write_ratings(folder: Path, n_users: int = 30, n_items: int = 25) -> pd.DataFrame:
    """MovieLens-style ratings.csv (userId, movieId, rating, timestamp) plus a movies.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(ratings_rows(n_users, n_items, seed=1), columns=["userId", "movieId", "rating"])
    frame["timestamp"] = np.arange(len(frame)) + 1_000_000
    frame.to_csv(folder / "ratings.csv", index=False)
    genres = ["Drama|Comedy", "Horror"] * (n_items // 2) + ["Drama"] * (n_items % 2)
    movies = pd.DataFrame({"movieId": range(1, n_items + 1), "genres": genres})
    movies.to_csv(folder / "movies.csv", index=False)
    return frame


def write_string_id_ratings(folder: Path, n_users=30, n_items=25, seed=1, ratings=(1, 6)) -> pd.DataFrame:
    """MovieLens-style ratings.csv with raw ids "u<n>" / "m<n>" (never equal to internal ids)."""
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"m{i}", int(rng.integers(*ratings))) for u in range(1, n_users + 1)
            for i in range(1, n_items + 1) if rng.random() < 0.6]
    frame = pd.DataFrame(rows, columns=["userId", "movieId", "rating"])
    frame["timestamp"] = np.arange(len(frame)) + 1_000_000
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "ratings.csv", index=False)
    return frame
