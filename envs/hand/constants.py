"""LEAP-like hand: names, joint ranges and link dimensions (from the real LEAP hand).

Everything here is a fact about the robot; tunable physics lives in ``HandConfig``.
Link lengths follow the LEAP hand (about 1.5x a human hand): the mcp bracket, a proximal link,
a medial link of about 36 mm and a distal link plus tip of about 45 mm.
"""

from __future__ import annotations

FINGERS = ("index", "middle", "ring", "thumb")

# Joint names per finger, base to tip, and their ranges in radians (LEAP hand).
FINGER_JOINTS = {
    "index": ("mcp", "rot", "pip", "dip"),
    "middle": ("mcp", "rot", "pip", "dip"),
    "ring": ("mcp", "rot", "pip", "dip"),
    "thumb": ("cmc", "axl", "mcp", "ipl"),
}
_LONG_FINGER_RANGES = ((-0.314, 2.23), (-1.047, 1.047), (-0.506, 1.885), (-0.366, 2.042))
JOINT_RANGES = {
    "index": _LONG_FINGER_RANGES,
    "middle": _LONG_FINGER_RANGES,
    "ring": _LONG_FINGER_RANGES,
    "thumb": ((-0.349, 2.094), (-0.349, 2.094), (-0.47, 2.443), (-1.34, 1.88)),
}
FINGER_JOINT_NAMES = tuple(f"{f}_{j}" for f in FINGERS for j in FINGER_JOINTS[f])
NUM_FINGER_JOINTS = len(FINGER_JOINT_NAMES)  # 16

# Palm box half-extents (x along the fingers, y across the palm, z through it; the palm faces -z).
PALM_HALF = (0.045, 0.062, 0.015)
PALM_MASS = 0.237
# Finger bases on the palm's distal edge, about 45 mm apart; the thumb opposes them from the
# palm's proximal edge, on the index side.
FINGER_BASE_Y = {"index": 0.045, "middle": 0.0, "ring": -0.045}
FINGER_BASE_X = 0.05
THUMB_BASE = (-0.05, 0.025)
BASE_Z = -0.02
# Link lengths (m): proximal, medial, distal (the tip sphere sits at the end of the distal link).
LONG_FINGER_LINKS = (0.050, 0.036, 0.032)
THUMB_LINKS = (0.040, 0.040, 0.034)
LINK_RADIUS = 0.010
TIP_RADIUS = 0.012
# Masses (kg): mcp bracket + proximal, medial, distal.
LINK_MASSES = (0.076, 0.037, 0.016)

# Wrist: three slides and three hinges driven like a Cartesian impedance controller.
WRIST_JOINTS = ("wrist_x", "wrist_y", "wrist_z", "wrist_yaw", "wrist_pitch", "wrist_roll")
WRIST_RANGES = ((-0.35, 0.35), (-0.35, 0.35), (0.035, 0.45), (-3.2, 3.2), (-1.0, 1.0), (-1.6, 1.6))

OBJECT_SHAPES = ("box", "cylinder", "sphere", "capsule", "ellipsoid")
