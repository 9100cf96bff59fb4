"""Grasp: pick up one object from the table and hold it.

RFS (Su et al., ICLR 2026), simulation task "Grasp": success when the object is raised at least
``lift_height`` above its resting height and held there for ``hold_time`` seconds; the episode
ends on success (sparse-reward handling: terminate on success, bootstrap only at time-outs).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from brax.envs.base import State
from mujoco import mjx

from envs.config import ObjectConfig, sample_object
from envs.hand.base import HandConfig, HandEnv
from envs.hand.mjcf import ObjectSpec


@dataclasses.dataclass(frozen=True)
class GraspRewardConfig:
    """Scales of the named reward terms (logged as ``reward/<name>``)."""

    reach: float = 0.5
    """Grasp point near the object: ``1 - tanh(10 d)``."""
    contact: float = 0.5
    """Fraction of thumb + fingers touching the object, thumb weighted as the three fingers."""
    lift: float = 2.0
    """Height above rest, as a fraction of ``lift_height`` (clipped to [0, 1])."""
    success: float = 10.0
    """Once, when the hold time is reached. The episode then ends, so on top of this the
    success step also pays the most the shaping terms could still have paid until the time
    limit: ending an episode by succeeding never loses return against hovering just short of
    success (which the per-step lift reward would otherwise teach)."""
    action: float = 0.01
    """Penalty on the squared action norm (per dimension)."""


@dataclasses.dataclass(frozen=True)
class GraspConfig:
    """The grasp task."""

    hand: HandConfig = HandConfig()
    object: ObjectConfig = ObjectConfig(mass_range=(0.1, 0.5), friction_range=(0.3, 1.0))
    """Heavy and slippery objects are part of the task: mass and friction are not in the
    observation, so a policy must grip every object as if it were the worst (the scripted
    expert does not, and the base policy learns from it)."""
    reward: GraspRewardConfig = GraspRewardConfig()
    episode_length: int = 100
    """Control steps per episode (5 s at 20 Hz)."""
    lift_height: float = 0.10
    """How far above its resting height the object must be raised (m)."""
    hold_time: float = 1.0
    """How long it must stay there (s)."""
    wrist_home: tuple[float, float, float] = (0.0, 0.0, 0.20)
    """Initial wrist position (m)."""
    wrist_home_noise: float = 0.05
    """Half-range of the uniform noise on the initial wrist position (m)."""
    object_pos_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Error of the observed object position (m), as from a miscalibrated camera: the policy's
    observation (object position, fingertips and grasp point relative to it, height) is of an
    object this far from the real one. A deployment shift (``rfs corrections --shift``); the
    scripted experts read the true state and do not see it."""

    @property
    def hold_steps(self) -> int:
        return max(1, round(self.hold_time / self.hand.ctrl_dt))


class Grasp(HandEnv):
    """Single-instance grasp env on the brax ``Env`` interface."""

    shaping_terms = ("reach", "contact", "lift")

    def __init__(self, config: GraspConfig = GraspConfig()):
        self.config = config
        spec = ObjectSpec("object", config.object.shape, config.object.sizes[1])
        super().__init__(config.hand, (spec,))

    def reset(self, rng: jax.Array) -> State:
        cfg = self.config
        k_obj, k_wrist = jax.random.split(rng)
        obj = sample_object(k_obj, cfg.object)
        size, mass, friction, rest_z = obj["size"], obj["mass"], obj["friction"], obj["rest_z"]
        wrist = self.sample_wrist(k_wrist, cfg.wrist_home, cfg.wrist_home_noise)
        model = self.model_with_object("object", size, mass, friction)
        data = self.initial_data(model, wrist, {"object": (obj["pos"], obj["quat"])})

        info = {
            "wrist_target": wrist,
            "obj_size": size,
            "obj_mass": mass,
            "obj_friction": friction,
            "rest_z": rest_z,
            "hold": jnp.zeros((), jnp.int32),
            "t": jnp.zeros((), jnp.int32),
            "potential": self.initial_potential(),
        }
        metrics = {
            "success": jnp.zeros(()),
            "height": jnp.zeros(()),
            **{f"reward/{k}": jnp.zeros(()) for k in self._reward_names},
        }
        obs = self._obs(data, info, touching=jnp.zeros(5))
        return State(data, obs, jnp.zeros(()), jnp.zeros(()), metrics, info)

    @property
    def _reward_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(GraspRewardConfig))

    def step(self, state: State, action: jax.Array) -> State:
        cfg, info = self.config, state.info
        model = self.model_with_object(
            "object", info["obj_size"], info["obj_mass"], info["obj_friction"]
        )
        data, target = self._physics_step(model, state.pipeline_state, info["wrist_target"], action)

        pos, _ = self.object_pose(data, "object")
        height = pos[2] - info["rest_z"]
        lifted = height >= cfg.lift_height
        hold = jnp.where(lifted, info["hold"] + 1, 0)
        success = hold >= cfg.hold_steps
        flags = self.contact_flags(data, "object")
        dist = jnp.linalg.norm(self.grasp_pos(data) - pos)
        a = jnp.clip(action, -1.0, 1.0)
        terms = {
            "reach": 1.0 - jnp.tanh(10.0 * dist),
            "contact": 0.5 * jnp.mean(flags[:3]) + 0.5 * flags[3],
            "lift": jnp.clip(height / cfg.lift_height, 0.0, 1.0),
            "success": success.astype(jnp.float32),
            "action": -jnp.mean(a * a),
        }
        t = info["t"] + 1
        rewards, potential = self.score(terms, cfg.reward, success, t, info["potential"])
        info = {**info, "wrist_target": target, "hold": hold, "t": t, "potential": potential}
        return self.end_step(
            state,
            data,
            rewards,
            success,
            info,
            {"height": height},
            lambda d: self._obs(d, info, touching=flags),
        )

    def _obs(self, data: mjx.Data, info: dict, touching: jax.Array | None = None) -> jax.Array:
        """Privileged state [82]: hand (44), fingertips and grasp point relative to the object
        (15), object pose, velocity and size (16), contact flags (5), height above rest (1) and
        hold progress (1)."""
        pos, quat = self.object_pose(data, "object")
        pos = pos + jnp.array(self.config.object_pos_bias)
        tips = (self.tip_pos(data) - pos).reshape(-1)
        grasp = self.grasp_pos(data) - pos
        return jnp.concatenate(
            [
                self.hand_obs(data),
                tips,
                grasp,
                pos,
                quat,
                self.object_vel(data, "object"),
                info["obj_size"],
                self.contact_flags(data, "object") if touching is None else touching,
                (pos[2] - info["rest_z"])[None],
                (info["hold"] / self.config.hold_steps)[None].astype(jnp.float32),
            ]
        )
