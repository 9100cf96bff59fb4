"""The agents ``rfs steer --algo`` can run, behind one small interface the run layer uses.

Each agent module (``rfs_jax.agents.ppo``, ``rfs_jax.agents.sac``) provides the same functions:
``make_networks(env, sampler, steering_cfg, cfg, horizon=, exec_horizon=)``,
``abstract_training_state(env, episode_length, networks, cfg, key, mesh=)``, ``train(...)`` (one
compiled iteration inside the shared host loop ``rfs_jax.agents.loop``) and
``make_policy(networks, base_params)``; its training state has ``obs_stats``,
``steering_params``, ``env_steps``, ``iteration`` and ``policy_params``. Everything else
(folder, config.json, progress, metrics, checkpoints, resume, Ctrl-C, NaN guard, evaluation,
curves, seeds, sharding) is ``experiments.steer``'s, the same for every agent.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal, get_args

Algo = Literal["ppo", "sac"]
ALGOS: tuple[str, ...] = get_args(Algo)


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    name: str
    module_name: str
    resumable: tuple[str, ...]
    """Config fields a resumed run may change (budget, cadence, step sizes)."""
    step_sizes: tuple[str, ...]
    """Of those, the step sizes (recorded in config.json's ``resume_changes``)."""
    finite_parts: Callable[[Any], tuple]
    """The parts of a state that must be finite to be saved."""
    multi_device: bool
    multi_seed: bool

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(self.module_name)

    @property
    def config_cls(self) -> type:
        names = {"ppo": "PPOConfig", "sac": "SACConfig", "td3bc": "TD3BCConfig"}
        return getattr(self.module, names[self.name])


_CADENCE = ("total_env_steps", "eval_interval", "eval_episodes", "log_interval", "ckpt_interval")

AGENTS: dict[str, AgentSpec] = {
    "ppo": AgentSpec(
        name="ppo",
        module_name="rfs_jax.agents.ppo",
        resumable=_CADENCE + ("policy_lr", "value_lr", "max_grad_norm"),
        step_sizes=("policy_lr", "value_lr", "max_grad_norm"),
        finite_parts=lambda s: (
            s.steering_params,
            s.value_params,
            s.policy_opt_state,
            s.value_opt_state,
            s.obs_stats,
        ),
        multi_device=True,
        multi_seed=True,
    ),
    "sac": AgentSpec(
        name="sac",
        module_name="rfs_jax.agents.sac",
        resumable=_CADENCE + ("actor_lr", "critic_lr", "alias_lr", "alpha_lr", "max_grad_norm"),
        step_sizes=("actor_lr", "critic_lr", "alias_lr", "alpha_lr", "max_grad_norm"),
        finite_parts=lambda s: (
            s.steering_params,
            s.critic_params,
            s.target_critic_params,
            s.alias_params,
            s.log_alpha,
            s.obs_stats,
        ),
        multi_device=False,
        multi_seed=False,
    ),
    # Offline RFS (``rfs offline``): not an ``rfs steer --algo``; its folders evaluate, export
    # and resume through the same layer (``train`` is ``rfs_jax.agents.td3bc.fit``).
    "td3bc": AgentSpec(
        name="td3bc",
        module_name="rfs_jax.agents.td3bc",
        resumable=(),
        step_sizes=(),
        finite_parts=lambda s: (s.steering_params, s.critic, s.obs_stats),
        multi_device=False,
        multi_seed=False,
    ),
}


def agent(name: str) -> AgentSpec:
    if name not in AGENTS:
        raise ValueError(f"unknown algorithm {name!r}; expected one of {', '.join(AGENTS)}")
    return AGENTS[name]


def algo_of(config: dict) -> str:
    """The algorithm of a saved run config (runs from before --algo are PPO's)."""
    return config.get("algo", "ppo")


def is_run_config(config: dict) -> bool:
    """A steering run's config.json (a base policy's has none of the agents' sections)."""
    return any(name in config for name in AGENTS)
