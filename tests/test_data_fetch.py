"""The ML-100K fetcher without the network: checksum and archive failures leave nothing, an
unreachable index gives a clear error, non-fetchable datasets say what to supply."""

from __future__ import annotations

import os
import zipfile

import pytest

from lipctr.data import DataError
from lipctr.data import fetch as fetch_module
from lipctr.data.fetch import CHECKSUMS, MEMBER_DIR, extract_files, fetch_ml100k


def _wheel(path, contents: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in contents.items():
            archive.writestr(MEMBER_DIR + name, data)
    return path


def test_wrong_checksum_writes_nothing(tmp_path):
    wheel = _wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl", {n: b"fake\n" for n in CHECKSUMS})
    target = tmp_path / "ml-100k"
    with pytest.raises(DataError, match=r"ml-100k.inter has sha256 .* expected 4edb74e2"):
        fetch_ml100k(target, wheel=wheel, log=lambda _: None)
    assert not target.exists() or not any(target.iterdir())


def test_incomplete_or_invalid_wheel(tmp_path):
    partial = _wheel(tmp_path / "partial.whl", {"ml-100k.inter": b"x"})
    with pytest.raises(DataError, match=r"lacks recbole/dataset_example/ml-100k/ml-100k.user"):
        extract_files(partial)
    (tmp_path / "bad.whl").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"bad.whl: not a valid wheel"):
        extract_files(tmp_path / "bad.whl")


def test_unreachable_index_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_RETRIES", "0")
    target = tmp_path / "ml-100k"
    with pytest.raises(DataError) as caught:
        fetch_ml100k(target, log=lambda _: None)
    message = str(caught.value)
    for text in ("could not download recbole==1.2.1 from PyPI", "Is PyPI reachable", "--wheel", str(target)):
        assert text in message
    assert not target.exists()


def test_cli_for_datasets_that_cannot_be_fetched(tmp_path, capsys):
    assert fetch_module.main(["ml-1m", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "ml-1m cannot be fetched here" in err and "ml-1m.zip" in err and str(tmp_path / "ml-1m") in err
    assert fetch_module.main(["ml-20m", "--root", str(tmp_path)]) == 1
    assert "unknown dataset preset 'ml-20m'" in capsys.readouterr().err
