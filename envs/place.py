"""Placing: carry a grasped object to a goal, let go of it, and leave it there at rest.

The shared core of the RFS simulation tasks "Pick & Place" and "Stack" (Su et al., ICLR 2026):
a task samples its scene in ``sample_scene`` and says where the carried object (always the
object named ``"object"``) must come to rest, ``goal(data, info)``; ``PlaceEnv`` steps the hand,
rewards, decides success and builds the observation. Success: the object within tolerance of its
goal, touched by no part of the hand, and still, for ``settle_time`` seconds in a row; the
episode ends on success (as in grasp).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from brax.envs.base import State
from mujoco import mjx

from envs.config import ObjectConfig
from envs.hand.base import HandConfig, HandEnv


@dataclasses.dataclass(frozen=True)
class PlaceRewardConfig:
    """Scales of the named reward terms (logged as ``reward/<name>``)."""

    reach: float = 0.5
    """Grasp point near the object, ``1 - tanh(10 d)``; all of it once the object is placed."""
    contact: float = 0.5
    """Thumb + fingers touching the object (as in grasp); all of it once the object is placed."""
    lift: float = 1.0
    """Height above rest as a fraction of ``carry_height`` (clipped to [0, 1]); all of it once
    the object is above its goal (within ``xy_tolerance``): carry it there rather than push it."""
    place: float = 2.0
    """Object near its goal, ``1 - tanh(10 d)`` of the 3-D distance."""
    release: float = 1.0
    """Object placed and touched by no part of the hand."""
    success: float = 10.0
    """Once, when the object has settled; the success step also pays the most the shaping
    terms could still have paid until the time limit (as in grasp)."""
    action: float = 0.01
    """Penalty on the squared action norm (per dimension)."""


@dataclasses.dataclass(frozen=True)
class PlaceConfig:
    """Settings every placing task shares; the tasks add their scene's."""

    hand: HandConfig = HandConfig()
    object: ObjectConfig = ObjectConfig()
    """The object the hand picks up and places."""
    reward: PlaceRewardConfig = PlaceRewardConfig()
    episode_length: int = 150
    """Control steps per episode (20 Hz)."""
    xy_tolerance: float = 0.03
    """Largest horizontal distance of the object's centre from its goal for success (m)."""
    z_tolerance: float = 0.03
    """Largest vertical distance of the object's centre from its goal for success (m)."""
    max_speed: float = 0.05
    """Largest object speed counted as at rest (m/s)."""
    max_spin: float = 0.5
    """Largest object angular speed counted as at rest (rad/s)."""
    settle_time: float = 0.25
    """How long the object must stay placed, released and at rest (s)."""
    carry_height: float = 0.08
    """Height above rest that earns the whole ``lift`` reward (m)."""
    wrist_home: tuple[float, float, float] = (0.0, 0.0, 0.20)
    """Initial wrist position (m)."""
    wrist_home_noise: float = 0.05
    """Half-range of the uniform noise on the initial wrist position (m)."""

    @property
    def settle_steps(self) -> int:
        return max(1, round(self.settle_time / self.hand.ctrl_dt))


def place_terms(
    grasp_dist: jax.Array,
    flags: jax.Array,
    height: jax.Array,
    err: jax.Array,
    xy_tolerance: float,
    placed: jax.Array,
    released: jax.Array,
) -> dict[str, jax.Array]:
    """The shaping terms of a placing step, each in [0, 1] before its scale.

    ``grasp_dist``: grasp point to object (m); ``flags``: [5] contact flags (index, middle,
    ring, thumb, palm); ``height``: height above rest as a fraction of ``carry_height``;
    ``err``: [3] object minus goal; ``placed``: within the goal's tolerances; ``released``: no
    contact.

    The terms are staged: a stage already passed pays its whole scale. Once the object is
    placed, ``reach`` and ``contact`` pay 1 whether or not the hand still holds it, and ``lift``
    pays 1 once the object is above its goal (within ``xy_tolerance``). So no step into the goal
    lowers the reward, and the only step that pays every term in full (the most the shaping can
    pay, ``HandEnv.score``'s ``most``) is placed and released. Before this (until 2026-12-04) the
    three terms fell to 0 at the goal, so hovering just outside its tolerance with the object in
    hand paid up to 3.4 of the 5 per step against 2 for holding it on the goal: the cliff that
    taught RFS on pick_place to carry the object near the goal and never let go
    (docs/results.md, "Why steering loses on pick_place")."""
    placed_f = placed.astype(jnp.float32)
    above = (jnp.linalg.norm(err[:2]) <= xy_tolerance).astype(jnp.float32)
    reach = 1.0 - jnp.tanh(10.0 * grasp_dist)
    contact = 0.5 * jnp.mean(flags[:3]) + 0.5 * flags[3]
    return {
        "reach": jnp.maximum(reach, placed_f),
        "contact": jnp.maximum(contact, placed_f),
        "lift": jnp.maximum(jnp.clip(height, 0.0, 1.0), above),
        "place": 1.0 - jnp.tanh(10.0 * jnp.linalg.norm(err)),
        "release": (placed & released).astype(jnp.float32),
    }


