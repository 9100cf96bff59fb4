"""Config helpers shared by every task: object sets and command-line style overrides."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from envs.hand import constants as C

# Default MuJoCo geom sizes per shape: (half-x, half-y, half-z) for boxes and ellipsoids,
# (radius, half-length, unused) for cylinders and capsules, (radius, unused, unused) for spheres.
DEFAULT_SIZE_RANGES = {
    "box": ((0.02, 0.02, 0.02), (0.035, 0.035, 0.04)),
    "cylinder": ((0.02, 0.025, 0.0), (0.03, 0.04, 0.0)),
    "sphere": ((0.025, 0.0, 0.0), (0.035, 0.0, 0.0)),
    "capsule": ((0.018, 0.02, 0.0), (0.025, 0.035, 0.0)),
    "ellipsoid": ((0.025, 0.025, 0.025), (0.035, 0.035, 0.04)),
}


@dataclasses.dataclass(frozen=True)
class ObjectConfig:
    """The object drawn each episode. Sizes are MuJoCo geom sizes for the shape; leave them
    ``None`` for the shape's default range."""

    shape: str = "box"
    """One of box, cylinder, sphere, capsule, ellipsoid."""
    size_min: tuple[float, float, float] | None = None
    """Lower bound of the geom size (per component)."""
    size_max: tuple[float, float, float] | None = None
    """Upper bound of the geom size (per component)."""
    mass_range: tuple[float, float] = (0.05, 0.25)
    """Object mass (kg), uniform."""
    friction_range: tuple[float, float] = (0.6, 1.2)
    """Sliding friction of the object's contacts, uniform."""
    xy_range: tuple[float, float] = (0.1, 0.1)
    """Half-range of the initial x, y position around the workspace centre (m)."""
    yaw_range: float = 3.1416
    """Half-range of the initial yaw (rad)."""

    def __post_init__(self):
        if self.shape not in C.OBJECT_SHAPES:
            raise ValueError(f"unknown object shape {self.shape!r}; valid: {C.OBJECT_SHAPES}")
        lo, hi = self.sizes
        if any(a > b for a, b in zip(lo, hi, strict=True)):
            raise ValueError(f"size_min {lo} must not exceed size_max {hi}")
        if self.mass_range[0] <= 0 or self.mass_range[0] > self.mass_range[1]:
            raise ValueError(f"mass_range must be positive and increasing, got {self.mass_range}")

    @property
    def sizes(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        lo, hi = DEFAULT_SIZE_RANGES[self.shape]
        return tuple(self.size_min or lo), tuple(self.size_max or hi)


def rest_height(shape: str, size):
    """Height of the object's centre when it rests on the table in its initial orientation."""
    if shape in ("box", "ellipsoid"):
        return size[2]
    if shape == "cylinder":
        return size[1]
    return size[0]  # sphere, and capsules lying on their side


def sample_object(key: jax.Array, cfg: ObjectConfig, xy: jax.Array | None = None) -> dict:
    """One episode's object: geom size, mass, friction, yaw and resting pose on the table.

    ``xy`` places it (e.g. relative to another object); by default it is uniform within
    ``cfg.xy_range`` of the workspace centre."""
    k_size, k_mass, k_fric, k_xy, k_yaw = jax.random.split(key, 5)
    lo, hi = cfg.sizes
    size = jax.random.uniform(k_size, (3,), minval=jnp.array(lo), maxval=jnp.array(hi))
    mass = jax.random.uniform(k_mass, (), minval=cfg.mass_range[0], maxval=cfg.mass_range[1])
    friction = jax.random.uniform(
        k_fric, (), minval=cfg.friction_range[0], maxval=cfg.friction_range[1]
    )
    if xy is None:
        xy = jax.random.uniform(k_xy, (2,), minval=-1.0, maxval=1.0) * jnp.array(cfg.xy_range)
    yaw = jax.random.uniform(k_yaw, (), minval=-1.0, maxval=1.0) * cfg.yaw_range
    rest_z = rest_height(cfg.shape, size)
    return {
        "size": size,
        "mass": mass,
        "friction": friction,
        "rest_z": rest_z,
        "pos": jnp.array([xy[0], xy[1], rest_z + 1e-3]),
        "quat": jnp.array([jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)]),
    }


def sample_away(
    key: jax.Array, origin: jax.Array, distance: tuple[float, float], bound: float
) -> jax.Array:
    """An xy point at a uniform direction and a distance in ``distance`` from ``origin``, kept
    inside the square of half-side ``bound`` (a point that would leave it is mirrored back, so
    the distance only shrinks where the square is too small for it)."""
    k_dir, k_dist = jax.random.split(key)
    angle = jax.random.uniform(k_dir, (), minval=-jnp.pi, maxval=jnp.pi)
    r = jax.random.uniform(k_dist, (), minval=distance[0], maxval=distance[1])
    xy = origin + r * jnp.array([jnp.cos(angle), jnp.sin(angle)])
    # Mirror about the nearer edge, then clip what is still outside.
    xy = jnp.where(jnp.abs(xy) > bound, origin - (xy - origin), xy)
    return jnp.clip(xy, -bound, bound)


def _typed(key: str, value: Any, current: Any) -> Any:
    """``value`` as the type of the field's ``current`` value, or a ``ValueError`` naming both
    (an override like ``object.mass_range=abc`` would otherwise fail deep inside the env)."""
    if current is None:
        return value
    if isinstance(current, bool):
        ok = isinstance(value, bool)
    elif isinstance(current, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(current, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(current, str):
        ok = isinstance(value, str)
    elif isinstance(current, tuple):
        ok = isinstance(value, list | tuple) and (
            not current or len(value) == len(current) or not isinstance(current[0], int | float)
        )
        if ok and current:
            value = tuple(_typed(key, v, current[0]) for v in value)
    else:
        ok = True
    if not ok:
        raise ValueError(
            f"override {key}={value!r} has the wrong type: expected a value like {current!r}"
        )
    return value


def apply_overrides(cfg: Any, overrides: dict[str, Any], _prefix: str = "") -> Any:
    """Return ``cfg`` with ``overrides`` applied. Keys are field names, dotted for nested configs
    (``"object.shape"``), or nested dicts (``object={"shape": "sphere"}``). An unknown key raises
    a ``ValueError`` listing the valid ones, and so does a value of the wrong type."""
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in fields:
            raise ValueError(
                f"unknown config key {_prefix + key!r} for {type(cfg).__name__}; valid keys: "
                f"{', '.join(valid_keys(cfg))}"
            )
        sub = getattr(cfg, head)
        if rest:
            nested.setdefault(head, {})[rest] = value
        elif isinstance(value, dict) and dataclasses.is_dataclass(sub):
            nested.setdefault(head, {}).update(value)
        else:
            changes[head] = _typed(_prefix + key, value, sub)
    for head, sub_overrides in nested.items():
        changes[head] = apply_overrides(getattr(cfg, head), sub_overrides, f"{_prefix}{head}.")
    return dataclasses.replace(cfg, **changes)


def valid_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every overridable key of a (nested) config dataclass, dotted."""
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += valid_keys(value, prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
