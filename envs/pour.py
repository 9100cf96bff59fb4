"""Pour: grasp a cup holding a few balls and pour them into a bowl.

RFS (Su et al., ICLR 2026) lists pouring among the dexterous skills its steering must keep
multimodal. Here the pour needs the wrist's roll: held from the side (palm on a wall, fingers
and thumb on the two walls next to it), the cup tips about the hand's x axis, and the balls need
it tipped well past 90 degrees, which the wrist's roll range (+-1.6 rad) covers only from a grasp
taken with the hand rolled most of the way to one side and a pour that rolls it through to the
other.

The cup is one free body: a bottom and four walls (boxes) that hold the balls, and a box "hull"
spanning the same outside that is the only cup geom the hand and the table touch (the balls never
touch it). Each ball is a sphere on three slide joints (x, y, z; its qpos is its centre) with
frictionless contacts (condim 1): a ball's rotation does nothing without friction, so it has none,
and the slide joints' damping is a drag that stops a spilled ball on the table. The bowl is four
static walls on the table (the table is its bottom) at a pose drawn per episode
(``envs.fixtures.place``).
Success: at least ``success_fraction`` of the balls have their centres inside the bowl's walls,
below its rim and out of the cup; the episode ends on success.

Contact pairs (default, 4 balls): 60, against grasp's 14 -- the hand's 9 pad geoms against the
hull, the hull and the 4 fingertips against the table (as grasp), and per ball the table, the
cup's bottom and 4 walls and the bowl's 4 walls (10, sphere-box or sphere-plane), plus ball-ball
(6): 74 potential contacts (grasp 28), of which the balls' 46 are frictionless, one constraint row
each, so 158 contact rows (grasp 112), and 40 degrees of freedom (grasp 28). The cup and the hand
pass through the bowl, and the balls through the hand.

Measured throughput, ``rfs_jax.bench.bench_env(envs.make(task), 256)`` for grasp then pour in
one process (50 random-action control steps after compile, best of two, 256 envs, on the shared
2-core CPU with other jobs running, load average about 4.5): pour 426 control steps/s, grasp
914, a ratio of 2.15 -- a little over the project's 2x. The difference is the balls (not
profiled further): 12 more dofs in a dense Newton solve (40 against 28) and 46 more contacts,
each one frictionless row (158 rows against 112). With five free-jointed balls and friction on
every ball contact (74 pairs, 88 potential contacts of 4 rows each, 58 dofs) pour ran 29 steps/s
against grasp's 585 (two other loaded runs), some 20 times slower.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import State
from mujoco import mjx

from envs import fixtures
from envs.config import sample_away
from envs.hand.base import HandConfig, HandEnv
from envs.hand.mjcf import hand_contact_geoms

BOWL = tuple(f"bowl_wall{i}" for i in range(4))
CUP_RGBA = "0.3 0.5 0.8 1"
CUP_INNER = ("cup_bottom", *(f"cup_wall{i}" for i in range(4)))


@dataclasses.dataclass(frozen=True)
class PourRewardConfig:
    """Scales of the named reward terms (logged as ``reward/<name>``)."""

    reach: float = 0.5
    """Grasp point near the cup: ``1 - tanh(10 d)``."""
    contact: float = 0.5
    """Thumb + fingers touching the cup, thumb weighted as the three fingers."""
    lift: float = 1.0
    """Cup height above rest as a fraction of ``lift_height`` (clipped to [0, 1])."""
    carry: float = 1.0
    """Cup mouth above the bowl, ``1 - tanh(5 d)`` of their horizontal distance, times the lift
    fraction."""
    pour: float = 2.0
    """Fraction of the balls in the bowl."""
    spill: float = 2.0
    """Penalty, paid once as it happens: the rise of the most balls (as a fraction) that have
    lain on the table outside the bowl so far this episode, so that an episode's spill costs at
    most this scale in all. A ball spilled costs what a ball poured pays. (Paid every step it
    lies there, as it once was, a spill early in a 200-step episode cost about 20, twice a
    success: RFS-PPO learned never to lift the cup, its return rising from -18 to -0.9 while
    its success fell from 0.20 to 0.)"""
    success: float = 10.0
    """Once, on success; the success step also pays the most the shaping terms could still have
    paid until the time limit (as in grasp)."""
    action: float = 0.01
    """Penalty on the squared action norm (per dimension)."""


@dataclasses.dataclass(frozen=True)
class CupConfig:
    """The cup: a square box open at the top, drawn on the table each episode."""

    inner_half: float = 0.028
    """Half-width of the inside (m)."""
    wall_half_thickness: float = 0.004
    """Half-thickness of the walls and the bottom (m)."""
    height: float = 0.12
    """Outside height (m)."""
    mass_range: tuple[float, float] = (0.06, 0.12)
    """Cup mass without the balls (kg), uniform."""
    friction_range: tuple[float, float] = (0.8, 1.2)
    """Sliding friction of the hand-cup contacts, uniform."""
    xy_range: tuple[float, float] = (0.08, 0.08)
    """Half-range of the initial x, y position around the workspace centre (m)."""
    yaw_range: float = math.pi / 4
    """Half-range of the initial yaw (rad); the cup is symmetric under a quarter turn."""

    @property
    def outer_half(self) -> float:
        return self.inner_half + 2 * self.wall_half_thickness


@dataclasses.dataclass(frozen=True)
class BowlConfig:
    """The bowl: four walls on the table."""

    inner_half: float = 0.07
    """Half-width of the inside (m)."""
    wall_half_thickness: float = 0.006
    """Half-thickness of the walls (m)."""
    rim_height: float = 0.05
    """Height of the walls above the table (m)."""
    distance: tuple[float, float] = (0.18, 0.22)
    """Range of the bowl's horizontal distance from the cup's start (m)."""
    bound: float = 0.2
    """The bowl's middle stays within this half-range of the workspace centre in x and y (m)."""
    yaw_range: float = math.pi / 4
    """Half-range of the bowl's yaw (rad)."""

    def walls(self) -> tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]:
        """(half-size, position in the bowl frame) of each wall."""
        i, t, h = self.inner_half, self.wall_half_thickness, self.rim_height / 2
        return (
            ((t, i + 2 * t, h), (i + t, 0.0, h)),
            ((t, i + 2 * t, h), (-i - t, 0.0, h)),
            ((i, t, h), (0.0, i + t, h)),
            ((i, t, h), (0.0, -i - t, h)),
        )


