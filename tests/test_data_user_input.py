"""Users' own folders and files: a given folder is only read (ML-100K is never fetched
into it), nameless columns are errors naming their position, an index-like feature is flagged,
a UTF-8 byte-order mark is accepted and a comma-separated .inter file is called that."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from lipctr.data import DataConfig, DataError, DatasetNotFoundError, DataWarning, get_preset, load_dataset
from tests.data_files import ratings_rows, snapshot

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("layout", ["absent", "own_csv", "atomic_without_inter"])
def test_a_given_folder_is_read_never_fetched_into(tmp_path, no_fetch, layout):
    folder = tmp_path / "mine"
    if layout == "own_csv":
        folder.mkdir()
        (folder / "ratings.csv").write_text("user_id,item_id,rating\n1,2,5\n")
    elif layout == "atomic_without_inter":
        folder.mkdir()
        (folder / "ml-100k.user").write_text("user_id:token\tage:float\n1\t20\n")
        (folder / "ml-100k.item").write_text("item_id:token\tclass:token_seq\n2\tDrama\n")
    before = snapshot(folder)
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset(get_preset("ml100k", path=str(folder)))
    message = str(caught.value)
    assert str(folder) in message and "ml-100k.inter" in message
    if layout == "absent":
        assert f"folder {folder} does not exist" in message and not folder.exists()
    elif layout == "own_csv":
        assert f"{folder} lacks ml-100k.inter, ml-100k.user, ml-100k.item." in message
    else:
        assert f"{folder} lacks ml-100k.inter." in message
    assert snapshot(folder) == before and not (folder / "cache").exists()


def test_only_the_cache_folder_is_written_into_a_given_folder(tmp_path, no_fetch):
    folder = tmp_path / "mine"
    folder.mkdir()
    pd.DataFrame(ratings_rows(), columns=["user_id", "item_id", "rating"]).to_csv(folder / "r.csv", index=False)
    before = snapshot(folder)
    dataset = load_dataset(DataConfig("mine", format="csv", path=str(folder), files={"inter": "r.csv"}))
    assert dataset.stats["cache"] == "written" and dataset.stats["interactions"] == len(ratings_rows())
    assert snapshot(folder) == before and sorted(p.name for p in folder.iterdir()) == ["cache", "r.csv"]


def csv_config(folder, **overrides) -> DataConfig:
    return DataConfig("r", format="csv", path=str(folder), files={"inter": "r.csv"}, **overrides)


@pytest.mark.parametrize(
    "header, row, position, what",
    [
        (",user_id,item_id,rating", "{n},{u},{i},{r}", 1, "an empty name"),  # pandas to_csv's default index
        ("user_id,item_id,rating,", "{u},{i},{r},", 4, "an empty name"),  # a trailing comma
        ("Unnamed: 0,user_id,item_id,rating", "{n},{u},{i},{r}", 1, "no real name ('Unnamed: 0')"),
        ("user_id,item_id, ,rating", "{u},{i},x,{r}", 3, "an empty name"),
    ],
)
def test_a_nameless_column_is_an_error_naming_its_position(tmp_path, header, row, position, what):
    lines = [row.format(n=n, u=u, i=i, r=r) for n, (u, i, r) in enumerate(ratings_rows())]
    (tmp_path / "r.csv").write_text("\n".join([header, *lines]) + "\n")
    with pytest.raises(DataError) as caught:
        load_dataset(csv_config(tmp_path), cache=False)
    assert f"r.csv: column {position} of the header has {what}" in str(caught.value)
    assert "index=False" in str(caught.value)


def test_a_nameless_column_left_out_by_load_col_is_fine(tmp_path):
    pd.DataFrame(ratings_rows(), columns=["user_id", "item_id", "rating"]).to_csv(tmp_path / "r.csv")  # index kept
    dataset = load_dataset(csv_config(tmp_path, load_col={"inter": ("user_id", "item_id", "rating")}), cache=False)
    assert dataset.schema.names == ("user_id", "item_id") and dataset.stats["interactions"] == len(ratings_rows())


def test_a_parquet_column_without_a_name_is_an_error(tmp_path):
    frame = pd.DataFrame(ratings_rows(), columns=["user_id", "item_id", "rating"])
    frame.insert(0, "", np.arange(len(frame)))
    frame.to_parquet(tmp_path / "r.parquet")
    config = DataConfig("r", format="parquet", path=str(tmp_path), files={"inter": "r.parquet"})
    with pytest.raises(DataError, match=r"r.parquet: column 1 of the header has an empty name"):
        load_dataset(config, cache=False)


def test_a_feature_with_a_new_value_on_every_interaction_is_flagged(tmp_path):
    rows = ratings_rows()
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    frame.insert(0, "row_id", [f"r{n}" for n in range(len(frame))])
    frame["device"] = np.where(np.arange(len(frame)) % 3 == 0, "phone", "web")
    frame.to_csv(tmp_path / "r.csv", index=False)
    with pytest.warns(DataWarning, match=r"r.csv: field 'row_id' has a different value on each of its") as caught:
        dataset = load_dataset(csv_config(tmp_path))
    assert len(caught) == 1 and f"each of its {len(rows):,} interactions" in str(caught[0].message)
    assert "row_id" in dataset.schema.names and "device" in dataset.schema.names
    assert dataset.stats["warnings"] == [str(caught[0].message)]
    with pytest.warns(DataWarning, match="'row_id'"):  # a cache hit says so again
        assert load_dataset(csv_config(tmp_path)).stats["cache"] == "hit"
    frame.drop(columns="row_id").to_csv(tmp_path / "r.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert "warnings" not in load_dataset(csv_config(tmp_path)).stats


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    text = "user_id,item_id,rating\n" + "".join(f"{u},{i},{r}\n" for u, i, r in ratings_rows())
    (tmp_path / "r.csv").write_bytes(BOM + text.encode())
    with_bom = load_dataset(csv_config(tmp_path), cache=False)
    (tmp_path / "r.csv").write_bytes(text.encode())
    plain = load_dataset(csv_config(tmp_path), cache=False)
    assert with_bom.schema == plain.schema and np.array_equal(with_bom.train.rating, plain.train.rating)
    atomic = "user_id:token\titem_id:token\trating:float\n" + "".join(f"{u}\t{i}\t{r}\n" for u, i, r in ratings_rows())
    (tmp_path / "a.inter").write_bytes(BOM + atomic.encode())
    dataset = load_dataset(DataConfig("a", path=str(tmp_path)), cache=False)
    assert dataset.schema.names == ("user_id", "item_id") and dataset.stats["interactions"] == len(ratings_rows())
    quoted = 'user_id,item_id,rating,note\n' + "".join(f'{u},{i},{r},"a, b"\n' for u, i, r in ratings_rows())
    (tmp_path / "r.csv").write_bytes(BOM + quoted.encode())
    assert load_dataset(csv_config(tmp_path), cache=False).schema.names == ("user_id", "item_id", "note")


def test_a_comma_separated_inter_file_is_called_comma_separated(tmp_path):
    (tmp_path / "a.inter").write_text("user_id:token,item_id:token,rating:float\n1,2,5\n")
    with pytest.raises(DataError, match=r"a.inter line 1: .*the file looks comma-separated; RecBole atomic files "
                                        r"are tab-separated"):
        load_dataset(DataConfig("a", path=str(tmp_path)), cache=False)


def test_a_tab_separated_csv_is_called_tab_separated(tmp_path):
    (tmp_path / "r.csv").write_text("user_id\titem_id\trating\n1\t2\t5\n")
    with pytest.raises(DataError, match=r"r.csv line 1: .*looks tab-separated, not ','-separated; set "
                                        r"DataConfig.delimiter"):
        load_dataset(csv_config(tmp_path), cache=False)
