"""The pour expert.

Each episode it picks a pouring side, which sets how the hand holds the cup and which way the
wrist rolls: a side grasp with the palm on one wall, index, middle and thumb on the two walls
next to it, the hand rolled +1.5 rad (index finger up) or -1.5 rad (index finger down), and a
pour that rolls the wrist through level to 0.9 rad the other way (2.4 rad of tipping; the balls
need more than 90 degrees, which the wrist alone cannot give). The grasp yaw is chosen among the
cup's four symmetric ones so that the pour faces the bowl. The expert lifts the cup, carries it
to where the lip on the pouring side will be over the bowl once the cup is tipped far enough for
the (frictionless) balls to slide out (a rotation about the hand's x axis through the wrist,
predicted from where the cup sits in the hand), and rolls the wrist through, holding it where
that prediction puts the lip over the bowl. The two sides leave the hand in mirrored poses
turning opposite ways: the demonstrations are bimodal. Noise on the grasp, the aim, the timing
and the actions make it imperfect.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from brax.envs.base import State

from envs.experts.grasp import _posture, _wrap
from envs.hand import constants as C
from envs.hand.base import fingers_to_action


@dataclasses.dataclass(frozen=True)
class PourExpertConfig:
    """Noise, timing and geometry of the pour expert."""

    left_prob: float = 0.5
    """Probability of pouring to the left (else to the right)."""
    grasp_roll: float = 1.5
    """Roll of the hand while it grasps: the palm faces sideways, against the cup's wall (rad;
    the wrist stops at 1.6)."""
    pour_roll: float = 0.9
    """Roll past level, the other way, that the wrist turns to when pouring (rad)."""
    aim_roll: float = 0.2
    """Roll past level, towards the pour, at which the lip is held over the bowl (rad): about
    where the frictionless balls slide out of the cup (tipped some 100 degrees). The wrist rolls
    on to ``pour_roll`` to empty the cup."""
    press: float = 0.012
    """How far into the cup's wall the wrist aims the palm (m): keeps the palm on the wall."""
    grasp_height: float = 0.0
    """Height of the palm's centre above the cup's centre (m)."""
    lift: float = 0.15
    """How far the expert lifts the cup before carrying it (m)."""
    lip_height: float = 0.11
    """Height of the lip above the table at ``aim_roll`` (m)."""
    pour_speed: float = 0.6
    """Fraction of the largest wrist rotation step used while pouring."""
    xy_noise: float = 0.006
    """Std of the per-episode offset of the grasp point (m)."""
    z_noise: float = 0.006
    """Std of the per-episode offset of the grasp height (m)."""
    yaw_noise: float = 0.08
    """Std of the per-episode yaw error of the grasp (rad)."""
    aim_noise: float = 0.02
    """Std of the per-episode horizontal error of where the lip is held over the bowl (m)."""
    close_steps: tuple[int, int] = (4, 10)
    """Range of control steps the hand takes to close."""
    wrist_action_noise: float = 0.15
    """Std of the per-step noise on the wrist actions."""
    finger_action_noise: float = 0.05
    """Std of the per-step noise on the finger actions."""
    wrap: float = 0.0
    """How far past the cup's centre, away from the palm, the closed fingertips aim (m): they
    wrap the cup and pull it onto the palm."""
    finger_squeeze: float = -0.01
    """How far past the cup's centre the closed index and middle fingertips aim (m)."""
    squeeze: float = 0.03
    """How far past the cup's centre the closed fingertips aim (m): the servo error that makes
    the grip force."""


