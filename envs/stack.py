"""Stack: put one cube on top of another.

RFS (Su et al., ICLR 2026), simulation task "Stack". The lower cube (``base``) is usually heavier
and sits at a random pose at a reachable distance from the cube to stack; both sizes are drawn
per episode. Success (``PlaceEnv``): the top cube centred on the lower one within
``xy_tolerance``, at the height of the two stacked within ``z_tolerance``, released and at rest
for ``settle_time``. To keep the contact count low the lower cube collides with the table, the
top cube and, by default, only the fingertip pads (``base_hand_contacts``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from mujoco import mjx

from envs.config import ObjectConfig, rest_height, sample_away, sample_object
from envs.hand.mjcf import ObjectSpec
from envs.place import PlaceConfig, PlaceEnv, object_info


@dataclasses.dataclass(frozen=True)
class StackConfig(PlaceConfig):
    """The stack task (its success and reward settings are ``PlaceConfig``'s)."""

    object: ObjectConfig = ObjectConfig(
        size_min=(0.02, 0.02, 0.02), size_max=(0.026, 0.026, 0.026), mass_range=(0.05, 0.15)
    )
    """The cube to stack."""
    base: ObjectConfig = ObjectConfig(
        size_min=(0.028, 0.028, 0.025),
        size_max=(0.036, 0.036, 0.032),
        mass_range=(0.3, 0.6),
        xy_range=(0.0, 0.0),
    )
    """The lower cube (its position is drawn from ``base_distance``, not ``xy_range``)."""
    base_distance: tuple[float, float] = (0.13, 0.2)
    """Range of the lower cube's horizontal distance from the top cube (m)."""
    base_bound: float = 0.2
    """The lower cube stays within this half-range of the workspace centre in x and y (m)."""
    base_hand_contacts: str = "tips"
    """Hand geoms the lower cube collides with: "tips" (fingertip pads), "hand" or "none"."""
    episode_length: int = 200
    xy_tolerance: float = 0.025
    """Largest horizontal offset of the top cube's centre from the lower one's (m): within the
    smallest lower cube's half-width (0.028), so the top cube's centre of mass is always over
    the face it rests on."""
    z_tolerance: float = 0.01
    settle_time: float = 1.0


class Stack(PlaceEnv):
    """Single-instance stack env on the brax ``Env`` interface."""

    def __init__(self, config: StackConfig = StackConfig()):
        self.config = config
        top = ObjectSpec("object", config.object.shape, config.object.sizes[1])
        base = ObjectSpec(
            "base",
            config.base.shape,
            config.base.sizes[1],
            rgba="0.2 0.4 0.85 1",
            hand_contacts=config.base_hand_contacts,
        )
        super().__init__(config.hand, (top, base))

    def sample_scene(self, key: jax.Array) -> tuple[dict, dict, None]:
        cfg = self.config
        k_top, k_base, k_xy = jax.random.split(key, 3)
        top = sample_object(k_top, cfg.object)
        xy = sample_away(k_xy, top["pos"][:2], cfg.base_distance, cfg.base_bound)
        base = sample_object(k_base, cfg.base, xy=xy)
        info = {**object_info(top), **object_info(base, "base"), "rest_z": top["rest_z"]}
        poses = {"object": (top["pos"], top["quat"]), "base": (base["pos"], base["quat"])}
        return info, poses, None

    def model(self, info: dict) -> mjx.Model:
        m = super().model(info)
        return self.model_with_object(
            "base", info["base_size"], info["base_mass"], info["base_friction"], model=m
        )

    def goal(self, data: mjx.Data, info: dict) -> jax.Array:
        base, _ = self.object_pose(data, "base")
        top_of_base = base[2] + rest_height(self.config.base.shape, info["base_size"])
        return base.at[2].set(top_of_base + info["rest_z"])

    def scene_obs(self, data: mjx.Data, info: dict) -> jax.Array:
        """The lower cube's pose, velocity and size (16)."""
        pos, quat = self.object_pose(data, "base")
        return jnp.concatenate([pos, quat, self.object_vel(data, "base"), info["base_size"]])
