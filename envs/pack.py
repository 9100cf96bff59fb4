"""Pack: put an object into an open box.

The box is four static walls standing on the table (the table is its bottom), at a pose drawn
per episode (``envs.fixtures.place``) a reachable distance from the object, which is drawn as in
grasp. Success is ``PlaceEnv``'s with the goal at the box's middle, resting on the table, and
tolerances that make it the packing rule: the object's centre within ``xy_tolerance`` (at most
the box's inner half-width, so inside the walls) and within ``z_tolerance`` of its resting
height (checked against the rim, so below it), touched by no part of the hand and at rest, for
``settle_time``. The episode ends on success.

Contact pairs: 18 -- grasp's 14 (object against the palm and the 8 finger pad capsules, the
table, and the 4 fingertips against the table) plus the object against each wall (box-box).
The hand passes through the walls: the object, not the hand, is what the box must contain, and
the hand's 9 contact geoms against 4 walls would be 36 more pairs (mostly box-box and
capsule-box, the costly kinds).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from mujoco import mjx

from envs import fixtures
from envs.config import rest_height, sample_away, sample_object
from envs.hand.mjcf import ObjectSpec
from envs.place import PlaceConfig, PlaceEnv, object_info

WALLS = tuple(f"box_wall{i}" for i in range(4))


@dataclasses.dataclass(frozen=True)
class BoxConfig:
    """The open box: four walls on the table."""

    inner_half: tuple[float, float] = (0.065, 0.065)
    """Half-extents of the inside (m)."""
    wall_half_thickness: float = 0.006
    """Half-thickness of the walls (m)."""
    rim_height: float = 0.06
    """Height of the walls above the table (m)."""
    distance: tuple[float, float] = (0.17, 0.21)
    """Range of the box's horizontal distance from the object's start (m)."""
    bound: float = 0.2
    """The box's middle stays within this half-range of the workspace centre in x and y (m)."""
    yaw_range: float = 3.1416
    """Half-range of the box's yaw (rad)."""

    def walls(self) -> tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]:
        """(half-size, position in the box frame) of each wall."""
        (ix, iy), t, h = self.inner_half, self.wall_half_thickness, self.rim_height / 2
        return (
            ((t, iy + 2 * t, h), (ix + t, 0.0, h)),
            ((t, iy + 2 * t, h), (-ix - t, 0.0, h)),
            ((ix, t, h), (0.0, iy + t, h)),
            ((ix, t, h), (0.0, -iy - t, h)),
        )


@dataclasses.dataclass(frozen=True)
class PackConfig(PlaceConfig):
    """The pack task (its reward and settling settings are ``PlaceConfig``'s)."""

    box: BoxConfig = BoxConfig()
    xy_tolerance: float = 0.06
    """Largest horizontal distance of the object's centre from the box's middle for success
    (m); at most the box's inner half-width."""
    z_tolerance: float = 0.015
    """Largest height of the object's centre above its resting height for success (m); its
    largest resting height plus this must stay below the rim."""

    def __post_init__(self):
        if self.xy_tolerance > min(self.box.inner_half):
            raise ValueError(
                f"xy_tolerance {self.xy_tolerance} must not exceed the box's inner half-width "
                f"{min(self.box.inner_half)}"
            )
        top = float(rest_height(self.object.shape, self.object.sizes[1])) + self.z_tolerance
        if top > self.box.rim_height:
            raise ValueError(
                f"the largest object's resting height plus z_tolerance ({top:.3f}) must stay "
                f"below the rim ({self.box.rim_height})"
            )


class Pack(PlaceEnv):
    """Single-instance pack env on the brax ``Env`` interface."""

    def __init__(self, config: PackConfig = PackConfig()):
        self.config = config
        spec = ObjectSpec("object", config.object.shape, config.object.sizes[1])
        walls = config.box.walls()
        xml = "".join(fixtures.box_xml(n, size) for n, (size, _) in zip(WALLS, walls, strict=True))
        pairs = [("object", n) for n in WALLS]
        super().__init__(config.hand, (spec,), extra_world=xml, extra_pairs=pairs)
        self._walls = jnp.array([self.mj_model.geom(n).id for n in WALLS])
        self._wall_pos = jnp.array([pos for _, pos in walls])

    def sample_scene(self, key: jax.Array) -> tuple[dict, dict, None]:
        cfg = self.config
        k_obj, k_box, k_yaw = jax.random.split(key, 3)
        obj = sample_object(k_obj, cfg.object)
        box = sample_away(k_box, obj["pos"][:2], cfg.box.distance, cfg.box.bound)
        yaw = jax.random.uniform(k_yaw, (), minval=-1.0, maxval=1.0) * cfg.box.yaw_range
        info = {**object_info(obj), "rest_z": obj["rest_z"], "box_xy": box, "box_yaw": yaw}
        return info, {"object": (obj["pos"], obj["quat"])}, None

    def model(self, info: dict) -> mjx.Model:
        yaw = info["box_yaw"]
        xy = info["box_xy"] + fixtures.rotate(yaw, self._wall_pos[:, :2])
        pos = jnp.concatenate([xy, self._wall_pos[:, 2:]], axis=1)
        return fixtures.place(super().model(info), self._walls, pos, yaw)

    def goal(self, data: mjx.Data, info: dict) -> jax.Array:
        return jnp.concatenate([info["box_xy"], info["rest_z"][None]])

    def scene_obs(self, data: mjx.Data, info: dict) -> jax.Array:
        """The object's (x, y) in the box frame and the box's yaw as cos, sin [4]."""
        pos, _ = self.object_pose(data, "object")
        yaw = info["box_yaw"]
        local = fixtures.rotate(-yaw, pos[:2] - info["box_xy"])
        return jnp.concatenate([local, jnp.stack([jnp.cos(yaw), jnp.sin(yaw)])])
