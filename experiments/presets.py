"""Named run configurations for ``rfs steer --preset NAME``: a dict, not an if/elif chain.

A preset gives the defaults of the PPO and steering settings; every ``--ppo.*`` /
``--steering.*`` flag on the same command line overrides it. Sizes for the CPU preset follow
DESIGN.md's measurements (about 770 grasp control steps/s at 256 envs on 2 cores, so a million
env steps is roughly an hour).
"""

from __future__ import annotations

import dataclasses

from rfs_jax.agents.ppo import PPOConfig
from rfs_jax.agents.sac import SACConfig
from rfs_jax.steering import SteeringConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    """Defaults of one kind of run."""

    description: str
    ppo: PPOConfig
    steering: SteeringConfig = SteeringConfig()
    sac: SACConfig = SACConfig()
    """``rfs steer --algo sac``'s defaults on the same machine."""


# The untrained latent's std (SteeringConfig.init_latent_std) of the cpu and gpu presets: 0.5,
# not the base's own 1. At 1M env steps (rfs, cpu preset, same 512 episodes, sampled / at the
# mean) pick_place 0.691 / 0.742 with 0.5 against 0.508 / 0.555 with 1 (base 0.283 / 0.312),
# push_to_grasp 0.338 / 0.447 against 0.139 / 0.160 (base 0.037 / 0.074): 132 latent dims of
# unit noise per decision bury the policy gradient; half the std starts the head between the
# sampled base and the base at its mean, and the latent's mean drifts less (docs/results.md).
NARROW_LATENT = SteeringConfig(init_latent_std=0.5)

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
        steering=NARROW_LATENT,
        # 1,024 decisions (2,048 env steps) per iteration, 8 updates of 1,024: replay ratio 8.
        # Checkpoints hold the 200k-decision buffer, so they are sparser than PPO's.
        sac=SACConfig(
            num_envs=256,
            unroll_length=4,
            num_updates=8,
            batch_size=1024,
            buffer_size=200_000,
            learning_starts=4096,
            actor_starts=32_768,  # 32 iterations (65k env steps) of critic-only learning
            total_env_steps=1_000_000,
            eval_interval=25,
            eval_episodes=128,
            ckpt_interval=50,
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
        steering=NARROW_LATENT,
        sac=SACConfig(
            num_envs=4096,
            unroll_length=1,
            num_updates=8,
            batch_size=4096,
            buffer_size=1_000_000,
            learning_starts=16_384,
            actor_starts=131_072,
            total_env_steps=20_000_000,
            eval_interval=100,
            eval_episodes=1024,
            ckpt_interval=200,
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
        sac=SACConfig(
            num_envs=64,
            unroll_length=2,
            num_updates=2,
            batch_size=64,
            buffer_size=1024,
            learning_starts=128,
            actor_hidden=(32, 32),
            critic_hidden=(32, 32),
            total_env_steps=4 * 64 * 2 * 2,  # 4 iterations at H_exec = 2
            eval_interval=2,
            eval_episodes=32,
            ckpt_interval=1,
        ),
    ),
}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]
