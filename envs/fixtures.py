"""Static task geometry (walls, open boxes) whose pose is drawn per episode.

Fixtures are world geoms written into the MJCF once; like ``HandEnv.model_with_object`` for an
object's size, their pose is set in the model per env from ``state.info``, so under ``vmap``
only ``geom_pos`` and ``geom_quat`` become batched. They collide only through explicit pairs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from mujoco import mjx


def box_xml(name: str, size, rgba: str = "0.55 0.45 0.35 1") -> str:
    """A static box geom (MuJoCo half-sizes); its pose is set per episode."""
    half = " ".join(f"{s:.6g}" for s in size)
    return f'<geom name="{name}" type="box" size="{half}" rgba="{rgba}"/>'


def yaw_quat(yaw: jax.Array) -> jax.Array:
    """Quaternion [4] (w, x, y, z) of a rotation by ``yaw`` about the world z axis."""
    return jnp.array([jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)])


def rotate(yaw: jax.Array, xy: jax.Array) -> jax.Array:
    """Rotate planar vectors ``xy`` [..., 2] by ``yaw``."""
    c, s = jnp.cos(yaw), jnp.sin(yaw)
    return jnp.stack([c * xy[..., 0] - s * xy[..., 1], s * xy[..., 0] + c * xy[..., 1]], -1)


def quat_yaw(quat: jax.Array) -> jax.Array:
    """Yaw of a (w, x, y, z) quaternion."""
    w, x, y, z = quat[0], quat[1], quat[2], quat[3]
    return jnp.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def place(model: mjx.Model, geoms: np.ndarray, pos: jax.Array, yaw: jax.Array) -> mjx.Model:
    """The model with world geoms ``geoms`` [N] at positions ``pos`` [N, 3], all turned by
    ``yaw`` about z."""
    quat = jnp.broadcast_to(yaw_quat(yaw), (len(geoms), 4))
    return model.replace(
        geom_pos=model.geom_pos.at[geoms].set(pos),
        geom_quat=model.geom_quat.at[geoms].set(quat),
    )