@dataclasses.dataclass(frozen=True)
class BallConfig:
    """The balls, placed inside the cup at the start.

    Each ball is a sphere on three slide joints (x, y, z: 3 dofs, no rotation) whose contacts
    (table, the cup's bottom and walls, the bowl's walls, the other balls) are frictionless
    (condim 1, one constraint row each): without friction a ball's spin would do nothing."""

    num: int = 4
    """Number of balls (each adds 3 dofs and 10 contact pairs, plus one per other ball)."""
    radius: float = 0.011
    """Ball radius (m)."""
    mass: float = 0.008
    """Ball mass (kg)."""
    damping: float = 0.04
    """Damping of the balls' slide joints (N s / m): a drag on the ball's velocity with a time
    constant of (mass + armature) / damping (0.2 s), so that a spilled ball, which nothing else
    slows on the frictionless table, stops within 0.2 s times its speed (0.1 m from 0.5 m/s).
    It also caps the fall at g mass / damping (2 m/s; a ball poured from 0.1 m lands at about
    1.1 m/s, against 1.4 without it)."""
    armature: float = 2e-4
    """Armature of the balls' slide joints (kg): inertia added to the mass. Under the explicit
    integrator keep sim_dt * damping / (mass + armature) well below 1."""
    jitter: float = 0.003
    """Half-range of the uniform noise on each ball's start position in the cup (m)."""


