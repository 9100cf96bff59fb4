"""The hand on a Cartesian-controlled wrist: config, model, action mapping, shared observations.

Actions (22, all in [-1, 1]): wrist position deltas (3) and orientation deltas (3, yaw, pitch,
roll), bounded per control step like a Cartesian impedance controller's setpoint increments,
then 16 absolute finger joint targets mapped onto the LEAP joint ranges. Physics substeps run
inside ``step`` at ``sim_dt``; one ``step`` is one control step at ``ctrl_dt``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from brax.envs.base import Env, State
from mujoco import mjx

from envs.hand import constants as C
from envs.hand.mjcf import ObjectSpec, build_mjcf


@dataclasses.dataclass(frozen=True)
class HandConfig:
    """Physics and control of the hand and its wrist."""

    sim_dt: float = 0.01
    """Physics time step (s). Explicit Euler: keep dt*(damping+kv)/inertia well below 1."""
    ctrl_dt: float = 0.05
    """Control period (s); 0.05 is 20 Hz. Must be a multiple of sim_dt."""
    solver_iterations: int = 4
    """Constraint solver (Newton) iterations per physics step."""
    ls_iterations: int = 6
    """Line-search iterations per solver iteration."""
    njmax: int = 250
    """Constraint rows reserved (MJX sizes are static)."""
    eulerdamp: bool = False
    """Implicit joint damping in the Euler integrator (slower in MJX; unnecessary with armature)."""
    contact_set: Literal["pads", "full"] = "pads"
    """Which hand geoms touch objects: medial links and fingertip pads + palm ("pads", 28
    potential contacts with one object), or every finger link and tip + palm ("full", 40)."""
    shaping: Literal["dense", "potential"] = "potential"
    """How the tasks pay their shaping terms (``HandEnv.score``). ``potential`` (the default
    since 2026-12-04): each step pays the change of the terms (potential-based shaping, Ng,
    Harada & Russell 1999: the shaping sums to the potential gained and cannot be farmed by
    staying near a rewarded state), and an episode ending in success pays back its potential
    (a terminal state has potential 0), so only success changes which policy is best.
    ``dense``: every step pays each term's value, and success pays what the terms could still
    have paid. Measured (RFS at 1M env steps, same 512 episodes, sampled / at the mean): grasp
    dense 0.754 / 0.967 vs potential 0.797 / 0.977 (base 0.391 / 0.621); pick_place dense
    0.033 / 0.014 vs potential 0.475 / 0.193 (base 0.238 / 0.303): dense shaping pays a
    placing policy to hold on near the goal rather than risk the release (docs/results.md)."""
    joint_limits: bool = False
    """Joint-limit constraints. The position servos' targets already lie inside the LEAP
    ranges, so the limits only add 22 constraint rows to every solver iteration."""
    friction: float = 1.0
    """Sliding friction of hand-object and object-table contacts (objects randomise theirs)."""
    contact_solref: float = 0.02
    """Contact time constant (s); at least 2*sim_dt for stability."""
    finger_kp: float = 3.0
    """Finger position-servo stiffness (N m / rad), as on the LEAP hand."""
    finger_kv: float = 0.03
    """Finger position-servo damping (N m s / rad)."""
    finger_damping: float = 0.03
    """Finger joint damping."""
    finger_armature: float = 0.001
    """Finger joint armature (motor inertia); keeps the explicit integrator stable."""
    wrist_kp: float = 600.0
    """Wrist translational stiffness (N / m)."""
    wrist_kv: float = 40.0
    """Wrist translational damping (N s / m)."""
    wrist_armature: float = 0.0
    wrist_rot_kp: float = 20.0
    """Wrist rotational stiffness (N m / rad)."""
    wrist_rot_kv: float = 1.0
    wrist_rot_armature: float = 0.02
    pos_delta: float = 0.02
    """Largest wrist translation command per control step (m)."""
    rot_delta: float = 0.1
    """Largest wrist rotation command per control step (rad)."""
    max_track_error: float = 0.03
    """The wrist setpoint may lead the measured wrist by at most this (m, and x3 in rad), as an
    impedance controller clips its error, so a blocked hand does not wind up."""

    def __post_init__(self):
        n = self.ctrl_dt / self.sim_dt
        if abs(n - round(n)) > 1e-6 or round(n) < 1:
            raise ValueError(
                f"ctrl_dt ({self.ctrl_dt}) must be a positive multiple of sim_dt ({self.sim_dt})"
            )
        if self.contact_set not in ("pads", "full"):
            raise ValueError(f"contact_set must be 'pads' or 'full', got {self.contact_set!r}")

    @property
    def substeps(self) -> int:
        return round(self.ctrl_dt / self.sim_dt)


NUM_WRIST = len(C.WRIST_JOINTS)
ACTION_SIZE = NUM_WRIST + C.NUM_FINGER_JOINTS
FINGER_LO = np.array([r[0] for f in C.FINGERS for r in C.JOINT_RANGES[f]], np.float32)
FINGER_HI = np.array([r[1] for f in C.FINGERS for r in C.JOINT_RANGES[f]], np.float32)
WRIST_LO = np.array([r[0] for r in C.WRIST_RANGES], np.float32)
WRIST_HI = np.array([r[1] for r in C.WRIST_RANGES], np.float32)


def fingers_to_action(q: jax.Array) -> jax.Array:
    """Finger joint angles [16] -> normalised finger actions in [-1, 1]."""
    return jnp.clip(2.0 * (q - FINGER_LO) / (FINGER_HI - FINGER_LO) - 1.0, -1.0, 1.0)


def action_to_fingers(a: jax.Array) -> jax.Array:
    return FINGER_LO + 0.5 * (a + 1.0) * (FINGER_HI - FINGER_LO)


def _mjx_pairs() -> set[tuple[int, int]] | None:
    """Geom-type pairs MJX has collision functions for (``None``: unknown to this MJX)."""
    try:
        from mujoco.mjx._src.collision_driver import _COLLISION_FUNC
    except ImportError:  # a private table; without it MJX itself reports at compile time
        return None
    return {(int(a), int(b)) for a, b in _COLLISION_FUNC} | {
        (int(b), int(a)) for a, b in _COLLISION_FUNC
    }


def check_mjx_collisions(m: mujoco.MjModel, object_geoms) -> None:
    """Refuse, with the object shapes that would work, a model whose explicit contact pairs
    (``object_geoms``: the geom ids of the task's objects)
    include geom types MJX cannot collide (e.g. a cylinder against a box: MJX would fail only
    when the step compiles, with a traceback)."""
    supported = _mjx_pairs()
    if supported is None:
        return
    for g1, g2 in zip(m.pair_geom1, m.pair_geom2, strict=True):
        t1, t2 = int(m.geom_type[g1]), int(m.geom_type[g2])
        if (t1, t2) in supported:
            continue
        if g1 not in object_geoms and g2 not in object_geoms:
            raise ValueError(
                f"MJX cannot collide a {_type_name(t1)} with a {_type_name(t2)} (contact pair "
                f"of geoms {g1} and {g2}); change the scene's geoms"
            )
        geom, partner = (g1, t2) if g1 in object_geoms else (g2, t1)
        name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, int(geom))
        partners = {
            int(m.geom_type[b if a == geom else a])
            for a, b in zip(m.pair_geom1, m.pair_geom2, strict=True)
            if geom in (a, b)
        }
        works = [
            shape
            for shape in C.OBJECT_SHAPES
            if all((int(_geom_type(shape)), p) in supported for p in partners)
        ]
        raise ValueError(
            f"object shape {_type_name(int(m.geom_type[geom]))} of {name!r} cannot collide with "
            f"a {_type_name(partner)} in MJX; shapes that work in this task: {', '.join(works)}"
        )


def _geom_type(shape: str) -> mujoco.mjtGeom:
    return getattr(mujoco.mjtGeom, f"mjGEOM_{shape.upper()}")


def _type_name(t: int) -> str:
    return mujoco.mjtGeom(t).name.removeprefix("mjGEOM_").lower()


class HandEnv(Env):
    """Base of every hand task: builds the MJX model and steps the hand.

    Subclasses implement ``reset`` and ``step`` using ``_physics_step`` and ``_hand_obs``.
    """

    def __init__(
        self,
        hand: HandConfig,
        objects: tuple[ObjectSpec, ...],
        extra_world: str = "",
        extra_pairs=(),
    ):
        self.hand = hand
        self.xml = build_mjcf(hand, objects, extra_world, extra_pairs)
        self.mj_model = mujoco.MjModel.from_xml_string(self.xml)
        check_mjx_collisions(
            self.mj_model,
            [mujoco.mj_name2id(self.mj_model, mujoco.mjtObj.mjOBJ_GEOM, o.name) for o in objects],
        )
        self.mjx_model = mjx.put_model(self.mj_model)
        m = self.mj_model
        jnt = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)  # noqa: E731
        self._wrist_qadr = np.array([m.jnt_qposadr[jnt(j)] for j in C.WRIST_JOINTS])
        self._finger_qadr = np.array([m.jnt_qposadr[jnt(j)] for j in C.FINGER_JOINT_NAMES])
        self._wrist_vadr = np.array([m.jnt_dofadr[jnt(j)] for j in C.WRIST_JOINTS])
        self._finger_vadr = np.array([m.jnt_dofadr[jnt(j)] for j in C.FINGER_JOINT_NAMES])
        site = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, n)  # noqa: E731
        self._tip_sites = np.array([site(f"{f}_tip") for f in C.FINGERS])
        self._palm_site = site("palm")
        self._grasp_site = site("grasp")
        self.objects = objects
        self._obj = {}
        for o in objects:
            j = jnt(o.name)
            self._obj[o.name] = dict(
                qadr=int(m.jnt_qposadr[j]),
                vadr=int(m.jnt_dofadr[j]),
                body=int(mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, o.name)),
                geom=int(mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, o.name)),
                pairs=np.array(
                    [
                        i
                        for i in range(m.npair)
                        if o.name
                        in (
                            mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, m.pair_geom1[i]),
                            mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, m.pair_geom2[i]),
                        )
                    ]
                ),
            )
        self._parts = self._part_geoms()

    # ---- model facts ------------------------------------------------------------------------
    def _part_geoms(self) -> dict[str, np.ndarray]:
        """Geom ids of each finger (every link and tip) and of the palm."""
        m = self.mj_model
        names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, i) or "" for i in range(m.ngeom)]
        parts = {f: [i for i, n in enumerate(names) if n.startswith(f + "_")] for f in C.FINGERS}
        parts["palm"] = [names.index("palm")]
        return {k: np.array(v, np.int32) for k, v in parts.items()}

    @property
    def action_size(self) -> int:
        return ACTION_SIZE

    @property
    def observation_size(self) -> int:
        state = jax.eval_shape(self.reset, jax.random.PRNGKey(0))
        return int(state.obs.shape[-1])

    @property
    def backend(self) -> str:
        return "mjx"

    @property
    def dt(self) -> float:
        return self.hand.ctrl_dt

    # ---- control ----------------------------------------------------------------------------
    def _wrist_q(self, data: mjx.Data) -> jax.Array:
        return data.qpos[self._wrist_qadr]

    def _physics_step(
        self, model: mjx.Model, data: mjx.Data, wrist_target: jax.Array, action: jax.Array
    ) -> tuple[mjx.Data, jax.Array]:
        """One control step: move the wrist setpoint by the bounded delta, set finger targets,
        run ``substeps`` physics steps. Returns the new data and wrist setpoint."""
        if action.shape != (ACTION_SIZE,):
            raise ValueError(f"action must have shape ({ACTION_SIZE},), got {action.shape}")
        a = jnp.clip(action, -1.0, 1.0)
        h = self.hand
        delta = jnp.concatenate([a[:3] * h.pos_delta, a[3:6] * h.rot_delta])
        lead = jnp.array([h.max_track_error] * 3 + [3 * h.max_track_error] * 3)
        q = self._wrist_q(data)
        target = jnp.clip(wrist_target + delta, q - lead, q + lead)
        target = jnp.clip(target, WRIST_LO, WRIST_HI)
        ctrl = jnp.concatenate([target, action_to_fingers(a[6:])])
        data = data.replace(ctrl=ctrl)
        if self.physics is not None:  # another simulator (experiments/sim2sim.py)
            return self.physics(model, data, h.substeps), target

        def substep(d, _):
            return mjx.step(model, d), None

        data, _ = jax.lax.scan(substep, data, None, length=h.substeps)
        return data, target

    # ---- observation pieces -------------------------------------------------------------------
    def contact_flags(self, data: mjx.Data, obj: str) -> jax.Array:
        """[5] 1.0 where index, middle, ring, thumb, palm touch ``obj``.

        Read from the contact arrays themselves (which geoms, how far apart), so it needs no
        knowledge of MJX's contact layout."""
        c = data._impl.contact
        g = self._obj[obj]["geom"]
        other = jnp.where(c.geom1 == g, c.geom2, c.geom1)
        touching = ((c.geom1 == g) | (c.geom2 == g)) & (c.dist < 1e-3)
        flags = [jnp.any(touching & jnp.isin(other, self._parts[p])) for p in (*C.FINGERS, "palm")]
        return jnp.stack(flags).astype(jnp.float32)

    def tip_pos(self, data: mjx.Data) -> jax.Array:
        return data.site_xpos[self._tip_sites]

    def grasp_pos(self, data: mjx.Data) -> jax.Array:
        return data.site_xpos[self._grasp_site]

    def object_pose(self, data: mjx.Data, obj: str) -> tuple[jax.Array, jax.Array]:
        adr = self._obj[obj]["qadr"]
        return data.qpos[adr : adr + 3], data.qpos[adr + 3 : adr + 7]

    def object_vel(self, data: mjx.Data, obj: str) -> jax.Array:
        adr = self._obj[obj]["vadr"]
        return data.qvel[adr : adr + 6]

    def hand_obs(self, data: mjx.Data) -> jax.Array:
        """Proprioception: finger angles and velocities, wrist pose and velocity [44]."""
        return jnp.concatenate(
            [
                data.qpos[self._finger_qadr],
                0.1 * data.qvel[self._finger_vadr],
                data.qpos[self._wrist_qadr],
                data.qvel[self._wrist_vadr],
            ]
        )

    # ---- episode start and end -----------------------------------------------------------------
    def initial_data(
        self,
        model: mjx.Model,
        wrist: jax.Array,
        poses: dict[str, tuple[jax.Array, jax.Array]],
        mocap_pos: jax.Array | None = None,
    ) -> mjx.Data:
        """Data with the wrist (and its setpoint) at ``wrist`` [6], open fingers at rest and each
        named object at its ``(pos, quat)``.

        Kinematics only: the next ``mjx.step`` recomputes everything else from qpos and qvel,
        and the batching wrapper runs reset at every control step (a full ``forward`` there,
        collisions and constraint solve included, cost about a sixth of the step)."""
        qpos = jnp.array(self.mj_model.qpos0)
        qpos = qpos.at[self._wrist_qadr].set(wrist).at[self._finger_qadr].set(0.0)
        for name, (pos, quat) in poses.items():
            adr = self._obj[name]["qadr"]
            qpos = qpos.at[adr : adr + 3].set(pos).at[adr + 3 : adr + 7].set(quat)
        data = mjx.make_data(model).replace(
            qpos=qpos, ctrl=jnp.zeros(ACTION_SIZE).at[:6].set(wrist)
        )
        if mocap_pos is not None:
            data = data.replace(mocap_pos=mocap_pos)
        return mjx.kinematics(model, data)

    def sample_wrist(self, key: jax.Array, home, noise: float) -> jax.Array:
        """Initial wrist pose [6]: ``home`` position plus uniform noise, no rotation."""
        offset = jax.random.uniform(key, (3,), minval=-1.0, maxval=1.0) * noise
        return jnp.zeros(6).at[:3].set(jnp.array(home) + offset)

    def guard(
        self, data: mjx.Data, previous: mjx.Data, reward: jax.Array
    ) -> tuple[mjx.Data, jax.Array, jax.Array]:
        """Episode end on a simulation that blew up or an object knocked off the workspace.

        Returns the data (the previous step's where the new one is not finite), the reward
        (zero there) and whether the episode must end."""
        finite = jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel))
        out = jnp.array(False)
        for name in self._obj:
            pos, _ = self.object_pose(data, name)
            out |= (jnp.abs(pos[0]) > 0.4) | (jnp.abs(pos[1]) > 0.4) | (pos[2] < -0.05)
        data = jax.tree.map(lambda new, old: jnp.where(finite, new, old), data, previous)
        return data, jnp.where(finite, reward, 0.0), out | ~finite

    # ``None``: MJX steps the physics. Else ``physics(model, data, substeps) -> data``, called
    # by ``_physics_step`` with the control set, in place of ``substeps`` MJX steps: how
    # ``rfs sim2sim`` runs a task's own step, reward, success and observation code on C MuJoCo.
    physics: Callable | None = None

    # The terms ``score`` treats as shaping (set by each task).
    shaping_terms: tuple[str, ...] = ()

    def initial_potential(self) -> jax.Array:
        """``[len(shaping_terms)]`` zeros: ``state.info["potential"]`` of a reset state."""
        return jnp.zeros((len(self.shaping_terms),))

    def score(
        self,
        terms: dict[str, jax.Array],
        scales,
        success: jax.Array,
        t: jax.Array,
        potential: jax.Array,
    ) -> tuple[dict[str, jax.Array], jax.Array]:
        """The named reward terms times their scales (fields of the task's reward config), and
        the new ``info["potential"]`` (the scaled shaping terms of this step).

        ``hand.shaping == "dense"``: each term is paid as it is, and the success step also
        pays, on top of ``success``'s scale, the most the ``shaping_terms`` could still have
        paid until the time limit (``episode_length`` control steps after ``t``): ending an
        episode by succeeding must never earn less than hovering near success until the end
        would. ``"potential"``: each shaping term pays its change since the previous step
        (``potential`` holds the previous values; a reset's are 0), and the success step,
        which ends the episode, pays back what the terms hold (potential 0 at the end)."""
        rewards = {k: v * getattr(scales, k) for k, v in terms.items()}
        now = jnp.stack([rewards[k] for k in self.shaping_terms])
        if self.config.hand.shaping == "potential":
            paid = jnp.where(success, -potential, now - potential)
            rewards.update({k: paid[i] for i, k in enumerate(self.shaping_terms)})
            return rewards, now
        steps_left = jnp.maximum(self.config.episode_length - t, 0).astype(jnp.float32)
        most = sum(getattr(scales, k) for k in self.shaping_terms)
        rewards["success"] = rewards["success"] + success * steps_left * most
        return rewards, now

    def end_step(
        self,
        state: State,
        data: mjx.Data,
        rewards: dict[str, jax.Array],
        success: jax.Array,
        info: dict,
        metrics: dict[str, jax.Array],
        observe: Callable[[mjx.Data], jax.Array],
    ) -> State:
        """The next ``State``: the summed reward and ``data`` through ``guard``, the observation
        ``observe(data)`` of the guarded data, done on success or a guard's end, and the metrics
        ``success``, the task's own and ``reward/<name>`` per term."""
        reward = sum(rewards.values())
        data, reward, ended = self.guard(data, state.pipeline_state, reward)
        return state.replace(
            pipeline_state=data,
            obs=observe(data),
            reward=reward,
            done=(success | ended).astype(jnp.float32),
            metrics={
                "success": success.astype(jnp.float32),
                **metrics,
                **{f"reward/{k}": v for k, v in rewards.items()},
            },
            info=info,
        )

    # ---- per-episode object randomisation ------------------------------------------------------
    def model_with_object(
        self,
        obj: str,
        size: jax.Array,
        mass: jax.Array,
        friction: jax.Array,
        model: mjx.Model | None = None,
    ) -> mjx.Model:
        """The MJX model (``model``, by default the env's) with one object's geom size, mass,
        inertia and contact friction set.

        Called inside ``step`` with per-env values from ``state.info``; under ``vmap`` only these
        few fields become batched."""
        o = self._obj[obj]
        shape = next(s.shape for s in self.objects if s.name == obj)
        m = self.mjx_model if model is None else model
        inertia = _inertia(shape, size, mass)
        pf = m.pair_friction.at[o["pairs"], 0].set(friction).at[o["pairs"], 1].set(friction)
        return m.replace(
            geom_size=m.geom_size.at[o["geom"]].set(size),
            geom_rbound=m.geom_rbound.at[o["geom"]].set(jnp.linalg.norm(size) * 1.8),
            body_mass=m.body_mass.at[o["body"]].set(mass),
            body_inertia=m.body_inertia.at[o["body"]].set(inertia),
            pair_friction=pf,
        )


def _inertia(shape: str, size: jax.Array, mass: jax.Array) -> jax.Array:
    """Principal inertia of a solid primitive (MuJoCo geom sizes), in its own frame."""
    if shape == "box":
        x, y, z = 2 * size[0], 2 * size[1], 2 * size[2]
        return mass / 12 * jnp.array([y * y + z * z, x * x + z * z, x * x + y * y])
    if shape == "sphere":
        return jnp.full(3, 0.4 * mass * size[0] ** 2)
    if shape == "ellipsoid":
        a, b, c = size[0], size[1], size[2]
        return mass / 5 * jnp.array([b * b + c * c, a * a + c * c, a * a + b * b])
    r, h = size[0], 2 * size[1]
    if shape == "cylinder":
        side = mass * (3 * r * r + h * h) / 12
        return jnp.array([side, side, 0.5 * mass * r * r])
    # capsule (approximated by its cylinder plus hemispheres' length): lies on its side, the
    # body frame is rotated so that only the principal values matter here.
    side = mass * (3 * r * r + (h + r) ** 2) / 12
    return jnp.array([side, side, 0.5 * mass * r * r])
