"""Privileged scripted experts that make imperfect, multimodal demonstrations, one per task.

Experts are single-instance pure functions, ``act(carry, state, key) -> (carry, action)``,
vmapped over the batch by the collector exactly like a jitted policy; ``init(key)`` gives the
carry, and the plan of an episode is drawn at its first step.
"""

from __future__ import annotations

import dataclasses

from envs.experts.grasp import GraspExpert, GraspExpertConfig

EXPERTS = {
    "grasp": (GraspExpert, GraspExpertConfig),
}


def make_expert(task: str, env, **overrides):
    """The scripted expert of ``task`` for ``env``; ``overrides`` are fields of its config."""
    if task not in EXPERTS:
        raise ValueError(f"no scripted expert for task {task!r}; experts exist for {list(EXPERTS)}")
    cls, cfg_cls = EXPERTS[task]
    return cls(env, dataclasses.replace(cfg_cls(), **overrides))


__all__ = ["EXPERTS", "make_expert"]
