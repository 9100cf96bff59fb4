"""Single-instance MJX hand tasks on the brax ``Env`` interface, and the registry."""

import contextlib
import io

# MJX's optional Warp backend prints a line when warp is not installed (it is GPU-only and
# unused here); keep it off the user's terminal.
with contextlib.redirect_stdout(io.StringIO()):
    from mujoco import mjx  # noqa: F401

from envs.grasp import Grasp, GraspConfig
from envs.registry import config_from_dict, default_config, make, make_config, register, tasks

register("grasp", Grasp, GraspConfig())

__all__ = ["make", "make_config", "default_config", "config_from_dict", "register", "tasks"]
