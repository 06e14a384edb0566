"""Every kind of bad input gets a DataError naming the file / line / field and what was
expected, and leaves nothing in the cache folder."""

from __future__ import annotations

import pytest

from lipctr.data import DataConfig, DataError, DatasetNotFoundError, get_preset, load_dataset
from tests.data_files import INTER_HEADER, USER_HEADER, write_grouplens, write_table

GOOD = [("u1", "i1", 5, 1), ("u1", "i2", 3, 2), ("u2", "i1", 4, 3), ("u2", "i2", 1, 4), ("u3", "i1", 2, 5)]
USERS = [("u1", "20", "F", "1.0"), ("u2", "30", "M", "2.0"), ("u3", "40", "F", "3.0")]
LOAD_ALL = {"inter": ("user_id", "item_id", "rating", "timestamp"), "user": ("user_id", "age", "gender", "score")}


def _inter_with(row_index: int, row: tuple) -> list[tuple]:
    rows = list(GOOD)
    rows[row_index] = row
    return rows


def _write_inter(folder, rows, header=INTER_HEADER):
    return write_table(folder / "toy.inter", header, rows)


CASES = {
    "non-numeric rating": (lambda d: _write_inter(d, _inter_with(1, ("u1", "i2", "abc", 2))), {},
                           ["toy.inter line 3", "'rating'", "'abc'", "not a number"]),
    "missing rating": (lambda d: _write_inter(d, _inter_with(2, ("u2", "i1", "", 3))), {},
                       ["toy.inter line 4", "rating", "missing or not a number"]),
    "out-of-range rating": (lambda d: _write_inter(d, _inter_with(0, ("u1", "i1", 6, 1))), {},
                            ["toy.inter line 2", "rating 6.0", "outside 1..5"]),
    "zero rating": (lambda d: _write_inter(d, _inter_with(4, ("u3", "i1", 0, 5))), {},
                    ["toy.inter line 6", "outside 1..5"]),
    "non-integer rating": (lambda d: _write_inter(d, _inter_with(3, ("u2", "i2", 3.5, 4))), {},
                           ["toy.inter line 5", "rating 3.5", "not an integer"]),
    "rating above a custom N": (lambda d: _write_inter(d, GOOD), {"num_ratings": 4},
                                ["toy.inter line 2", "outside 1..4"]),
    "non-numeric timestamp": (lambda d: _write_inter(d, _inter_with(1, ("u1", "i2", 3, "yesterday"))), {},
                              ["toy.inter line 3", "'timestamp'", "'yesterday'", "not a number"]),
    "empty user id": (lambda d: _write_inter(d, _inter_with(2, ("", "i1", 4, 3))), {},
                      ["toy.inter line 4", "empty user_id"]),
    "ragged row (short)": (lambda d: _write_inter(d, _inter_with(2, ("u2", "i1", 4))), {},
                           ["toy.inter line 4", "3 fields, expected 4"]),
    "ragged row (long)": (lambda d: _write_inter(d, _inter_with(4, ("u3", "i1", 2, 5, "extra"))), {},
                          ["toy.inter line 6", "5 fields, expected 4"]),
    "header without type": (lambda d: _write_inter(d, GOOD, ("user_id:token", "item_id", "rating:float", "t:float")),
                            {}, ["toy.inter line 1, column 2", "'item_id'", "name:type"]),
    "header with unknown type": (lambda d: _write_inter(d, GOOD, ("user_id:tokn",) + INTER_HEADER[1:]), {},
                                 ["toy.inter line 1, column 1", "'user_id:tokn'", "token_seq"]),
    "duplicated header field": (lambda d: _write_inter(d, GOOD, INTER_HEADER[:3] + ("rating:float",)), {},
                                ["toy.inter line 1", "['rating']", "more than once"]),
    "missing rating column": (lambda d: _write_inter(d, [r[:2] + r[3:] for r in GOOD],
                                                     (INTER_HEADER[0], INTER_HEADER[1], INTER_HEADER[3])), {},
                              ["toy.inter", "lacks column(s) ['rating']"]),
    "unknown load_col field": (lambda d: _write_inter(d, GOOD),
                               {"load_col": {"inter": ("user_id", "item_id", "rating", "stars")}},
                               ["toy.inter", "['stars']", "its fields are"]),
    "unknown user field": (lambda d: (_write_inter(d, GOOD), write_table(d / "toy.user", USER_HEADER, USERS)),
                           {"load_col": {**LOAD_ALL, "user": ("user_id", "occupation")}},
                           ["toy.user", "['occupation']"]),
    "non-numeric float feature": (
        lambda d: (_write_inter(d, GOOD),
                   write_table(d / "toy.user", USER_HEADER, USERS[:2] + [("u3", "40", "F", "x")])),
        {"load_col": LOAD_ALL}, ["toy.user line 4", "'score'", "'x'", "not a number"]),
    "user listed twice": (
        lambda d: (_write_inter(d, GOOD), write_table(d / "toy.user", USER_HEADER, USERS + [("u2", "50", "M", "1")])),
        {"load_col": LOAD_ALL}, ["toy.user line 3", "user_id 'u2'", "more than one row"]),
    "float_seq as input": (lambda d: _write_inter(d, [r + ("1 2",) for r in GOOD], INTER_HEADER + ("v:float_seq",)),
                           {}, ["toy.inter", "'v'", "float_seq", "load_col"]),
    "empty after filtering": (lambda d: _write_inter(d, GOOD), {"k_core": 3},
                              ["toy.inter", "no interactions left after filtering", "k_core"]),
    "header only": (lambda d: _write_inter(d, []), {}, ["toy.inter: no interactions"]),
    "empty split": (lambda d: _write_inter(d, GOOD[:2]), {},
                    ["toy.inter", "2 interactions", "split empty"]),
    "not utf-8": (lambda d: (d / "toy.inter").write_bytes(
                      ("\t".join(INTER_HEADER) + "\nu\xe9\ti1\t5\t1\n").encode("latin-1")),
                  {}, ["toy.inter", "utf-8"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_named_and_leaves_no_cache(tmp_path, case):
    write, overrides, expected = CASES[case]
    write(tmp_path)
    with pytest.raises(DataError) as caught:
        load_dataset(DataConfig("toy", path=str(tmp_path), **overrides), cache=True)
    message = str(caught.value)
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir())


def test_good_files_of_the_cases_load(tmp_path):
    _write_inter(tmp_path, GOOD + [("u3", "i2", 5, 6), ("u4", "i1", 2, 7), ("u4", "i2", 4, 8)] * 2)
    write_table(tmp_path / "toy.user", USER_HEADER, USERS + [("u4", "50", "M", "4.0")])
    dataset = load_dataset(DataConfig("toy", path=str(tmp_path), load_col=LOAD_ALL), cache=False)
    assert dataset.stats["duplicates_dropped"] == 3 and dataset.stats["interactions"] == 8


def test_grouplens_ragged_line_and_bad_zip(tmp_path):
    write_grouplens(tmp_path)
    (tmp_path / "ratings.dat").write_text("1::10::5::978300760\n1::20::3\n")
    with pytest.raises(DataError, match=r"ratings.dat line 2: 3 fields, expected 4"):
        load_dataset(DataConfig("ml-1m", format="grouplens", path=str(tmp_path)), cache=False)
    other = tmp_path / "zipped"
    other.mkdir()
    (other / "ml-1m.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"ml-1m.zip: not a valid zip"):
        load_dataset(DataConfig("ml-1m", format="grouplens", path=str(other)), cache=False)


@pytest.mark.parametrize("quoted", [False, True])
def test_csv_ragged_and_missing_column(tmp_path, quoted):
    note = '"a, b"' if quoted else "ab"
    (tmp_path / "r.csv").write_text(f"user,item,rating,note\n1,2,5,{note}\n1,3,4\n")
    config = DataConfig("r", format="csv", path=str(tmp_path), files={"inter": "r.csv"},
                        columns={"user": "user_id", "item": "item_id"})
    with pytest.raises(DataError, match=r"r.csv line 3: 3 fields, expected 4"):
        load_dataset(config, cache=False)
    (tmp_path / "r.csv").write_text("user,item,stars\n1,2,5\n")
    with pytest.raises(DataError, match=r"r.csv: the interaction table lacks column\(s\) \['rating'\]"):
        load_dataset(config, cache=False)
    with pytest.raises(DataError, match=r"field_types names field\(s\) \['genre'\]"):
        load_dataset(DataConfig("r", format="csv", path=str(tmp_path), files={"inter": "r.csv"},
                                field_types={"genre": "token_seq"}), cache=False)


def test_config_keys_that_match_nothing(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n1,2,5\n")
    config = DataConfig("r", format="csv", path=str(tmp_path), files={"inter": "r.csv"}, columns={"uid": "user"})
    with pytest.raises(DataError, match=r"renames \['uid'\], but no file has such a column; the files' columns are "
                                        r"\['item_id', 'rating', 'user_id'\]"):
        load_dataset(config, cache=False)
    _write_inter(tmp_path, GOOD)
    with pytest.raises(DataError, match=r"field_types is for csv / parquet"):
        load_dataset(DataConfig("toy", path=str(tmp_path), field_types={"rating": "float"}), cache=False)


def test_missing_files_say_which_files_go_where(tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset(DataConfig("toy", path=str(tmp_path)))
    assert "toy.inter" in str(caught.value) and str(tmp_path) in str(caught.value)
    _write_inter(tmp_path, GOOD)
    with pytest.raises(DatasetNotFoundError, match=r"lacks toy.user"):
        load_dataset(DataConfig("toy", path=str(tmp_path), load_col=LOAD_ALL))
    ml1m = str(get_preset("ml-1m", path=str(tmp_path / "none")).path)
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset(get_preset("ml-1m", path=ml1m))
    for text in ("ml-1m.zip", "ratings.dat", "users.dat", "movies.dat", "ml-1m.inter", ml1m):
        assert text in str(caught.value)
    with pytest.raises(DatasetNotFoundError, match=r"Amazon_Books.inter, Amazon_Books.item"):
        load_dataset(get_preset("amazon-book", path=str(tmp_path)))
    with pytest.raises(DatasetNotFoundError, match=r"yelp2018.inter, yelp2018.user, yelp2018.item"):
        load_dataset(get_preset("yelp2018", path=str(tmp_path)))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"format": "excel"}, "format 'excel' unknown"),
        ({"load_col": {"inters": ("user_id",)}}, "unknown table(s) ['inters']"),
        ({"field_types": {"x": "string"}}, "field_types {'x': 'string'}"),
        ({"threshold": 5}, "threshold 5 must be below num_ratings 5"),
        ({"split_ratios": (0.8, 0.2, 0.0)}, "split_ratios must be 3 positive numbers"),
        ({"k_core": -1}, "k_core must be an int >= 0"),
        ({"max_seq_len": 0}, "max_seq_len must be an int >= 1"),
    ],
)
def test_bad_config_values(overrides, expected):
    with pytest.raises(DataError) as caught:
        DataConfig("toy", **overrides)
    assert expected in str(caught.value) and "toy" in str(caught.value)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(DataError, match=r"unknown dataset preset 'ml-20m'.*ml100k"):
        get_preset("ml-20m")
    with pytest.raises(DataError, match=r"unknown DataConfig field\(s\) \['kcore'\]"):
        get_preset("ml1m", kcore=5)