@dataclasses.dataclass(frozen=True)
class PourConfig:
    """The pour task."""

    hand: HandConfig = HandConfig()
    cup: CupConfig = CupConfig()
    bowl: BowlConfig = BowlConfig()
    balls: BallConfig = BallConfig()
    reward: PourRewardConfig = PourRewardConfig()
    episode_length: int = 200
    """Control steps per episode (10 s at 20 Hz)."""
    success_fraction: float = 0.7
    """Fraction of the balls that must be in the bowl."""
    lift_height: float = 0.10
    """Cup height above rest that earns the whole ``lift`` reward (m)."""
    wrist_home: tuple[float, float, float] = (0.0, 0.0, 0.30)
    """Initial wrist position (m): the open fingers clear the cup's rim."""
    wrist_home_noise: float = 0.05
    """Half-range of the uniform noise on the initial wrist position (m)."""

    def __post_init__(self):
        if not 0.0 < self.success_fraction <= 1.0:
            raise ValueError(f"success_fraction must be in (0, 1], got {self.success_fraction}")
        per_layer = 4
        layers = -(-self.balls.num // per_layer)
        room = self.cup.height - 2 * self.cup.wall_half_thickness
        if self.balls.num < 1 or layers * (2 * self.balls.radius + 0.002) > room:
            raise ValueError(
                f"{self.balls.num} balls of radius {self.balls.radius} do not fit in the cup "
                f"({per_layer} per layer, {room:.3f} m of room)"
            )
        # Two balls side by side, each jittered towards the other, must not overlap.
        if self.cup.inner_half < 2 * (self.balls.radius + self.balls.jitter) - 1e-9:
            raise ValueError(
                f"the cup's inner half-width {self.cup.inner_half} must hold two balls side by "
                f"side (radius {self.balls.radius}, jitter {self.balls.jitter})"
            )


def _cup_xml(cup: CupConfig) -> str:
    """The cup body: the hull (its geom carries the mass and is what the hand touches), the
    bottom and the walls (massless, what the balls touch)."""
    o, i, t, hz = cup.outer_half, cup.inner_half, cup.wall_half_thickness, cup.height / 2
    wall_hz = hz - t
    zw = t
    walls = (
        ((t, o, wall_hz), (i + t, 0.0, zw)),
        ((t, o, wall_hz), (-i - t, 0.0, zw)),
        ((i, t, wall_hz), (0.0, i + t, zw)),
        ((i, t, wall_hz), (0.0, -i - t, zw)),
    )
    geoms = [
        f'<geom name="cup_bottom" type="box" size="{o} {o} {t}" pos="0 0 {t - hz}" mass="0"'
        f' rgba="{CUP_RGBA}"/>'
    ]
    for k, (size, pos) in enumerate(walls):
        geoms.append(
            f'<geom name="cup_wall{k}" type="box" size="{_fmt(size)}" pos="{_fmt(pos)}" mass="0"'
            f' rgba="{CUP_RGBA}"/>'
        )
    return f"""
    <body name="cup" pos="0 0 {hz}">
      <freejoint name="cup"/>
      <geom name="cup" type="box" size="{o} {o} {hz}" mass="{cup.mass_range[0]}"
            rgba="0 0 0 0"/>
      {"".join(geoms)}
    </body>"""


def _ball_xml(name: str, balls: BallConfig) -> str:
    """A ball at the world origin on slide joints along x, y, z: its qpos is its centre."""
    joints = "".join(
        f'<joint name="{name}_{a}" type="slide" axis="{axis}" damping="{balls.damping}"'
        f' armature="{balls.armature}"/>'
        for a, axis in (("x", "1 0 0"), ("y", "0 1 0"), ("z", "0 0 1"))
    )
    return f"""
    <body name="{name}">
      {joints}
      <geom name="{name}" type="sphere" size="{balls.radius}" mass="{balls.mass}"
            rgba="0.9 0.8 0.1 1"/>
    </body>"""


def _fmt(v) -> str:
    return " ".join(f"{x:.6g}" for x in v)


class Pour(HandEnv):
    """Single-instance pour env on the brax ``Env`` interface."""

    shaping_terms = ("reach", "contact", "lift", "carry", "pour")

    def __init__(self, config: PourConfig = PourConfig()):
        self.config = config
        balls = tuple(f"ball{i}" for i in range(config.balls.num))
        bowl = config.bowl.walls()
        world = "".join(fixtures.box_xml(n, size) for n, (size, _) in zip(BOWL, bowl, strict=True))
        world += _cup_xml(config.cup) + "".join(_ball_xml(b, config.balls) for b in balls)
        hand = hand_contact_geoms(config.hand.contact_set)
        pairs = [(g, "cup") for g in hand] + [("cup", "table")]
        for i, b in enumerate(balls):
            pairs += [(b, g) for g in ("table", *CUP_INNER, *BOWL, *balls[i + 1 :])]
        super().__init__(config.hand, (), extra_world=world, extra_pairs=pairs)
        # The cup is written here rather than as an ``ObjectSpec`` (it has six geoms), so index it
        # as ``HandEnv`` indexes its objects. The balls are not in ``self._obj``: that is for
        # free bodies (``object_pose``, ``initial_data`` and ``guard`` read a position and a
        # quaternion there), and a ball is three slide joints.
        m = self.mj_model
        geom = m.geom("cup").id
        self._obj["cup"] = dict(
            qadr=int(m.jnt_qposadr[m.joint("cup").id]),
            vadr=int(m.jnt_dofadr[m.joint("cup").id]),
            body=int(m.body("cup").id),
            geom=geom,
            pairs=np.flatnonzero((m.pair_geom1 == geom) | (m.pair_geom2 == geom)),
        )
        self._balls = balls
        slides = np.array([[m.joint(f"{b}_{a}").id for a in "xyz"] for b in balls])
        self._ball_qadr = m.jnt_qposadr[slides]  # [N, 3]
        self._ball_vadr = m.jnt_dofadr[slides]  # [N, 3]
        self._bowl = np.array([m.geom(n).id for n in BOWL])
        self._bowl_pos = jnp.array([pos for _, pos in bowl])
        self._cup_mass = float(m.body_mass[self._obj["cup"]["body"]])
        # Every ball contact is frictionless: one constraint row instead of the pyramid's four.
        ball_geoms = [m.geom(b).id for b in balls]
        m.pair_dim[np.isin(m.pair_geom1, ball_geoms) | np.isin(m.pair_geom2, ball_geoms)] = 1
        self.mjx_model = mjx.put_model(m)

    # ---- scene -----------------------------------------------------------------------------
    def model(self, info: dict) -> mjx.Model:
        """The MJX model with this episode's cup mass and friction and bowl pose."""
        m, cup = self.mjx_model, self._obj["cup"]
        scale = info["cup_mass"] / self._cup_mass
        pairs, friction = cup["pairs"], info["cup_friction"]
        m = m.replace(
            body_mass=m.body_mass.at[cup["body"]].set(info["cup_mass"]),
            body_inertia=m.body_inertia.at[cup["body"]].multiply(scale),
            pair_friction=m.pair_friction.at[pairs, 0].set(friction).at[pairs, 1].set(friction),
        )
        yaw = info["bowl_yaw"]
        xy = info["bowl_xy"] + fixtures.rotate(yaw, self._bowl_pos[:, :2])
        pos = jnp.concatenate([xy, self._bowl_pos[:, 2:]], axis=1)
        return fixtures.place(m, self._bowl, pos, yaw)

    def _ball_start(self, key: jax.Array, cup_pos: jax.Array, yaw: jax.Array) -> jax.Array:
        """[N, 3] ball centres inside the cup: four to a layer, in the corners, plus jitter."""
        cup, balls = self.config.cup, self.config.balls
        n = balls.num
        s = cup.inner_half - balls.radius - balls.jitter
        corners = np.array([(s, s), (-s, s), (-s, -s), (s, -s)], np.float32)
        layer = np.arange(n) // 4
        z = 2 * cup.wall_half_thickness - cup.height / 2 + balls.radius + 0.001
        z = z + layer * (2 * balls.radius + 0.002)
        xy = corners[np.arange(n) % 4] + jax.random.uniform(
            key, (n, 2), minval=-balls.jitter, maxval=balls.jitter
        )
        return jnp.concatenate([cup_pos[:2] + fixtures.rotate(yaw, xy), cup_pos[2] + z[:, None]], 1)

    def reset(self, rng: jax.Array) -> State:
        cfg = self.config
        keys = jax.random.split(rng, 8)
        cup_xy = jax.random.uniform(keys[0], (2,), minval=-1.0, maxval=1.0) * jnp.array(
            cfg.cup.xy_range
        )
        cup_yaw = jax.random.uniform(keys[1], (), minval=-1.0, maxval=1.0) * cfg.cup.yaw_range
        cup_pos = jnp.array([cup_xy[0], cup_xy[1], cfg.cup.height / 2 + 1e-3])
        info = {
            "cup_mass": jax.random.uniform(
                keys[2], (), minval=cfg.cup.mass_range[0], maxval=cfg.cup.mass_range[1]
            ),
            "cup_friction": jax.random.uniform(
                keys[3], (), minval=cfg.cup.friction_range[0], maxval=cfg.cup.friction_range[1]
            ),
            "bowl_xy": sample_away(keys[4], cup_xy, cfg.bowl.distance, cfg.bowl.bound),
            "bowl_yaw": jax.random.uniform(keys[5], (), minval=-1.0, maxval=1.0)
            * cfg.bowl.yaw_range,
        }
        balls = self._ball_start(keys[6], cup_pos, cup_yaw)
        wrist = self.sample_wrist(keys[7], cfg.wrist_home, cfg.wrist_home_noise)
        model = self.model(info)
        data = self.initial_data(model, wrist, {"cup": (cup_pos, fixtures.yaw_quat(cup_yaw))})
        # The balls' slide joints take their centres; kinematics again so that the returned data
        # has them there too (cheap next to a step: no collisions, no solve).
        data = mjx.kinematics(model, data.replace(qpos=data.qpos.at[self._ball_qadr].set(balls)))
        info = {
            **info,
            "wrist_target": wrist,
            "t": jnp.zeros((), jnp.int32),
            "potential": self.initial_potential(),
            "spilled": jnp.zeros(()),
        }
        metrics = {
            "success": jnp.zeros(()),
            "poured": jnp.zeros(()),
            "spilled": jnp.zeros(()),
            **{f"reward/{k}": jnp.zeros(()) for k in self._reward_names},
        }
        obs = self._obs(data, info, jnp.zeros(5), jnp.zeros(()))
        return State(data, obs, jnp.zeros(()), jnp.zeros(()), metrics, info)

    # ---- where the balls are -----------------------------------------------------------------
    def ball_pos(self, data: mjx.Data) -> jax.Array:
        """[N, 3] ball centres."""
        return data.qpos[self._ball_qadr]

    def balls_in_bowl(self, data: mjx.Data, info: dict) -> tuple[jax.Array, jax.Array]:
        """Per ball [N]: in the bowl (centre inside its walls, below its rim and out of the
        cup) and spilled (on the table, outside the bowl and the cup)."""
        cfg = self.config
        p = self.ball_pos(data)
        local = fixtures.rotate(-info["bowl_yaw"], p[:, :2] - info["bowl_xy"])
        inside = jnp.all(jnp.abs(local) < cfg.bowl.inner_half, axis=-1)
        cup_pos, _ = self.object_pose(data, "cup")
        in_cup = jnp.abs((p - cup_pos) @ data.xmat[self._obj["cup"]["body"]])
        in_cup = jnp.all(in_cup < jnp.array([cfg.cup.outer_half] * 2 + [cfg.cup.height / 2]), -1)
        in_bowl = inside & (p[:, 2] < cfg.bowl.rim_height) & ~in_cup
        spilled = ~inside & ~in_cup & (p[:, 2] < 2 * cfg.balls.radius + 0.005)
        return in_bowl, spilled

    def mouth(self, data: mjx.Data) -> jax.Array:
        """[3] the middle of the cup's opening."""
        pos, _ = self.object_pose(data, "cup")
        return pos + data.xmat[self._obj["cup"]["body"]][:, 2] * self.config.cup.height / 2

    # ---- the episode ---------------------------------------------------------------------------
    def guard(
        self, data: mjx.Data, previous: mjx.Data, reward: jax.Array
    ) -> tuple[mjx.Data, jax.Array, jax.Array]:
        """``HandEnv.guard`` (which checks the objects in ``self._obj``: the cup), and a ball
        knocked off the workspace ends the episode too, with the same bounds."""
        data, reward, ended = super().guard(data, previous, reward)
        p = self.ball_pos(data)
        out = (jnp.abs(p[:, 0]) > 0.4) | (jnp.abs(p[:, 1]) > 0.4) | (p[:, 2] < -0.05)
        return data, reward, ended | jnp.any(out)

    @property
    def _reward_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(PourRewardConfig))

    def step(self, state: State, action: jax.Array) -> State:
        cfg, info = self.config, state.info
        data, target = self._physics_step(
            self.model(info), state.pipeline_state, info["wrist_target"], action
        )

        in_bowl, spilled = self.balls_in_bowl(data, info)
        poured = jnp.mean(in_bowl.astype(jnp.float32))
        spilled = jnp.mean(spilled.astype(jnp.float32))
        worst = jnp.maximum(info["spilled"], spilled)
        success = poured >= cfg.success_fraction - 1e-6
        pos, _ = self.object_pose(data, "cup")
        flags = self.contact_flags(data, "cup")
        lift = jnp.clip((pos[2] - cfg.cup.height / 2) / cfg.lift_height, 0.0, 1.0)
        over = jnp.linalg.norm(self.mouth(data)[:2] - info["bowl_xy"])
        a = jnp.clip(action, -1.0, 1.0)
        terms = {
            "reach": 1.0 - jnp.tanh(10.0 * jnp.linalg.norm(self.grasp_pos(data) - pos)),
            "contact": 0.5 * jnp.mean(flags[:3]) + 0.5 * flags[3],
            "lift": lift,
            "carry": (1.0 - jnp.tanh(5.0 * over)) * lift,
            "pour": poured,
            "spill": info["spilled"] - worst,
            "success": success.astype(jnp.float32),
            "action": -jnp.mean(a * a),
        }
        t = info["t"] + 1
        rewards, potential = self.score(terms, cfg.reward, success, t, info["potential"])
        info = {**info, "wrist_target": target, "t": t, "potential": potential, "spilled": worst}
        return self.end_step(
            state,
            data,
            rewards,
            success,
            info,
            {"poured": poured, "spilled": spilled},
            lambda d: self._obs(d, info, flags, poured),
        )

    def _obs(self, data: mjx.Data, info: dict, touching: jax.Array, poured: jax.Array):
        """Privileged state [52 + 3N]: hand (44), fingertips and grasp point relative to the
        cup (15), cup pose and velocity (13), bowl position and yaw as cos, sin (4), ball
        centres in the bowl's frame (3N), contact flags (5), fraction poured (1)."""
        pos, quat = self.object_pose(data, "cup")
        yaw = info["bowl_yaw"]
        balls = self.ball_pos(data)
        local = fixtures.rotate(-yaw, balls[:, :2] - info["bowl_xy"])
        return jnp.concatenate(
            [
                self.hand_obs(data),
                (self.tip_pos(data) - pos).reshape(-1),
                self.grasp_pos(data) - pos,
                pos,
                quat,
                self.object_vel(data, "cup"),
                info["bowl_xy"],
                jnp.stack([jnp.cos(yaw), jnp.sin(yaw)]),
                jnp.concatenate([local, balls[:, 2:]], axis=1).reshape(-1),
                touching,
                poured[None],
            ]
        )
