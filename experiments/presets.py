"""Named run configurations for ``rfs steer --preset NAME``: a dict, not an if/elif chain.

A preset gives the defaults of the PPO and steering settings; every ``--ppo.*`` /
``--steering.*`` flag on the same command line overrides it. Sizes for the CPU preset follow
DESIGN.md's measurements (about 770 grasp control steps/s at 256 envs on 2 cores, so a million
env steps is roughly an hour).
"""

from __future__ import annotations

import dataclasses

from rfs_jax.agents.ppo import PPOConfig
from rfs_jax.steering import SteeringConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    """Defaults of one kind of run."""

    description: str
    ppo: PPOConfig
    steering: SteeringConfig = SteeringConfig()


PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        description="a laptop-class CPU: 256 envs, ~1M env steps (about an hour on 2 cores)",
        ppo=PPOConfig(
            num_envs=256,
            unroll_length=16,
            minibatch_size=1024,
            num_epochs=5,
            total_env_steps=1_000_000,
            eval_interval=10,
            eval_episodes=128,
            ckpt_interval=10,
        ),
    ),
    "gpu": Preset(
        description="one GPU: 4096 envs, 50M env steps",
        ppo=PPOConfig(
            num_envs=4096,
            unroll_length=16,
            minibatch_size=1024,  # the paper's
            num_epochs=5,
            total_env_steps=50_000_000,
            eval_interval=20,
            eval_episodes=1024,
            ckpt_interval=20,
        ),
    ),
    "probe": Preset(
        description="tests and smoke runs: tiny networks, a few iterations of 64 envs",
        ppo=PPOConfig(
            num_envs=64,
            unroll_length=2,
            minibatch_size=64,
            num_epochs=2,
            value_hidden=(32, 32),
            total_env_steps=4 * 64 * 2 * 2,  # 4 iterations at H_exec = 2
            eval_interval=2,
            eval_episodes=32,
            ckpt_interval=1,
        ),
        steering=SteeringConfig(hidden=(32, 32)),
    ),
}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]
