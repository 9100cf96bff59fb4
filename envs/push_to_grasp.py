"""Push to grasp: slide a bar along a wall until it can be grasped, then pick it up.

The object (by default a bar 16-18 cm long) lies on the table with its long side against a
wall. A direct grasp fails: across the bar, one side is the wall (the fingertips collide with
it, so no finger gets behind the bar); along the bar, it is longer than the power and pinch
grasps close around (only nearly straight fingertips reach its ends, with little grip). The
hand must first push the bar along the wall, past either end of the wall, until its middle
can be grasped across; then grasp and lift it. Success is as in ``grasp``: raised
at least ``lift_height`` above its resting height and held there for ``hold_time``.

Why this variant of "push to make graspable": pushing a tall object's end face along a fence is
a stable, well-conditioned push that MJX simulates with few contacts, and either wall end is a
valid goal (two strategies for the expert). The alternatives considered -- a thin plate slid
over a ledge, or pivoted up against a wall -- need sphere-on-1 cm edge pushes and under-the-
plate grasps that are fragile at ``sim_dt`` 0.01 with the pads contact set.

Contact pairs: 19 -- grasp's 14 (object against the palm and the 8 finger pad capsules, the
table, and the 4 fingertips against the table) plus object-wall (box-box) and the 4
fingertips against the wall (sphere-box). The rest of the hand passes through the wall.

The layout (wall and bar together) is turned by a random yaw and shifted per episode; the wall
pose is set in the model per env (``envs.fixtures.place``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from brax.envs.base import State
from mujoco import mjx

from envs import fixtures
from envs.config import ObjectConfig, sample_object
from envs.hand import constants as C
from envs.hand.base import HandConfig, HandEnv
from envs.hand.mjcf import ObjectSpec
from envs.place import object_info

WALL = "wall"


@dataclasses.dataclass(frozen=True)
class PushToGraspRewardConfig:
    """Scales of the named reward terms (logged as ``reward/<name>``)."""

    reach: float = 0.5
    """Grasp point near the object: ``1 - tanh(10 d)``."""
    push: float = 1.0
    """How far the object's centre is past the nearer wall end, as a fraction of
    ``clearance`` (clipped to [0, 1])."""
    contact: float = 0.5
    """Fraction of thumb + fingers touching the object, thumb weighted as the three fingers."""
    lift: float = 2.0
    """Height above rest, as a fraction of ``lift_height`` (clipped to [0, 1])."""
    success: float = 10.0
    """Once, when the hold time is reached; as in grasp, the success step also pays the most
    the shaping terms could still have paid until the time limit."""
    action: float = 0.01
    """Penalty on the squared action norm (per dimension)."""


@dataclasses.dataclass(frozen=True)
class WallConfig:
    """The static wall the object starts against."""

    half_length: float = 0.11
    """Half-length along the object's long axis (m)."""
    half_thickness: float = 0.01
    """Half-thickness (m)."""
    height: float = 0.08
    """Height above the table (m); taller than the fingertips can reach over when grasping."""
    gap: float = 0.001
    """Initial gap between the object and the wall (m)."""
    along_range: float = 0.01
    """Half-range of the object's initial offset along the wall from its middle (m)."""


@dataclasses.dataclass(frozen=True)
class PushToGraspConfig:
    """The push-to-grasp task. The object's long axis is its local y; ``object.xy_range`` and
    ``object.yaw_range`` shift and turn the whole layout (wall and object)."""

    hand: HandConfig = HandConfig()
    object: ObjectConfig = ObjectConfig(
        size_min=(0.022, 0.08, 0.02), size_max=(0.03, 0.09, 0.03), xy_range=(0.05, 0.05)
    )
    wall: WallConfig = WallConfig()
    reward: PushToGraspRewardConfig = PushToGraspRewardConfig()
    episode_length: int = 150
    """Control steps per episode (7.5 s at 20 Hz)."""
    lift_height: float = 0.10
    """How far above its resting height the object must be raised (m)."""
    hold_time: float = 1.0
    """How long it must stay there (s)."""
    clearance: float = 0.07
    """How far past a wall end the object's centre must be for a grasp across it to clear the
    wall (m); only shapes the ``push`` reward."""
    wrist_home: tuple[float, float, float] = (0.0, 0.0, 0.20)
    """Initial wrist position (m)."""
    wrist_home_noise: float = 0.05
    """Half-range of the uniform noise on the initial wrist position (m)."""

    def __post_init__(self):
        longest = float(half_length(self.object.shape, self.object.sizes[1]))
        if longest + self.wall.along_range > self.wall.half_length:
            raise ValueError(
                f"the object (half-length up to {longest:.3f} m, offset up to "
                f"{self.wall.along_range} m) must start within the wall's half-length "
                f"{self.wall.half_length} m"
            )

    @property
    def hold_steps(self) -> int:
        return max(1, round(self.hold_time / self.hand.ctrl_dt))


def half_length(shape: str, size):
    """Half-extent of the object along its long axis (local y) in its initial pose."""
    if shape in ("box", "ellipsoid"):
        return size[1]
    if shape == "capsule":
        return size[1] + size[0]  # capsules lie along their local y
    return size[0]


