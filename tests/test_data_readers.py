"""Readers on small files written here: RecBole atomic, GroupLens ML-1M (folder and zip),
CSV (plain and quoted) and Parquet all give the same raw form."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lipctr.data import DataConfig, load_dataset, read_raw, synthetic_dataset
from lipctr.data.export import write_atomic
from lipctr.data.locate import resolve_format
from lipctr.data.synthetic import SyntheticSizes, synthetic_raw
from tests.data_files import INTER_HEADER, write_grouplens, write_table

INTER = [("u1", "i1", 5, 10), ("u1", "i2", 2, 11), ("u2", "i1", 4, 12)]


def test_atomic_reads_kinds_and_load_col(tmp_path):
    write_table(tmp_path / "toy.inter", INTER_HEADER + ("weight:float", "tags:float_seq"),
                [row + (w, t) for row, w, t in zip(INTER, ["0.5", "", "2"], ["1 2", "", "3.5"])])
    write_table(tmp_path / "toy.item", ("item_id:token", "genre:token_seq", "price:float"),
                [("i1", "Action  Drama", "9.5"), ("i2", "", "nan")])
    config = DataConfig("toy", path=str(tmp_path),
                        load_col={"inter": ("user_id", "item_id", "rating", "weight", "tags"),
                                  "item": ("item_id", "genre", "price")})
    raw = read_raw(config)
    assert raw.user is None
    inter = raw.inter.frame
    assert list(inter.columns) == ["user_id", "item_id", "rating", "weight", "tags"]
    assert inter["user_id"].tolist() == ["u1", "u1", "u2"]
    np.testing.assert_array_equal(inter["rating"].to_numpy(), [5.0, 2.0, 4.0])
    np.testing.assert_array_equal(inter["weight"].to_numpy(), [0.5, np.nan, 2.0])
    assert inter["tags"].tolist() == [[1.0, 2.0], [], [3.5]]
    assert raw.inter.kinds["tags"] == "float_seq"
    item = raw.item.frame
    assert item["genre"].tolist() == [["Action", "Drama"], []]
    np.testing.assert_array_equal(item["price"].to_numpy(), [9.5, np.nan])
    assert raw.inter.where(2) == f"{tmp_path / 'toy.inter'} line 4"


def test_atomic_without_load_col_reads_every_file_present(tmp_path):
    write_table(tmp_path / "toy.inter", INTER_HEADER, INTER)
    write_table(tmp_path / "toy.user", ("user_id:token", "age:token"), [("u1", "20"), ("u2", "30")])
    raw = read_raw(DataConfig("toy", path=str(tmp_path)))
    assert raw.item is None
    assert raw.user.frame.to_dict("list") == {"user_id": ["u1", "u2"], "age": ["20", "30"]}


def test_atomic_blank_lines_and_crlf_keep_line_numbers(tmp_path):
    text = "\t".join(INTER_HEADER) + "\r\n" + "u1\ti1\t5\t1\r\n\r\n" + "u2\ti1\t3\t2\r\n"
    (tmp_path / "toy.inter").write_bytes(text.encode())
    raw = read_raw(DataConfig("toy", path=str(tmp_path)))
    assert raw.inter.frame["user_id"].tolist() == ["u1", "u2"]
    np.testing.assert_array_equal(raw.inter.frame["timestamp"].to_numpy(), [1.0, 2.0])
    assert raw.inter.lines.tolist() == [2, 4]


@pytest.mark.parametrize("layout", ["folder", "subfolder", "zip"])
def test_grouplens_ml1m_folder_subfolder_and_zip(tmp_path, layout):
    target = {"folder": tmp_path, "subfolder": tmp_path / "ml-1m", "zip": tmp_path}[layout]
    write_grouplens(target, as_zip=layout == "zip")
    config = DataConfig("ml-1m", format="grouplens", path=str(tmp_path))
    raw = read_raw(config)
    inter, users, items = raw.inter.frame, raw.user.frame, raw.item.frame
    assert inter["user_id"].tolist() == ["1", "1", "2", "2"]
    np.testing.assert_array_equal(inter["rating"].to_numpy(), [5, 3, 4, 1])
    assert users.columns.tolist() == ["user_id", "gender", "age", "occupation", "zip_code"]
    assert users["age"].tolist() == ["1", "56"]
    assert items["release_year"].tolist() == ["1995", "1998", ""]
    assert items["movie_title"].tolist() == [["GoldenEye"], ["Pok\xe9mon:", "The", "First", "Movie"], ["Untitled"]]
    assert items["genre"].tolist() == [["Action", "Adventure", "Thriller"], ["Animation", "Children's"], ["Drama"]]


def test_auto_format_prefers_atomic_then_grouplens(tmp_path):
    write_grouplens(tmp_path)
    config = DataConfig("ml-1m", format="auto", path=str(tmp_path))
    assert resolve_format(config).format == "grouplens"
    write_table(tmp_path / "ml-1m.inter", INTER_HEADER, INTER)
    assert resolve_format(config).format == "atomic"


def test_grouplens_preset_fields_load_end_to_end(tmp_path):
    write_grouplens(tmp_path)
    config = DataConfig("ml-1m", format="grouplens", path=str(tmp_path), split_ratios=(0.5, 0.25, 0.25),
                        load_col={"inter": ("user_id", "item_id", "rating", "timestamp"),
                                  "user": ("user_id", "age", "gender", "occupation"),
                                  "item": ("item_id", "release_year", "genre")})
    dataset = load_dataset(config, cache=False)
    assert dataset.schema.names == ("user_id", "item_id", "age", "gender", "occupation", "release_year", "genre")
    assert dataset.stats["interactions"] == 4 and dataset.stats["positives"] == 2


CSV_RATINGS = "userId,movieId,stars,when,note\n1,10,5,100,good\n1,20,3,101,\"so, so\"\n2,10,4,102,ok\n"


@pytest.mark.parametrize("quoted", [False, True])
def test_csv_with_renames_feature_tables_and_types(tmp_path, quoted):
    ratings = CSV_RATINGS if quoted else CSV_RATINGS.replace('"so, so"', "so-so")
    (tmp_path / "ratings.csv").write_text(ratings)
    (tmp_path / "movies.csv").write_text("movieId,genres,price\n10,Action|Drama,3.5\n20,Comedy,\n")
    config = DataConfig(
        "mine", format="csv", path=str(tmp_path), seq_separator="|",
        files={"inter": "ratings.csv", "item": "movies.csv"},
        columns={"userId": "user_id", "movieId": "item_id", "stars": "rating", "when": "timestamp"},
        field_types={"genres": "token_seq", "price": "float"},
    )
    raw = read_raw(config)
    inter = raw.inter.frame
    assert inter.columns.tolist() == ["user_id", "item_id", "rating", "timestamp", "note"]
    assert inter["note"].tolist() == ["good", "so, so" if quoted else "so-so", "ok"]
    np.testing.assert_array_equal(inter["rating"].to_numpy(), [5, 3, 4])
    assert raw.item.frame["genres"].tolist() == [["Action", "Drama"], ["Comedy"]]
    np.testing.assert_array_equal(raw.item.frame["price"].to_numpy(), [3.5, np.nan])
    assert raw.inter.lines.tolist() == [2, 3, 4]


def test_parquet_matches_csv(tmp_path):
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 20, 10], "rating": [5, 3, 4],
                          "tags": [["a", "b"], [], ["c"]], "price": [1.5, None, 2.0]})
    frame.to_parquet(tmp_path / "mine.parquet")
    config = DataConfig("mine", format="parquet", path=str(tmp_path),
                        field_types={"tags": "token_seq", "price": "float"})
    raw = read_raw(config)
    assert raw.inter.frame["user_id"].tolist() == ["1", "1", "2"]
    assert raw.inter.frame["tags"].tolist() == [["a", "b"], [], ["c"]]
    np.testing.assert_array_equal(raw.inter.frame["price"].to_numpy(), [1.5, np.nan, 2.0])
    assert raw.inter.where(1) == f"{tmp_path / 'mine.parquet'} row 2"


@pytest.mark.parametrize("preset", ["tiny", SyntheticSizes(200, 150, 3000, "yelp"),
                                    SyntheticSizes(200, 150, 3000, "amazon")])
def test_exported_atomic_files_read_back_to_the_same_dataset(tmp_path, preset):
    raw = synthetic_raw(preset, 5)
    write_atomic(raw, tmp_path, "export")
    from_files = load_dataset(DataConfig("export", path=str(tmp_path)), cache=False)
    in_memory = synthetic_dataset(preset, 5, k_core=0)
    assert from_files.schema.fields == in_memory.schema.fields
    for name, split in in_memory.splits.items():
        other = from_files.splits[name]
        np.testing.assert_array_equal(split.rating, other.rating)
        for field, array in split.features.items():
            np.testing.assert_allclose(array, other.features[field], rtol=1e-6)
