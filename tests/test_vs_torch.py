"""benchmarks.vs_torch's argument handling (the timed workers themselves need torch + RecBole)."""

import os

import pytest

from benchmarks import vs_torch


def _atomic_files(folder):
    folder.mkdir()
    for name in ("ml-100k.inter", "ml-100k.user", "ml-100k.item"):
        (folder / name).write_text("")


def test_relative_data_folder_reaches_the_workers_absolute(tmp_path, monkeypatch):
    """The workers run in temporary folders, so a relative --data must reach them resolved."""
    _atomic_files(tmp_path / "ml-100k")
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr(vs_torch, "measure_backbone", lambda model, args: seen.append(args.data) or {})
    monkeypatch.setattr(vs_torch, "print_row", lambda row: None)
    assert vs_torch.main(["--models", "widedeep", "--data", "ml-100k"]) == 0
    assert seen == [str(tmp_path / "ml-100k")] and os.path.isabs(seen[0])


@pytest.mark.parametrize("argv, message", [
    (["--models", "widedeep,lstm"], "unknown backbone"),
    (["--epochs", "0"], "must be >= 1"),
    (["--data", "no-such-folder"], "ml-100k.inter not found"),
])
def test_bad_arguments_get_one_line_errors(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert vs_torch.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("model, name, keys", [
    ("deepfm", "DeepFM", {"mlp_hidden_size": [128, 128, 128], "dropout_prob": 0.2}),
    ("dcn", "DCN", {"cross_layer_num": 6, "mlp_hidden_size": [256, 256, 256], "dropout_prob": 0.2, "reg_weight": 2.0}),
])
def test_deepfm_and_dcn_reach_recbole_with_the_configs_hyper_parameters(model, name, keys, tmp_path):
    """RecBole gets its own model name, the registry / config values and no lipctr-only key."""
    settings = vs_torch.recbole_config(model, str(tmp_path / "ml-100k"), 2020)
    assert settings["model"] == name and settings["embedding_size"] == 16
    assert {k: settings[k] for k in keys} == keys
    assert not set(vs_torch.LIPCTR_ONLY) & set(settings) and "embedding_dim" not in settings
    assert settings["learning_rate"] == 1e-3 and settings["train_batch_size"] == 4096
