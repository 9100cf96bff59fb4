"""MJCF for the LEAP-like hand on a Cartesian wrist, built from MuJoCo primitives only.

Speed is a design goal (MJX on a CPU costs grow with every potential contact): every geom has
``contype = conaffinity = 0`` and the only collisions are explicit ``<pair>``s between the pieces
that matter for manipulation -- finger links, fingertips and palm against each object, objects
against the table and each other, fingertips against the table.
"""

from __future__ import annotations

import dataclasses

from envs.hand import constants as C


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    """One free object in the scene. ``size`` is MuJoCo's geom size for the shape; tasks change
    it per episode (it only fixes the shape and the nominal inertia here)."""

    name: str
    shape: str = "box"
    size: tuple[float, float, float] = (0.025, 0.025, 0.025)
    mass: float = 0.1
    rgba: str = "0.85 0.35 0.2 1"
    hand_contacts: str = "hand"
    """Which hand geoms it collides with: the whole contact set ("hand"), only the four
    fingertip pads ("tips"; an object that is never grasped, at a fraction of the cost) or
    none ("none")."""


def _fmt(v) -> str:
    return " ".join(f"{x:.6g}" for x in v)


def _finger_xml(name: str, links, ranges, cfg) -> str:
    """A serial finger whose links extend along local +x; flexion is about local +y (curls the
    finger towards the palm side, -z)."""
    (j0, j1, j2, j3) = C.FINGER_JOINTS[name]
    (r0, r1, r2, r3) = ranges
    l0, l1, l2 = links
    m0, m1, m2 = C.LINK_MASSES
    rad, tip = C.LINK_RADIUS, C.TIP_RADIUS
    # The first two joints share the mcp bracket: flexion first, then abduction about the
    # flexed link's normal, as on the LEAP hand.
    axis1 = "0 0 1"
    # With the "pads" contact set the distal capsule runs to the tip centre with the tip's
    # radius, so one capsule (2 contacts) is the whole fingertip pad; "full" keeps a separate
    # tip sphere. The tip sphere always exists for the fingertip-table pair.
    pads = cfg.contact_set == "pads"
    dist_len = l2 if pads else l2 - tip * 0.5
    dist_rad = tip if pads else rad
    return f"""
      <joint name="{name}_{j0}" class="finger" axis="0 1 0" range="{_fmt(r0)}"/>
      <joint name="{name}_{j1}" class="finger" axis="{axis1}" range="{_fmt(r1)}"/>
      <geom name="{name}_prox" type="capsule" fromto="0 0 0 {l0:.4f} 0 0" size="{rad}" mass="{m0}"
            rgba="0.2 0.2 0.2 1"/>
      <body name="{name}_medial" pos="{l0:.4f} 0 0" gravcomp="1">
        <joint name="{name}_{j2}" class="finger" axis="0 1 0" range="{_fmt(r2)}"/>
        <geom name="{name}_med" type="capsule" fromto="0 0 0 {l1:.4f} 0 0" size="{rad}"
              mass="{m1}" rgba="0.25 0.25 0.25 1"/>
        <body name="{name}_distal" pos="{l1:.4f} 0 0" gravcomp="1">
          <joint name="{name}_{j3}" class="finger" axis="0 1 0" range="{_fmt(r3)}"/>
          <geom name="{name}_dist" type="capsule" fromto="0 0 0 {dist_len:.4f} 0 0"
                size="{dist_rad}" mass="{m2 * 0.5}" rgba="0.3 0.3 0.3 1"/>
          <geom name="{name}_tip" type="sphere" pos="{l2:.4f} 0 0" size="{tip}" mass="{m2 * 0.5}"
                rgba="0.9 0.9 0.9 1"/>
          <site name="{name}_tip" pos="{l2:.4f} 0 0" size="0.004"/>
        </body>
      </body>"""


def hand_xml(cfg) -> str:
    """The wrist joints and the hand (palm, three fingers, thumb) as a body tree."""
    fingers = []
    for f in ("index", "middle", "ring"):
        pos = (C.FINGER_BASE_X, C.FINGER_BASE_Y[f], C.BASE_Z)
        fingers.append(
            f'<body name="{f}_base" pos="{_fmt(pos)}" gravcomp="1">'
            + _finger_xml(f, C.LONG_FINGER_LINKS, C.JOINT_RANGES[f], cfg)
            + "</body>"
        )
    # The thumb points back along -x (rotated half a turn about z), so its flexion curls it down
    # and forward to oppose the fingers.
    tx, ty = C.THUMB_BASE
    fingers.append(
        f'<body name="thumb_base" pos="{tx} {ty} {C.BASE_Z}" quat="0 0 0 1" gravcomp="1">'
        + _finger_xml("thumb", C.THUMB_LINKS, C.JOINT_RANGES["thumb"], cfg)
        + "</body>"
    )
    wrist_joints = []
    for name, axis, (lo, hi) in zip(
        C.WRIST_JOINTS,
        ("1 0 0", "0 1 0", "0 0 1", "0 0 1", "0 1 0", "1 0 0"),
        C.WRIST_RANGES,
        strict=True,
    ):
        kind = "slide" if name in ("wrist_x", "wrist_y", "wrist_z") else "hinge"
        cls = "wrist_slide" if kind == "slide" else "wrist_hinge"
        wrist_joints.append(
            f'<joint name="{name}" class="{cls}" type="{kind}" axis="{axis}" range="{lo} {hi}"/>'
        )
    px, py, pz = C.PALM_HALF
    return f"""
    <body name="hand" pos="0 0 0" gravcomp="1">
      {"".join(wrist_joints)}
      <geom name="palm" type="box" size="{px} {py} {pz}" mass="{C.PALM_MASS}"
            rgba="0.15 0.15 0.15 1"/>
      <site name="palm" pos="0 0 {-pz:.4f}" size="0.005"/>
      <site name="grasp" pos="0.0 0 -0.06" size="0.005"/>
      {"".join(fingers)}
    </body>"""


