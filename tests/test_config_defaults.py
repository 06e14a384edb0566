"""The experiment configs' defaults come from the library's own dataclasses (one source of truth)."""

import dataclasses

import pytest

from experiments.configs import DEFAULTS, ConfigError, named_config, parse_toml_value, validate
from lipctr.losses import LossConfig
from lipctr.train import TrainConfig


def test_train_and_loss_defaults_are_the_dataclasses():
    assert DEFAULTS["train"] == dataclasses.asdict(TrainConfig())
    loss = LossConfig()
    assert DEFAULTS["loss"] == {"lambda_r": loss.lambda_r, "aggregation": loss.aggregation,
                                "scale_penalty": loss.scale_penalty}
    TrainConfig(**named_config("dcnv2_ml100k")["train"])  # every train key is a TrainConfig field


def test_member_mode_is_validated():
    config = named_config("dcnv2_ml100k")
    config["train"]["members"] = "parallel"
    with pytest.raises(ConfigError, match="train.members"):
        validate(config)


def test_toml_values():
    assert parse_toml_value("5e-3") == 5e-3 and parse_toml_value("[64, 64]") == [64, 64]
    assert parse_toml_value("abc") == "abc"
    with pytest.raises(ValueError, match="not a TOML value"):
        parse_toml_value("abc", strict=True)
