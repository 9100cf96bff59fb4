"""Privileged scripted experts that make imperfect, multimodal demonstrations, one per task.

Experts are single-instance pure functions, ``act(carry, state, key) -> (carry, action)``,
vmapped over the batch by the collector exactly like a jitted policy; ``init(key)`` gives the
carry, and the plan of an episode is drawn at its first step.
"""

from __future__ import annotations

import dataclasses

from envs.experts.grasp import GraspExpert, GraspExpertConfig
from envs.experts.place import PlaceExpert, PlaceExpertConfig
from envs.experts.pour import PourExpert, PourExpertConfig
from envs.experts.push_to_grasp import PushToGraspExpert, PushToGraspExpertConfig

_PLACING = PlaceExpertConfig(xy_noise=0.004, z_noise=0.003, yaw_noise=0.06, place_noise=0.003)

# Task -> (expert class, its default config); the placing tasks share one expert.
EXPERTS = {
    "grasp": (GraspExpert, GraspExpertConfig()),
    # Placing needs the grasp to hold through a carry and a release: half the grasp expert's
    # target noise (a third of the grasps failed or dropped the object with all of it).
    "pick_place": (PlaceExpert, _PLACING),
    # A cube on a cube must sit still for a second after the hand opens: wait before backing off.
    "stack": (PlaceExpert, dataclasses.replace(_PLACING, release_wait=30)),
    "push_to_grasp": (PushToGraspExpert, PushToGraspExpertConfig()),
    "pour": (PourExpert, PourExpertConfig()),
    # The box's rim is 6 cm high: carry the object's bottom 3 or 7 cm above it.
    "pack": (PlaceExpert, PlaceExpertConfig(carry_heights=(0.09, 0.13))),
}


def make_expert(task: str, env, **overrides):
    """The scripted expert of ``task`` for ``env``; ``overrides`` are fields of its config."""
    if task not in EXPERTS:
        raise ValueError(f"no scripted expert for task {task!r}; experts exist for {list(EXPERTS)}")
    cls, config = EXPERTS[task]
    return cls(env, dataclasses.replace(config, **overrides))


__all__ = ["EXPERTS", "make_expert"]
