"""The place expert, shared by every task built on ``envs.place.PlaceEnv`` (pick & place, stack).

It is the grasp expert (same two grasp styles, same noise on targets, timing and actions) with
the rest of the job appended: lift to a carry height, carry the object over its goal, lower it,
let go (uncurl the fingers), retreat upwards. The goal comes from the env (``env.goal``,
privileged), and the carry and lowering targets are corrected by where the object actually sits
in the hand, as a teleoperator watches the object rather than the hand. A second per-episode
choice, a low or a high carry, doubles the modes of the demonstrations; the per-episode placing
error (its std ``place_noise``) and the grasp noise set the expert's success.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from brax.envs.base import State

from envs.experts.grasp import GraspExpert, GraspExpertConfig


@dataclasses.dataclass(frozen=True)
class PlaceExpertConfig(GraspExpertConfig):
    """The grasp expert's settings plus the placing ones."""

    carry_heights: tuple[float, float] = (0.05, 0.10)
    """The two carry heights: the object's clearance above the higher of its start and its goal
    (m)."""
    high_carry_prob: float = 0.5
    """Probability of the high carry (else the low one)."""
    carry_speed: float = 0.35
    """Fraction of the largest wrist step used while carrying and lowering (a pinched object
    slips out of a faster carry)."""
    place_noise: float = 0.006
    """Std of the per-episode horizontal error of the release point (m)."""
    release_height: float = 0.0
    """Height of the object above its goal to lower it to (m). The hand opens once the object
    is within a few millimetres of its goal: an object opened on while it hangs in the air is
    pushed away by whichever side of the hand lets go last; one that sits on its goal is held
    there by friction."""
    open_steps: tuple[int, int] = (10, 14)
    """Range of control steps the hand takes to let go (faster moves the object more often)."""
    release_wait: int = 0
    """Control steps the opened hand stays still before it backs off (for a task whose success
    needs the object at rest for longer than the opening takes)."""
    retreat: float = 0.08
    """How far the wrist backs off upwards per control step target (m; the step is bounded)."""


# The two outer joints of every finger and of the thumb (pip, dip; mcp, ipl).
_DISTAL_JOINTS = jnp.array([4 * f + j for f in range(4) for j in (2, 3)])


class PlaceExpert(GraspExpert):
    """Grasp (approach, descend, close), then lift, carry, lower, open, retreat."""

    def init(self, key: jax.Array) -> dict:
        return {
            **super().init(key),
            "carry_h": jnp.zeros(()),
            "place_off": jnp.zeros(2),
            "open_steps": jnp.ones((), jnp.int32),
            "held": jnp.zeros(16),
        }

    def _new_plan(self, carry: dict) -> dict:
        cfg = self.config
        plan = super()._new_plan(carry)
        key, k_high, k_off, k_open = jax.random.split(plan["key"], 4)
        high = jax.random.bernoulli(k_high, cfg.high_carry_prob)
        return {
            **plan,
            "key": key,
            "carry_h": jnp.where(high, cfg.carry_heights[1], cfg.carry_heights[0]),
            "place_off": jax.random.normal(k_off, (2,)) * cfg.place_noise,
            "open_steps": jax.random.randint(k_open, (), cfg.open_steps[0], cfg.open_steps[1] + 1),
            "held": jnp.zeros(16),
        }

    def act(self, carry: dict, state: State, key: jax.Array) -> tuple[dict, jax.Array]:
        """Phases: 0 approach, 1 descend, 2 close (the grasp expert's), 3 lift, 4 carry,
        5 lower, 6 open, 7 retreat."""
        env, cfg = self.env, self.config
        carry = self.begin(carry, state)
        g = self.grasp_plan(carry, state)
        data, q, t = state.pipeline_state, g["q"], carry["phase_t"]
        pos, _ = env.object_pose(data, "object")
        vz = env.object_vel(data, "object")[2]
        goal = env.goal(data, state.info)
        aim = goal[:2] + carry["place_off"]
        carry_z = jnp.maximum(state.info["rest_z"], goal[2]) + carry["carry_h"]
        release_z = goal[2] + cfg.release_height
        go = jnp.concatenate(
            [
                g["go"],
                jnp.array(
                    [
                        (pos[2] > carry_z - 0.01) | (t > 20),
                        (jnp.linalg.norm(aim - pos[:2]) < 0.006) | (t > 60),
                        # Touched down: on its goal, or stopped just above it (held tilted).
                        (pos[2] < goal[2] + 0.003)
                        | ((pos[2] < goal[2] + 0.015) & (jnp.abs(vz) < 0.01))
                        | (t > 20),
                        t >= carry["open_steps"] + 2 + cfg.release_wait,
                        False,
                    ]
                ),
            ]
        )
        carry = self.advance(carry, go)
        phase = carry["phase"]

        # Wrist targets that bring the object (not the hand) to a point.
        over_aim = q[:2] + aim - pos[:2]
        xy = jnp.stack([g["xy"], g["xy"], g["xy"], q[:2], over_aim, over_aim, q[:2], q[:2]])
        z = jnp.stack(
            [
                g["hover_z"],
                g["grasp_z"],
                g["grasp_z"],
                q[2] + carry_z - pos[2],
                q[2] + carry_z - pos[2],
                q[2] + release_z - pos[2],
                q[2],
                q[2] + cfg.retreat,
            ]
        )
        # Once the object is held, the wrist keeps its yaw: the grasp yaw is read off the object,
        # which turns a little in the hand, and re-aligning to it would drag the object.
        yaw = jnp.where(phase >= 3, q[3], g["want"])
        target = jnp.concatenate([xy[phase], z[phase][None], jnp.stack([yaw, 0.0, 0.0])])
        # Letting go: the finger targets first jump to where the fingers are (the grip's squeeze
        # is the servos' error, so this drops it on every finger at once), then the outer joints
        # straighten while the base joints stay. Opening to the open posture instead swung the
        # fingers up and forward about their base and scooped the object along (about a third
        # of the placed objects moved off their goal that way).
        fingers_q = data.qpos[env._finger_qadr]
        starts_opening = (phase == 6) & (carry["phase_t"] == 0)
        carry = {**carry, "held": jnp.where(starts_opening, fingers_q, carry["held"])}
        # Backing off (phase 7) keeps the fingers uncurled: its step counter restarts, and an
        # opening read off it would snap the fingers back to the grip and fling the object.
        opening = jnp.where(
            phase >= 7, 1.0, jnp.clip(carry["phase_t"] / carry["open_steps"], 0.0, 1.0)
        )
        alpha = jnp.stack([0.0, 0.0, self.closing(carry), 1.0, 1.0, 1.0, 0.0, 0.0])[phase]
        uncurled = carry["held"].at[_DISTAL_JOINTS].set(0.0)
        letting_go = carry["held"] + opening * (uncurled - carry["held"])
        fingers = jnp.where(phase >= 6, letting_go, self.grip(carry, alpha))
        speed = jnp.array(
            [1.0, 1.0, 1.0, cfg.lift_speed, cfg.carry_speed, cfg.carry_speed, 1.0, 1.0]
        )
        speed = speed[phase]
        # While the hand opens, its setpoint is brought back to where the wrist is: a setpoint
        # left pressing down or sideways after lowering drags the object as the grip loosens.
        ref = jnp.where(phase == 6, state.info["wrist_target"], q)
        return carry, self.command(carry, ref, target, speed, alpha, key, fingers=fingers)