def _object_xml(obj: ObjectSpec) -> str:
    # Capsules lie on their side; the other shapes stand on their local z.
    quat = "0.7071068 0.7071068 0 0" if obj.shape == "capsule" else "1 0 0 0"
    return f"""
    <body name="{obj.name}" pos="0 0 0.1">
      <freejoint name="{obj.name}"/>
      <geom name="{obj.name}" type="{obj.shape}" size="{_fmt(obj.size)}" quat="{quat}"
            mass="{obj.mass}" rgba="{obj.rgba}"/>
    </body>"""


def hand_contact_geoms(contact_set: str) -> list[str]:
    """The hand geoms that touch objects: the palm and, per finger, the medial and distal links
    (``"pads"``) or every link and the tip."""
    links = ("med", "dist") if contact_set == "pads" else ("prox", "med", "dist", "tip")
    return ["palm", *(f"{f}_{g}" for f in C.FINGERS for g in links)]


def build_mjcf(cfg, objects: tuple[ObjectSpec, ...], extra_world: str = "", extra_pairs=()) -> str:
    """The whole scene. ``extra_world`` adds static task geometry (targets, boxes, bowls);
    ``extra_pairs`` adds ``(geom1, geom2)`` collision pairs beyond the hand/object/table set."""
    pads = cfg.contact_set == "pads"
    hand_geoms = hand_contact_geoms(cfg.contact_set)
    contact_geoms = {
        "hand": hand_geoms,
        "tips": [f"{f}_dist" if pads else f"{f}_tip" for f in C.FINGERS],
        "none": [],
    }
    for o in objects:
        if o.shape not in C.OBJECT_SHAPES:
            raise ValueError(f"unknown object shape {o.shape!r}; valid: {C.OBJECT_SHAPES}")
        if o.hand_contacts not in contact_geoms:
            raise ValueError(
                f"hand_contacts must be one of {list(contact_geoms)}, got {o.hand_contacts!r}"
            )
    pairs = []
    for o in objects:
        pairs += [(o.name, g) for g in contact_geoms[o.hand_contacts]]
        pairs.append((o.name, "table"))
    for i, a in enumerate(objects):
        for b in objects[i + 1 :]:
            pairs.append((a.name, b.name))
    pairs += [(f"{f}_tip", "table") for f in C.FINGERS]
    pairs += list(extra_pairs)
    pair_xml = "\n".join(f'<pair geom1="{a}" geom2="{b}"/>' for a, b in pairs)
    actuators = [
        f'<position name="{j}" joint="{j}" class="wrist_{"slide" if j[-1] in "xyz" else "hinge"}"'
        f' ctrlrange="{lo} {hi}"/>'
        for j, (lo, hi) in zip(C.WRIST_JOINTS, C.WRIST_RANGES, strict=True)
    ]
    for f in C.FINGERS:
        for j, (lo, hi) in zip(C.FINGER_JOINTS[f], C.JOINT_RANGES[f], strict=True):
            actuators.append(
                f'<position name="{f}_{j}" joint="{f}_{j}" class="finger" ctrlrange="{lo} {hi}"/>'
            )
    flags = ("" if cfg.eulerdamp else ' eulerdamp="disable"') + (
        "" if cfg.joint_limits else ' limit="disable"'
    )
    flags = f"<flag{flags}/>" if flags else ""
    return f"""
<mujoco model="rfs_leap_hand">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{cfg.sim_dt}" iterations="{cfg.solver_iterations}"
          ls_iterations="{cfg.ls_iterations}" integrator="Euler" cone="pyramidal"
          jacobian="dense">
    {flags}
  </option>
  <size njmax="{cfg.njmax}"/>
  <default>
    <geom contype="0" conaffinity="0" friction="{cfg.friction} 0.005 0.0001"/>
    <default class="wrist_slide">
      <joint armature="{cfg.wrist_armature}" damping="0"/>
      <position kp="{cfg.wrist_kp}" kv="{cfg.wrist_kv}"/>
    </default>
    <default class="wrist_hinge">
      <joint armature="{cfg.wrist_rot_armature}" damping="0"/>
      <position kp="{cfg.wrist_rot_kp}" kv="{cfg.wrist_rot_kv}"/>
    </default>
    <default class="finger">
      <joint armature="{cfg.finger_armature}" damping="{cfg.finger_damping}"
             frictionloss="0"/>
      <position kp="{cfg.finger_kp}" kv="{cfg.finger_kv}"/>
    </default>
    <pair condim="3" friction="{cfg.friction} {cfg.friction} 0.005 0.0001 0.0001"
          solref="{cfg.contact_solref} 1"/>
  </default>
  <worldbody>
    <light pos="0 0 1.5" dir="0 0 -1" directional="true"/>
    <geom name="table" type="plane" size="0.6 0.6 0.05" rgba="0.8 0.8 0.75 1"/>
    {extra_world}
    {hand_xml(cfg)}
    {"".join(_object_xml(o) for o in objects)}
  </worldbody>
  <contact>
    {pair_xml}
  </contact>
  <actuator>
    {"".join(actuators)}
  </actuator>
</mujoco>"""