class PushToGrasp(HandEnv):
    """Single-instance push-to-grasp env on the brax ``Env`` interface."""

    shaping_terms = ("reach", "push", "contact", "lift")

    def __init__(self, config: PushToGraspConfig = PushToGraspConfig()):
        self.config = config
        w = config.wall
        spec = ObjectSpec("object", config.object.shape, config.object.sizes[1])
        wall = fixtures.box_xml(WALL, (w.half_thickness, w.half_length, w.height / 2))
        pairs = [("object", WALL)] + [(f"{f}_tip", WALL) for f in C.FINGERS]
        super().__init__(config.hand, (spec,), extra_world=wall, extra_pairs=pairs)
        self._wall = jnp.array([self.mj_model.geom(WALL).id])

    def _model(self, info: dict) -> mjx.Model:
        model = self.model_with_object(
            "object", info["obj_size"], info["obj_mass"], info["obj_friction"]
        )
        return fixtures.place(model, self._wall, info["wall_pos"][None], info["wall_yaw"])

    def reset(self, rng: jax.Array) -> State:
        cfg, wcfg = self.config, self.config.wall
        k_obj, k_along, k_wrist = jax.random.split(rng, 3)
        # The object's drawn pose places the layout: the wall lies along its long side.
        obj = sample_object(k_obj, cfg.object)
        yaw = fixtures.quat_yaw(obj["quat"])
        along = jax.random.uniform(k_along, (), minval=-1.0, maxval=1.0) * wcfg.along_range
        # size[0] is every shape's half-extent across its long axis (local x).
        across = obj["size"][0] + wcfg.gap + wcfg.half_thickness
        wall_xy = obj["pos"][:2] + fixtures.rotate(yaw, jnp.stack([across, along]))
        info = {
            "wrist_target": self.sample_wrist(k_wrist, cfg.wrist_home, cfg.wrist_home_noise),
            **object_info(obj),
            "rest_z": obj["rest_z"],
            "wall_pos": jnp.concatenate([wall_xy, jnp.array([wcfg.height / 2])]),
            "wall_yaw": yaw,
            "hold": jnp.zeros((), jnp.int32),
            "t": jnp.zeros((), jnp.int32),
            "potential": self.initial_potential(),
        }
        data = self.initial_data(
            self._model(info), info["wrist_target"], {"object": (obj["pos"], obj["quat"])}
        )
        metrics = {
            "success": jnp.zeros(()),
            "height": jnp.zeros(()),
            "clearance": jnp.zeros(()),
            **{f"reward/{k}": jnp.zeros(()) for k in self._reward_names},
        }
        obs = self._obs(data, info, touching=jnp.zeros(5))
        return State(data, obs, jnp.zeros(()), jnp.zeros(()), metrics, info)

    @property
    def _reward_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(PushToGraspRewardConfig))

    def wall_frame(self, pos: jax.Array, info: dict) -> jax.Array:
        """A world point's (x, y) in the wall frame: x across the wall (positive behind it),
        y along it, from its middle."""
        return fixtures.rotate(-info["wall_yaw"], pos[:2] - info["wall_pos"][:2])

    def clearance(self, pos: jax.Array, info: dict) -> jax.Array:
        """How far the object's centre is past the nearer wall end (m; negative: beside it)."""
        return jnp.abs(self.wall_frame(pos, info)[1]) - self.config.wall.half_length

    def step(self, state: State, action: jax.Array) -> State:
        cfg, info = self.config, state.info
        data, target = self._physics_step(
            self._model(info), state.pipeline_state, info["wrist_target"], action
        )

        pos, _ = self.object_pose(data, "object")
        height = pos[2] - info["rest_z"]
        lifted = height >= cfg.lift_height
        hold = jnp.where(lifted, info["hold"] + 1, 0)
        success = hold >= cfg.hold_steps
        flags = self.contact_flags(data, "object")
        dist = jnp.linalg.norm(self.grasp_pos(data) - pos)
        clearance = self.clearance(pos, info)
        a = jnp.clip(action, -1.0, 1.0)
        terms = {
            "reach": 1.0 - jnp.tanh(10.0 * dist),
            "push": jnp.clip(clearance / cfg.clearance, 0.0, 1.0),
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
            {"height": height, "clearance": clearance},
            lambda d: self._obs(d, info, touching=flags),
        )

    def _obs(self, data: mjx.Data, info: dict, touching: jax.Array) -> jax.Array:
        """Privileged state [87]: hand (44), fingertips and grasp point relative to the object
        (15), object pose, velocity and size (16), the object in the wall frame and the wall's
        yaw as cos, sin (4), contact flags (5), clearance past the wall end (1), height above
        rest (1) and hold progress (1)."""
        pos, quat = self.object_pose(data, "object")
        tips = (self.tip_pos(data) - pos).reshape(-1)
        grasp = self.grasp_pos(data) - pos
        yaw = info["wall_yaw"]
        return jnp.concatenate(
            [
                self.hand_obs(data),
                tips,
                grasp,
                pos,
                quat,
                self.object_vel(data, "object"),
                info["obj_size"],
                self.wall_frame(pos, info),
                jnp.stack([jnp.cos(yaw), jnp.sin(yaw)]),
                touching,
                self.clearance(pos, info)[None],
                (pos[2] - info["rest_z"])[None],
                (info["hold"] / self.config.hold_steps)[None].astype(jnp.float32),
            ]
        )
