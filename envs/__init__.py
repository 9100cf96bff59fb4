"""Single-instance MJX hand tasks on the brax ``Env`` interface, and the registry."""

import contextlib
import io

# MJX's optional Warp backend prints a line when warp is not installed (it is GPU-only and
# unused here); keep it off the user's terminal.
with contextlib.redirect_stdout(io.StringIO()):
    from mujoco import mjx  # noqa: F401

from envs.grasp import Grasp, GraspConfig
from envs.pack import Pack, PackConfig
from envs.pick_place import PickPlace, PickPlaceConfig
from envs.pour import Pour, PourConfig
from envs.push_to_grasp import PushToGrasp, PushToGraspConfig
from envs.registry import config_from_dict, default_config, make, make_config, register, tasks
from envs.stack import Stack, StackConfig

register("grasp", Grasp, GraspConfig())
register("pick_place", PickPlace, PickPlaceConfig())
register("stack", Stack, StackConfig())
register("push_to_grasp", PushToGrasp, PushToGraspConfig())
register("pack", Pack, PackConfig())
register("pour", Pour, PourConfig())

__all__ = ["make", "make_config", "default_config", "config_from_dict", "register", "tasks"]
