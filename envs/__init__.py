"""Single-instance MJX hand tasks on the brax ``Env`` interface, and the registry."""

from envs.grasp import Grasp, GraspConfig
from envs.registry import config_from_dict, default_config, make, make_config, register, tasks

register("grasp", Grasp, GraspConfig())

__all__ = ["make", "make_config", "default_config", "config_from_dict", "register", "tasks"]
