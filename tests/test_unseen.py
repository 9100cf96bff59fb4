"""The generalisation conditions of ``experiments.unseen``: each is a valid grasp config whose
objects lie outside the training ranges in the direction its name says (no compile)."""

from __future__ import annotations

import pytest

import envs
from experiments.common import parse_overrides
from experiments.unseen import CONDITIONS, UnseenArgs, unseen

TRAIN = envs.default_config("grasp").object


def _object(name):
    return envs.make_config("grasp", **parse_overrides(CONDITIONS[name])).object


def test_the_training_condition_is_the_training_config():
    assert _object("training objects") == TRAIN


@pytest.mark.parametrize("name", [c for c in CONDITIONS if c != "training objects"])
def test_each_condition_leaves_the_training_ranges(name):
    obj = _object(name)
    (lo, hi), (train_lo, train_hi) = obj.sizes, TRAIN.sizes
    if obj.shape != TRAIN.shape:
        assert obj.shape in ("sphere", "capsule")  # the shapes MJX collides with the hand
    elif "smaller" in name:
        assert all(h <= t for h, t in zip(hi, train_lo, strict=True))
    elif "larger" in name:
        assert all(low >= t for low, t in zip(lo, train_hi, strict=True))
    elif "heavier" in name:
        assert obj.mass_range[0] >= TRAIN.mass_range[1]
    elif "friction" in name:
        assert obj.friction_range[1] <= TRAIN.friction_range[0]
    else:
        pytest.fail(f"no check for condition {name!r}")
    changed = [
        f
        for f in ("shape", "size_min", "size_max", "mass_range", "friction_range")
        if getattr(obj, f) != getattr(TRAIN, f)
    ]
    assert changed, name


def test_an_unknown_condition_is_refused():
    with pytest.raises(ValueError, match="unknown conditions"):
        unseen(UnseenArgs(conditions=("underwater",)))
