"""The grasp expert.

Like human teleoperation in the RFS paper, the grasp expert is imperfect on purpose: each
episode it picks one of two grasp styles at random (a three-finger power grasp across one axis of
the object, or an index-middle-thumb pinch across the other, from higher up), and puts noise on
its targets, its timing and its actions. The resulting demonstrations are multimodal, which is
what the flow base policy must keep and what RFS's latent steering later selects between.

"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from brax.envs.base import State

from envs.hand import constants as C
from envs.hand.base import fingers_to_action


@dataclasses.dataclass(frozen=True)
class GraspExpertConfig:
    """Noise and style mix of the grasp expert (tune these to change the expert's success)."""

    pinch_prob: float = 0.5
    """Probability of the pinch style (else the power grasp)."""
    xy_noise: float = 0.008
    """Std of the per-episode offset of the grasp point (m)."""
    z_noise: float = 0.006
    """Std of the per-episode offset of the grasp height (m)."""
    yaw_noise: float = 0.12
    """Std of the per-episode yaw error of the grasp (rad)."""
    close_steps: tuple[int, int] = (4, 10)
    """Range of control steps the hand takes to close."""
    wrist_action_noise: float = 0.15
    """Std of the per-step noise on the wrist actions."""
    finger_action_noise: float = 0.05
    """Std of the per-step noise on the finger actions."""
    lift: float = 0.16
    """How far the expert lifts the object (m)."""
    lift_speed: float = 0.5
    """Fraction of the largest wrist step used while lifting (a gentle lift slips less)."""
    squeeze: float = 0.02
    """How far past the object's centre the closed fingertips aim (m): the servo error that
    makes the grip force."""


def _tip_table(env, finger: int, mcp_pip_grid: np.ndarray):
    """Forward kinematics of one finger over a grid of (flexion, middle joint) with the last
    joint coupled (0.8x) to the middle one: tip positions in the hand frame."""
    m = env.mj_model
    d = mujoco.MjData(m)
    out = []
    for a, b in mcp_pip_grid:
        d.qpos[:] = m.qpos0
        d.qpos[env._wrist_qadr] = 0.0
        q = np.zeros(16)
        q[4 * finger], q[4 * finger + 2], q[4 * finger + 3] = a, b, 0.8 * b
        d.qpos[env._finger_qadr] = q
        mujoco.mj_kinematics(m, d)
        out.append(d.site_xpos[env._tip_sites[finger]].copy())
    return np.array(out)


def _posture(env, targets: dict[str, tuple[float, float]]) -> np.ndarray:
    """Finger joint angles [16] putting each named fingertip at a hand-frame (x, z) point, by
    grid search over the finger's two flexion degrees of freedom (done once, on the host)."""
    g = np.linspace(-0.3, 2.0, 70)
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    q = np.zeros(16, np.float32)
    for name, (x, z) in targets.items():
        i = C.FINGERS.index(name)
        tips = _tip_table(env, i, grid)
        best = np.argmin(np.hypot(tips[:, 0] - x, tips[:, 2] - z))
        a, b = grid[best]
        q[4 * i], q[4 * i + 2], q[4 * i + 3] = a, b, 0.8 * b
    lo = np.array([r[0] for f in C.FINGERS for r in C.JOINT_RANGES[f]])
    hi = np.array([r[1] for f in C.FINGERS for r in C.JOINT_RANGES[f]])
    return np.clip(q, lo, hi).astype(np.float32)


class GraspExpert:
    """Approach, pre-shape, descend, close, lift; two grasp styles."""

    # Hand-frame depth of the object's centre below the palm centre, per style (m).
    DEPTH = (0.08, 0.10)
    # Hand-frame lateral offset of the grasp centre, per style (m): the pinch closes between
    # the thumb and the index and middle fingers, on the index side of the palm.
    LATERAL = (0.008, 0.022)

    def __init__(self, env, config: GraspExpertConfig = GraspExpertConfig()):
        self.env = env
        self.config = config
        postures = []
        for depth, pinch in zip(self.DEPTH, (False, True), strict=True):
            z = -depth
            sq = config.squeeze
            shut = {"index": (-sq, z), "middle": (-sq, z), "thumb": (sq, z)}
            spread = {"index": (0.075, z), "middle": (0.075, z), "thumb": (-0.075, z)}
            if pinch:
                shut["ring"] = spread["ring"] = (0.1, -0.02)  # ring stays out of the way
            else:
                shut["ring"], spread["ring"] = (-sq, z), (0.075, z)
            postures.append((_posture(env, spread), _posture(env, shut)))
        self._open = jnp.array(np.stack([p[0] for p in postures]))
        self._shut = jnp.array(np.stack([p[1] for p in postures]))

    def init(self, key: jax.Array) -> dict:
        """Carry for one env; the plan itself is drawn at the first step of each episode."""
        return {
            "key": key,
            "style": jnp.zeros((), jnp.int32),
            "offset": jnp.zeros(4),
            "close_steps": jnp.ones((), jnp.int32),
            "phase": jnp.zeros((), jnp.int32),
            "phase_t": jnp.zeros((), jnp.int32),
        }

    def _new_plan(self, carry: dict) -> dict:
        cfg = self.config
        key, k_style, k_off, k_close = jax.random.split(carry["key"], 4)
        std = jnp.array([cfg.xy_noise, cfg.xy_noise, cfg.z_noise, cfg.yaw_noise])
        return {
            "key": key,
            "style": jax.random.bernoulli(k_style, cfg.pinch_prob).astype(jnp.int32),
            "offset": jax.random.normal(k_off, (4,)) * std,
            "close_steps": jax.random.randint(
                k_close, (), cfg.close_steps[0], cfg.close_steps[1] + 1
            ),
            "phase": jnp.zeros((), jnp.int32),
            "phase_t": jnp.zeros((), jnp.int32),
        }

    # ---- pieces every expert built on this one uses (the place expert adds phases) -----------
    def begin(self, carry: dict, state: State) -> dict:
        """The carry with a new plan at an episode's first step."""
        return jax.tree.map(
            lambda new, old: jnp.where(state.info["steps"] == 0, new, old),
            self._new_plan(carry),
            carry,
        )

    def grasp_plan(self, carry: dict, state: State) -> dict:
        """Where this episode's grasp goes, and whether each grasp phase is over.

        Returns the wrist pose ``q`` [6], the grasp yaw ``want``, the wrist position ``xy`` [2]
        and heights ``hover_z`` and ``grasp_z`` of the grasp, and ``go`` [3]: approach, descend
        and close done (to be indexed by the phase)."""
        env, cfg = self.env, self.config
        data = state.pipeline_state
        pos, quat = env.object_pose(data, "object")
        rest_z = state.info["rest_z"]
        style, off, t = carry["style"], carry["offset"], carry["phase_t"]

        # Grasp yaw: across the object's x axis (power) or y axis (pinch); the hand grasp is
        # symmetric under a half turn, so take the equivalent closest to the current yaw.
        obj_yaw = jnp.arctan2(
            2 * (quat[0] * quat[3] + quat[1] * quat[2]), 1 - 2 * (quat[2] ** 2 + quat[3] ** 2)
        )
        q = env._wrist_q(data)
        want = obj_yaw + style * (math.pi / 2) + off[3]
        want = q[3] + _wrap(want - q[3], math.pi)
        # Round shapes have no preferred axis: keep the current yaw.
        if env.config.object.shape in ("sphere", "cylinder"):
            want = q[3] + off[3]
        depth = jnp.array(self.DEPTH)[style]
        lateral = jnp.array(self.LATERAL)[style]
        c, s = jnp.cos(want), jnp.sin(want)
        xy = pos[:2] + off[:2] - jnp.array([-s * lateral, c * lateral])
        grasp_z = rest_z + depth + off[2]
        go = jnp.array(
            [
                ((jnp.linalg.norm(xy - q[:2]) < 0.01) & (jnp.abs(want - q[3]) < 0.06)) | (t > 25),
                (jnp.abs(grasp_z - q[2]) < 0.006) | (t > 12),
                t >= carry["close_steps"] + 2,
            ]
        )
        return {
            "q": q,
            "want": want,
            "xy": xy,
            "hover_z": rest_z + depth + 0.07,
            "grasp_z": grasp_z,
            "lift_z": rest_z + depth + cfg.lift,
            "go": go,
        }

    @staticmethod
    def advance(carry: dict, go: jax.Array) -> dict:
        """Next phase where the current one is done (``go[phase]``), with its step counter."""
        phase, t = carry["phase"], carry["phase_t"]
        done = go[phase]
        return {
            **carry,
            "phase": jnp.where(done, phase + 1, phase),
            "phase_t": jnp.where(done, 0, t + 1),
        }

    def closing(self, carry: dict) -> jax.Array:
        """How far the hand has closed, 0 (open) to 1 (shut), ``phase_t`` steps into closing."""
        return jnp.clip((carry["phase_t"] + 1) / carry["close_steps"], 0.0, 1.0)

    def grip(self, carry: dict, alpha) -> jax.Array:
        """Finger joint targets [16] ``alpha`` of the way from this style's open to shut hand."""
        style = carry["style"]
        return self._open[style] + alpha * (self._shut[style] - self._open[style])

    def command(
        self,
        carry: dict,
        q: jax.Array,
        target: jax.Array,
        speed,
        alpha,
        key: jax.Array,
        fingers: jax.Array | None = None,
    ) -> jax.Array:
        """The noisy action moving the wrist from ``q`` towards ``target`` [6] at ``speed`` (a
        fraction of the largest step) with the hand ``alpha`` of the way from open to shut (or
        at the joint targets ``fingers`` [16] where given)."""
        cfg, h = self.config, self.env.hand
        err = target - q
        wrist = jnp.concatenate([err[:3] / h.pos_delta, err[3:] / h.rot_delta])
        wrist = jnp.clip(wrist, -1, 1) * speed
        if fingers is None:
            fingers = self.grip(carry, alpha)
        k_w, k_f = jax.random.split(key)
        action = jnp.concatenate(
            [
                wrist + cfg.wrist_action_noise * jax.random.normal(k_w, (6,)),
                fingers_to_action(fingers)
                + cfg.finger_action_noise * jax.random.normal(k_f, (16,)),
            ]
        )
        return jnp.clip(action, -1.0, 1.0)

    # ---- the grasp itself ----------------------------------------------------------------------
    def act(self, carry: dict, state: State, key: jax.Array) -> tuple[dict, jax.Array]:
        """Phases: 0 approach, 1 descend, 2 close, 3 lift."""
        carry = self.begin(carry, state)
        g = self.grasp_plan(carry, state)
        carry = self.advance(carry, jnp.append(g["go"], False))
        phase, q = carry["phase"], g["q"]
        z = jnp.array([g["hover_z"], g["grasp_z"], g["grasp_z"], g["lift_z"]])[phase]
        xy = jnp.where(phase <= 2, g["xy"], q[:2])
        target = jnp.concatenate([xy, z[None], jnp.array([g["want"], 0.0, 0.0])])
        alpha = jnp.array([0.0, 0.0, self.closing(carry), 1.0])[phase]
        speed = jnp.where(phase == 3, self.config.lift_speed, 1.0)
        return carry, self.command(carry, q, target, speed, alpha, key)


def _wrap(x, period):
    """Wrap ``x`` into [-period/2, period/2)."""
    return (x + period / 2) % period - period / 2