class PourExpert:
    """Approach, descend, close, lift, carry, pour; two pouring sides."""

    def __init__(self, env, config: PourExpertConfig = PourExpertConfig()):
        self.env = env
        self.config = config
        o = env.config.cup.outer_half
        self._depth = C.PALM_HALF[2] + o - config.press
        z, sq, wide = -self._depth, config.squeeze, o + 0.04
        deep = z - config.wrap
        # Index, middle and thumb close on the walls: their contacts line up across the palm,
        # so the grip makes no couple that would spin the cup on the palm. The ring finger
        # stays out of the way (near the table or above the rim, by the pouring side).
        ring = {"ring": (0.1, -0.02)}
        fingers = ("index", "middle")
        self._open = jnp.array(
            _posture(env, {f: (wide, z) for f in fingers} | {"thumb": (-wide, z)} | ring)
        )
        self._shut = jnp.array(
            _posture(
                env,
                {f: (-config.finger_squeeze, deep) for f in fingers} | {"thumb": (sq, deep)} | ring,
            )
        )
        self._cup_body = env._obj["cup"]["body"]

    def init(self, key: jax.Array) -> dict:
        """Carry for one env; the plan itself is drawn at the first step of each episode."""
        return {
            "key": key,
            "side": jnp.zeros((), jnp.int32),
            "offset": jnp.zeros(6),
            "close_steps": jnp.ones((), jnp.int32),
            "yaw": jnp.zeros(()),
            "grasp": jnp.zeros(3),
            "phase": jnp.zeros((), jnp.int32),
            "phase_t": jnp.zeros((), jnp.int32),
        }

    def _new_plan(self, carry: dict) -> dict:
        cfg = self.config
        key, k_side, k_off, k_close = jax.random.split(carry["key"], 4)
        std = jnp.array(
            [cfg.xy_noise, cfg.xy_noise, cfg.z_noise, cfg.yaw_noise, cfg.aim_noise, cfg.aim_noise]
        )
        return {
            "key": key,
            "side": jax.random.bernoulli(k_side, cfg.left_prob).astype(jnp.int32),
            "offset": jax.random.normal(k_off, (6,)) * std,
            "close_steps": jax.random.randint(
                k_close, (), cfg.close_steps[0], cfg.close_steps[1] + 1
            ),
            "yaw": jnp.zeros(()),
            "grasp": jnp.zeros(3),
            "phase": jnp.zeros((), jnp.int32),
            "phase_t": jnp.zeros((), jnp.int32),
        }

    def _grasp_yaw(self, carry: dict, cup: jax.Array, cup_rot: jax.Array, bowl: jax.Array):
        """The grasp yaw among the cup's four (a quarter turn apart) whose pour faces the bowl."""
        sign = 2.0 * carry["side"] - 1.0
        yaws = jnp.arctan2(cup_rot[1, 0], cup_rot[0, 0]) + jnp.arange(4) * (math.pi / 2)
        toward = bowl - cup[:2]
        pour_dir = sign * jnp.stack([-jnp.sin(yaws), jnp.cos(yaws)], -1)
        want = yaws[jnp.argmax(pour_dir @ toward)] + carry["offset"][3]
        return _wrap(want, 2 * math.pi)

    def _lip(self, carry: dict, cup: jax.Array, cup_rot: jax.Array) -> jax.Array:
        """[3] the top edge of the cup's wall on the pouring side."""
        sign = 2.0 * carry["side"] - 1.0
        yaw = carry["yaw"]
        side = cup_rot.T @ (sign * jnp.array([-jnp.sin(yaw), jnp.cos(yaw), 0.0]))
        side = side.at[2].set(0.0)
        side = side / (jnp.linalg.norm(side) + 1e-6)
        cup_cfg = self.env.config.cup
        return cup + cup_rot @ (cup_cfg.outer_half * side + jnp.array([0, 0, cup_cfg.height / 2]))

    def act(self, carry: dict, state: State, key: jax.Array) -> tuple[dict, jax.Array]:
        """Phases: 0 above the cup, 1 hover, 2 descend, 3 close, 4 lift, 5 carry, 6 pour."""
        env, cfg, h = self.env, self.config, self.env.hand
        carry = jax.tree.map(
            lambda new, old: jnp.where(state.info["steps"] == 0, new, old),
            self._new_plan(carry),
            carry,
        )
        data = state.pipeline_state
        q = env._wrist_q(data)
        cup, _ = env.object_pose(data, "cup")
        cup_rot = data.xmat[self._cup_body]
        bowl = state.info["bowl_xy"]
        sign = 2.0 * carry["side"] - 1.0
        phase, t, off = carry["phase"], carry["phase_t"], carry["offset"]

        # Grasp: the yaw and the wrist's grasp pose are fixed once the hand starts closing (a
        # target that followed the cup would chase it across the table).
        aiming = phase <= 2
        yaw = jnp.where(aiming, self._grasp_yaw(carry, cup, cup_rot, bowl), carry["yaw"])
        roll0 = sign * cfg.grasp_roll
        hand_rot = _rot_z(yaw) @ _rot_x(roll0)
        centre = cup + cup_rot[:, 2] * cfg.grasp_height + off[:3]
        grasp = centre + hand_rot @ jnp.array([0.0, 0.0, self._depth])
        grasp = jnp.where(aiming, grasp, carry["grasp"])
        carry = {**carry, "yaw": yaw, "grasp": grasp}
        hover = grasp + hand_rot @ jnp.array([0.0, 0.0, 0.06])

        # Carry and pour: where the wrist must be for the lip to sit over the bowl once the
        # wrist has rolled to ``aim_roll``, where the balls leave the cup (a rotation about the
        # hand's x through the wrist).
        lip = self._lip(carry, cup, cup_rot)
        axis = _rot_z(q[3]) @ jnp.array([1.0, 0.0, 0.0])
        tipped = _rotate(axis, -sign * cfg.aim_roll - q[5], lip - q[:3])
        aim = jnp.concatenate([bowl + off[4:], jnp.array([cfg.lip_height])])
        over = aim - tipped
        lifted = q[:3].at[2].set(grasp[2] + cfg.lift)
        # Carry high (the cup hangs below the wrist until it is tipped), then pour.
        carry_to = over.at[2].max(lifted[2])

        above = hover.at[2].add(0.2)
        go = jnp.array(
            [
                ((jnp.linalg.norm(above - q[:3]) < 0.02) & (jnp.abs(yaw - q[3]) < 0.08))
                & (jnp.abs(roll0 - q[5]) < 0.08)
                | (t > 40),
                (jnp.linalg.norm(hover - q[:3]) < 0.015) | (t > 15),
                (jnp.linalg.norm(grasp - q[:3]) < cfg.press + 0.005) | (t > 15),
                t >= carry["close_steps"] + 2,
                (cup[2] > env.config.cup.height / 2 + cfg.lift - 0.03) | (t > 20),
                (jnp.linalg.norm(carry_to - q[:3]) < 0.02) | (t > 40),
                False,
            ]
        )
        done = go[phase]
        phase = jnp.where(done, phase + 1, phase)
        t = jnp.where(done, 0, t + 1)
        carry = {**carry, "phase": phase, "phase_t": t}

        pos = jnp.stack([above, hover, grasp, grasp, lifted, carry_to, over])[phase]
        roll = jnp.where(phase == 6, -sign * cfg.pour_roll, roll0)
        target = jnp.concatenate([pos, jnp.stack([yaw, 0.0, roll])])
        err = target - q
        wrist = jnp.concatenate([err[:3] / h.pos_delta, err[3:] / h.rot_delta])
        speed = jnp.where(phase == 6, jnp.array([1.0] * 3 + [cfg.pour_speed] * 3), 1.0)
        wrist = jnp.clip(wrist, -1, 1) * speed
        alpha = jnp.where(
            phase == 3, jnp.clip((t + 1) / carry["close_steps"], 0.0, 1.0), (phase > 3) * 1.0
        )
        fingers = self._open + alpha * (self._shut - self._open)
        k_w, k_f = jax.random.split(key)
        action = jnp.concatenate(
            [
                wrist + cfg.wrist_action_noise * jax.random.normal(k_w, (6,)),
                fingers_to_action(fingers)
                + cfg.finger_action_noise * jax.random.normal(k_f, (16,)),
            ]
        )
        return carry, jnp.clip(action, -1.0, 1.0)


def _rot_z(a: jax.Array) -> jax.Array:
    c, s = jnp.cos(a), jnp.sin(a)
    return jnp.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_x(a: jax.Array) -> jax.Array:
    c, s = jnp.cos(a), jnp.sin(a)
    return jnp.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rotate(axis: jax.Array, angle: jax.Array, v: jax.Array) -> jax.Array:
    """``v`` rotated by ``angle`` about the unit ``axis`` (Rodrigues)."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    return v * c + jnp.cross(axis, v) * s + axis * jnp.dot(axis, v) * (1 - c)
