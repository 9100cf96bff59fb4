"""Pick & place: grasp an object and put it down on a marked target on the table.

RFS (Su et al., ICLR 2026), simulation task "Pick & Place". The target's xy is drawn per
episode at a reachable distance from the object, shown by a flat visual-only disc (a mocap body
with no collision pairs, so it costs nothing in the solver) whose radius is the success
tolerance, and given in the observation. Success (``PlaceEnv``): the object within
``xy_tolerance`` of the target on the table, released and at rest for ``settle_time``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from mujoco import mjx

from envs.config import sample_away, sample_object
from envs.hand.mjcf import ObjectSpec
from envs.place import PlaceConfig, PlaceEnv, object_info


@dataclasses.dataclass(frozen=True)
class PickPlaceConfig(PlaceConfig):
    """The pick & place task (its success and reward settings are ``PlaceConfig``'s)."""

    target_distance: tuple[float, float] = (0.10, 0.18)
    """Range of the target's horizontal distance from the object's start (m)."""
    target_bound: float = 0.2
    """The target stays within this half-range of the workspace centre in x and y (m)."""


class PickPlace(PlaceEnv):
    """Single-instance pick & place env on the brax ``Env`` interface."""

    def __init__(self, config: PickPlaceConfig = PickPlaceConfig()):
        self.config = config
        spec = ObjectSpec("object", config.object.shape, config.object.sizes[1])
        target = f"""
    <body name="target" mocap="true" pos="0 0 0">
      <geom name="target" type="cylinder" size="{config.xy_tolerance:.4f} 0.001"
            rgba="0.2 0.75 0.3 0.5"/>
    </body>"""
        super().__init__(config.hand, (spec,), extra_world=target)

    def sample_scene(self, key: jax.Array) -> tuple[dict, dict, jax.Array]:
        cfg = self.config
        k_obj, k_target = jax.random.split(key)
        obj = sample_object(k_obj, cfg.object)
        target = sample_away(k_target, obj["pos"][:2], cfg.target_distance, cfg.target_bound)
        info = {**object_info(obj), "rest_z": obj["rest_z"], "target": target}
        mocap = jnp.array([[target[0], target[1], 0.001]])
        return info, {"object": (obj["pos"], obj["quat"])}, mocap

    def goal(self, data: mjx.Data, info: dict) -> jax.Array:
        return jnp.array([info["target"][0], info["target"][1], info["rest_z"]])
