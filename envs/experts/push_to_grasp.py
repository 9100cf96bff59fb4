"""The push-to-grasp expert: push the bar along the wall past one of its ends, then grasp it.

Each episode it picks one of two strategies at random -- push towards one end of the wall or
the other -- and then grasps as the grasp expert does (power grasp across the bar). Noise on
the pushing line, on how far it pushes, on the grasp and on every action makes it imperfect.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import State

from envs import fixtures
from envs.experts.grasp import GraspExpert, GraspExpertConfig, _posture, _wrap
from envs.hand.base import fingers_to_action
from envs.push_to_grasp import half_length


@dataclasses.dataclass(frozen=True)
class PushToGraspExpertConfig(GraspExpertConfig):
    """The grasp expert's settings (for the grasp after the push) plus the pushing ones."""

    pinch_prob: float = 0.0
    """Probability of the pinch grasp (else the power grasp, which suits a long object)."""
    reverse_prob: float = 0.5
    """Probability of pushing towards the wall's negative end (else its positive end)."""
    clearance: float = 0.08
    """How far past the wall end the expert pushes the object's centre (m)."""
    clearance_noise: float = 0.01
    """Std of the per-episode error on that distance (m)."""
    line_noise: float = 0.006
    """Std of the per-episode sideways offset of the pushing fingers from the object's axis
    (m)."""
    push_speed: float = 0.5
    """Fraction of the largest wrist step used while pushing."""
    push_height: float = 0.016
    """Height of the pushing fingertips above the table (m)."""


# Hand-frame (x, z) of the pushing fingertips: pointing down just in front of the palm.
_PUSH_TIP = (0.065, -0.125)
# Hand-frame (x, z) of the fingertips kept out of the way, stretched out level with the palm:
# the finger on the wall's side, and the thumb.
_AWAY_TIP = {"finger": (0.16, 0.0), "thumb": (-0.16, -0.01)}
_TIP_RADIUS = 0.012


class PushToGraspExpert(GraspExpert):
    """Align behind the bar, lower, push along the wall, rise; then approach, descend, close
    and lift as the grasp expert."""

    def __init__(self, env, config: PushToGraspExpertConfig = PushToGraspExpertConfig()):
        super().__init__(env, config)
        # Pushing postures with the ring finger, or the index finger, kept up.
        pushers = []
        for away in ("ring", "index"):
            tips = {f: _PUSH_TIP for f in ("index", "middle", "ring") if f != away}
            tips[away] = _AWAY_TIP["finger"]
            tips["thumb"] = _AWAY_TIP["thumb"]
            pushers.append(_posture(env, tips))
        self._pusher = jnp.array(np.stack(pushers))

    def init(self, key: jax.Array) -> dict:
        return {
            **super().init(key),
            "strategy": jnp.zeros((), jnp.int32),
            "push_off": jnp.zeros(2),
        }

    def _new_plan(self, carry: dict) -> dict:
        cfg = self.config
        plan = super()._new_plan(carry)
        key, k_strategy, k_off = jax.random.split(plan["key"], 3)
        std = jnp.array([cfg.clearance_noise, cfg.line_noise])
        return {
            **plan,
            "key": key,
            "strategy": jax.random.bernoulli(k_strategy, cfg.reverse_prob).astype(jnp.int32),
            "push_off": jax.random.normal(k_off, (2,)) * std,
        }

    def act(self, carry: dict, state: State, key: jax.Array) -> tuple[dict, jax.Array]:
        """Phases: 0 align above the start, 1 lower, 2 push, 3 rise, then the grasp expert's
        4 approach, 5 descend, 6 close, 7 lift."""
        env, cfg = self.env, self.config
        carry = self.begin(carry, state)
        g = self.grasp_plan(carry, state)
        data, info, q = state.pipeline_state, state.info, g["q"]
        pos, _ = env.object_pose(data, "object")
        strategy, off = carry["strategy"], carry["push_off"]
        sign = 1.0 - 2.0 * strategy
        along = fixtures.rotate(info["wall_yaw"], jnp.array([0.0, 1.0]))  # the wall's axis
        across = fixtures.rotate(info["wall_yaw"], jnp.array([1.0, 0.0]))  # towards the wall
        push_dir = sign * along
        # The fingers push with either side, so the hand faces along the push or against it,
        # whichever is the smaller turn.
        push_yaw = jnp.arctan2(push_dir[1], push_dir[0])
        push_yaw = q[3] + _wrap(push_yaw - q[3], math.pi)
        facing = fixtures.rotate(push_yaw, jnp.array([1.0, 0.0]))  # the hand's x axis
        # The finger on the wall's side stays up: the index finger (hand +y) or the ring finger.
        index_at_wall = jnp.dot(fixtures.rotate(push_yaw, jnp.array([0.0, 1.0])), across) > 0
        pusher = self._pusher[index_at_wall.astype(jnp.int32)]

        # The palm where the pushing fingertips touch the object's rear face, and how much
        # further the object must go.
        rear = half_length(env.config.object.shape, info["obj_size"]) + _TIP_RADIUS
        palm = pos[:2] - push_dir * rear - facing * _PUSH_TIP[0] - across * off[1]
        goal = env.config.wall.half_length + cfg.clearance + off[0]
        remaining = goal - sign * env.wall_frame(pos, info)[1]
        push_z = cfg.push_height - _PUSH_TIP[1]
        t = carry["phase_t"]
        go = jnp.concatenate(
            [
                jnp.array(
                    [
                        (jnp.linalg.norm(palm - q[:2]) < 0.01) & (jnp.abs(push_yaw - q[3]) < 0.08)
                        | (t > 40),
                        (jnp.abs(push_z - q[2]) < 0.008) | (t > 12),
                        (remaining < 0.005) | (t > 45),
                        (jnp.abs(g["hover_z"] - q[2]) < 0.01) | (t > 12),
                    ]
                ),
                g["go"],
                jnp.array([False]),
            ]
        )
        carry = self.advance(carry, go)
        phase = carry["phase"]

        pushed = palm + push_dir * jnp.maximum(remaining, 0.0)
        xy = jnp.stack([palm, palm, pushed, q[:2], g["xy"], g["xy"], g["xy"], q[:2]])
        z = jnp.stack(
            [
                push_z + 0.06,
                push_z,
                push_z,
                g["hover_z"],
                g["hover_z"],
                g["grasp_z"],
                g["grasp_z"],
                g["lift_z"],
            ]
        )
        yaw = jnp.where(phase <= 3, push_yaw, g["want"])
        target = jnp.concatenate([xy[phase], z[phase][None], jnp.stack([yaw, 0.0, 0.0])])
        alpha = jnp.stack([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, self.closing(carry), 1.0])[phase]
        speed = jnp.where(phase == 2, cfg.push_speed, jnp.where(phase == 7, cfg.lift_speed, 1.0))
        k_cmd, k_push = jax.random.split(key)
        action = self.command(carry, q, target, speed, alpha, k_cmd)
        pushing = fingers_to_action(pusher) + cfg.finger_action_noise * jax.random.normal(
            k_push, (16,)
        )
        fingers = jnp.where(phase <= 3, jnp.clip(pushing, -1.0, 1.0), action[6:])
        return carry, action.at[6:].set(fingers)