class PlaceEnv(HandEnv):
    """Single-instance placing env on the brax ``Env`` interface; subclasses give the scene."""

    shaping_terms = ("reach", "contact", "lift", "place", "release")

    config: PlaceConfig

    # ---- what a task defines -----------------------------------------------------------------
    def sample_scene(self, key: jax.Array) -> tuple[dict, dict, jax.Array | None]:
        """``(info, poses, mocap_pos)`` of a new episode: per-episode values kept in
        ``state.info`` (at least the carried object's ``obj_size``, ``obj_mass``,
        ``obj_friction`` and ``rest_z``), each object's initial ``(pos, quat)``, and the mocap
        bodies' positions (or ``None``)."""
        raise NotImplementedError

    def model(self, info: dict) -> mjx.Model:
        """The MJX model with this episode's object sizes, masses and frictions."""
        return self.model_with_object(
            "object", info["obj_size"], info["obj_mass"], info["obj_friction"]
        )

    def goal(self, data: mjx.Data, info: dict) -> jax.Array:
        """[3] where the carried object's centre must come to rest."""
        raise NotImplementedError

    def scene_obs(self, data: mjx.Data, info: dict) -> jax.Array:
        """Task-specific observation appended to the shared one."""
        return jnp.zeros((0,))

    # ---- the shared episode -------------------------------------------------------------------
    @property
    def _reward_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(PlaceRewardConfig))

    def reset(self, rng: jax.Array) -> State:
        cfg = self.config
        k_scene, k_wrist = jax.random.split(rng)
        info, poses, mocap_pos = self.sample_scene(k_scene)
        wrist = self.sample_wrist(k_wrist, cfg.wrist_home, cfg.wrist_home_noise)
        data = self.initial_data(self.model(info), wrist, poses, mocap_pos)
        info = {
            **info,
            "wrist_target": wrist,
            "settle": jnp.zeros((), jnp.int32),
            "t": jnp.zeros((), jnp.int32),
            "potential": self.initial_potential(),
        }
        metrics = {
            "success": jnp.zeros(()),
            "goal_distance": jnp.zeros(()),
            **{f"reward/{k}": jnp.zeros(()) for k in self._reward_names},
        }
        obs = self._obs(data, info, touching=jnp.zeros(5))
        return State(data, obs, jnp.zeros(()), jnp.zeros(()), metrics, info)

    def step(self, state: State, action: jax.Array) -> State:
        cfg, info = self.config, state.info
        data, target = self._physics_step(
            self.model(info), state.pipeline_state, info["wrist_target"], action
        )

        pos, _ = self.object_pose(data, "object")
        err = pos - self.goal(data, info)
        xy_err = jnp.linalg.norm(err[:2])
        placed = (xy_err < cfg.xy_tolerance) & (jnp.abs(err[2]) < cfg.z_tolerance)
        flags = self.contact_flags(data, "object")
        released = jnp.all(flags == 0)
        vel = self.object_vel(data, "object")
        still = (jnp.linalg.norm(vel[:3]) < cfg.max_speed) & (
            jnp.linalg.norm(vel[3:]) < cfg.max_spin
        )
        settle = jnp.where(placed & released & still, info["settle"] + 1, 0)
        success = settle >= cfg.settle_steps

        terms = place_terms(
            grasp_dist=jnp.linalg.norm(self.grasp_pos(data) - pos),
            flags=flags,
            height=(pos[2] - info["rest_z"]) / cfg.carry_height,
            err=err,
            xy_tolerance=cfg.xy_tolerance,
            placed=placed,
            released=released,
        )
        a = jnp.clip(action, -1.0, 1.0)
        terms = {**terms, "success": success.astype(jnp.float32), "action": -jnp.mean(a * a)}
        t = info["t"] + 1
        rewards, potential = self.score(terms, cfg.reward, success, t, info["potential"])
        info = {**info, "wrist_target": target, "settle": settle, "t": t, "potential": potential}
        return self.end_step(
            state,
            data,
            rewards,
            success,
            info,
            {"goal_distance": jnp.linalg.norm(err)},
            lambda d: self._obs(d, info, touching=flags),
        )

    def _obs(self, data: mjx.Data, info: dict, touching: jax.Array) -> jax.Array:
        """Privileged state: hand (44), fingertips and grasp point relative to the object (15),
        object pose, velocity and size (16), contact flags (5), goal and goal minus object (6),
        settle progress (1), then the task's own (``scene_obs``)."""
        pos, quat = self.object_pose(data, "object")
        goal = self.goal(data, info)
        return jnp.concatenate(
            [
                self.hand_obs(data),
                (self.tip_pos(data) - pos).reshape(-1),
                self.grasp_pos(data) - pos,
                pos,
                quat,
                self.object_vel(data, "object"),
                info["obj_size"],
                touching,
                goal,
                goal - pos,
                (info["settle"] / self.config.settle_steps)[None].astype(jnp.float32),
                self.scene_obs(data, info),
            ]
        )


def object_info(obj: dict, prefix: str = "obj") -> dict:
    """The ``state.info`` entries of an object drawn by ``envs.config.sample_object``."""
    return {f"{prefix}_{k}": obj[k] for k in ("size", "mass", "friction")}
