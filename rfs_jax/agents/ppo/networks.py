"""PPO networks for RFS: the steering policy (``rfs_jax.steering``) and a value MLP.

The paper's value network is a 256-128-64 ReLU MLP of the (privileged, normalised) state.
``make_policy`` turns the networks into ``policy(params, obs, key, deterministic)``, so acting
and evaluation code never see Flax modules (brax ``make_inference_fn`` style).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from rfs_jax import running_stats
from rfs_jax.running_stats import RunningStats
from rfs_jax.steering import Steering
from rfs_jax.steering.policy import MLP
from rfs_jax.types import Array, Params, PRNGKey


class ValueNet(nn.Module):
    """V(obs_n [B, O]) -> [B]."""

    hidden: Sequence[int]

    @nn.compact
    def __call__(self, obs_n: Array) -> Array:
        return MLP(self.hidden, 1)(obs_n)[..., 0]


@dataclasses.dataclass(frozen=True)
class PPONetworks:
    steering: Steering
    value: ValueNet
    obs_clip: float

    def normalize(self, stats: RunningStats, obs: Array) -> Array:
        return running_stats.normalize(stats, obs, clip=self.obs_clip)

    def init_value(self, key: PRNGKey) -> Params:
        return self.value.init(key, jnp.zeros((1, self.steering.obs_size)))


def make_ppo_networks(
    steering: Steering, value_hidden: Sequence[int] = (256, 128, 64), obs_clip: float = 10.0
) -> PPONetworks:
    return PPONetworks(steering=steering, value=ValueNet(tuple(value_hidden)), obs_clip=obs_clip)


# policy(params=(obs_stats, steering_params), obs [B, O], key, deterministic) -> [B, H_exec, A]
Policy = Callable[..., Array]


def make_policy(networks: PPONetworks, base_params: Params) -> Policy:
    """Inference function ``policy(params, obs, key, deterministic=False) -> chunk``.

    ``params`` is ``(obs_stats, steering_params)`` (``TrainingState.policy_params``);
    ``obs [B, O]`` raw; the result is the executed chunk ``[B, H_exec, A]``. The base params are
    closed over as constants. ``deterministic`` must be a Python bool (static).
    """

    def policy(
        params: tuple[RunningStats, Params], obs: Array, key: PRNGKey, deterministic: bool = False
    ) -> Array:
        obs_stats, steering_params = params
        obs_n = networks.normalize(obs_stats, obs)
        sample = networks.steering.sample(
            steering_params, base_params, obs, obs_n, key, deterministic=deterministic
        )
        return sample.chunk

    return policy
