"""Task registry: ``make("grasp", **overrides)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from brax.envs.base import Env

from envs.config import apply_overrides

_REGISTRY: dict[str, tuple[type, Any]] = {}


def register(name: str, env_cls: Callable[..., Env], default_config: Any) -> None:
    _REGISTRY[name] = (env_cls, default_config)


def tasks() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def default_config(name: str) -> Any:
    _check(name)
    return _REGISTRY[name][1]


def make_config(name: str, **overrides: Any) -> Any:
    return apply_overrides(default_config(name), overrides)


def make(name: str, config: Any = None, **overrides: Any) -> Env:
    """A single-instance env for task ``name``. ``overrides`` use the config's field names,
    dotted for nested fields (``make("grasp", **{"object.shape": "sphere"})``)."""
    _check(name)
    env_cls, default = _REGISTRY[name]
    if config is None:
        config = default
    elif not isinstance(config, type(default)):
        raise ValueError(f"config for {name!r} must be a {type(default).__name__}")
    return env_cls(apply_overrides(config, overrides))


def _check(name: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(tasks())}")


def config_from_dict(name: str, data: dict[str, Any]) -> Any:
    """Rebuild a task config from ``dataclasses.asdict`` output (e.g. a saved config.json)."""
    return apply_overrides(default_config(name), _flatten(data))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


__all__ = ["register", "tasks", "make", "make_config", "default_config", "config_from_dict"]
