"""The Variant: head width, members and loss options of orig, smooth and a lambda_r sweep."""

import pytest

from lipctr import variant as v
from lipctr.losses import LossConfig


def test_orig_is_a_one_logit_bce_head():
    orig = v.orig()
    assert (orig.name, orig.kind, orig.rating_head, orig.sweep) == ("orig", "orig", False, False)
    assert orig.num_outputs(5) == 1
    assert orig.members([2020, 2021]) == [v.Member(2020, 0.0), v.Member(2021, 0.0)]
    assert orig.loss_config(3) == LossConfig(lambda_r=0.0, threshold=3)


def test_smooth_has_one_logit_per_rating():
    smooth = v.smooth(0.7, aggregation="logit_sum", scale_penalty=False)
    assert smooth.num_outputs(5) == 5 and smooth.num_outputs(10) == 10
    assert [m.label(smooth.sweep) for m in smooth.members([1, 2])] == ["seed1", "seed2"]
    assert smooth.loss_config(2) == LossConfig(lambda_r=0.7, threshold=2, aggregation="logit_sum",
                                               scale_penalty=False)


def test_lambda_sweep_members_are_lambda_major():
    sweep = v.lambda_sweep([0.1, 0.5])
    members = sweep.members([7, 8])
    assert members == [v.Member(7, 0.1), v.Member(8, 0.1), v.Member(7, 0.5), v.Member(8, 0.5)]
    assert [m.label(sweep.sweep) for m in members] == ["seed7_lambda0.1", "seed8_lambda0.1",
                                                       "seed7_lambda0.5", "seed8_lambda0.5"]
    assert sweep.name == "lambda_sweep" and sweep.kind == "smooth" and sweep.num_outputs(5) == 5


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "x", "kind": "wide", "lambdas": (0.5,)}, "kind must be one of"),
    ({"name": "x", "kind": "smooth", "lambdas": ()}, r"lambda_r values must lie in \[0, 1\]"),
    ({"name": "x", "kind": "smooth", "lambdas": (1.5,)}, r"lambda_r values must lie in \[0, 1\]"),
    ({"name": "x", "kind": "orig", "lambdas": (0.3,)}, "orig trains with lambda_r = 0 only"),
    ({"name": "x", "kind": "smooth", "lambdas": (0.3,), "aggregation": "mean"}, "aggregation must be"),
])
def test_bad_variants_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        v.Variant(**kwargs)
