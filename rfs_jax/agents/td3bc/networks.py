"""TD3+BC networks for offline RFS: a deterministic steering actor and twin critics.

The actor maps the normalised observation to ``act = tanh(.)`` in ``(-1, 1)`` over the PPO
head's ``[a0, ar]`` layout (``rfs_jax.steering``); the sampler is fed ``a0 = latent_bound *
act_l`` and the executed residual is ``residual_scale * act_r`` (compose's ``beta * tanh``).
Its output layer starts at zero, so the untrained actor is the base policy at its mean
(``a0 = 0``, no residual): offline RFS starts from the deployed policy's base.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from rfs_jax import running_stats
from rfs_jax.agents.sac.networks import TwinQ, check_latent_bound
from rfs_jax.agents.td3bc.config import TD3BCConfig
from rfs_jax.running_stats import RunningStats
from rfs_jax.steering import Steering
from rfs_jax.types import Array, Params, PRNGKey


class DeterministicActor(nn.Module):
    """``tanh`` of an MLP of ``obs_n``, ``[B, D]``; zero-initialised output layer."""

    hidden: Sequence[int]
    size: int

    @nn.compact
    def __call__(self, obs_n: Array) -> Array:
        x = obs_n
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return jnp.tanh(nn.Dense(self.size, kernel_init=nn.initializers.zeros)(x))


@dataclasses.dataclass(frozen=True)
class TD3BCNetworks:
    steering: Steering  # layout, mode, sampler and compose
    cfg: TD3BCConfig

    @property
    def actor(self) -> DeterministicActor:
        return DeterministicActor(self.cfg.actor_hidden, self.steering.raw_size)

    @property
    def critic(self) -> TwinQ:
        return TwinQ(self.cfg.critic_hidden)

    @property
    def critic_action_size(self) -> int:
        r = self.steering.residual_size
        return 2 * r if self.cfg.critic == "concat" else r

    def normalize(self, stats: RunningStats, obs: Array) -> Array:
        return running_stats.normalize(stats, obs, clip=self.cfg.obs_clip)

    def init_actor(self, key: PRNGKey) -> Params:
        return self.actor.init(key, jnp.zeros((1, self.steering.obs_size)))

    def init_critic(self, key: PRNGKey) -> Params:
        return self.critic.init(
            key, jnp.zeros((1, self.steering.obs_size)), jnp.zeros((1, self.critic_action_size))
        )

    def to_raw(self, act: Array) -> Array:
        """``raw`` for ``compose`` from ``act [B, D]`` in ``(-1, 1)``: the latent scaled to the
        bound, the residual's pre-tanh value; unlearned dims are 0 (latent 0 is the base's
        mean, and compose ignores the residual where it is not learned)."""
        s = self.steering
        latent = self.cfg.latent_bound * act[:, : s.latent_size] * s.cfg.learns_latent
        r = jnp.clip(act[:, s.latent_size :], -1.0 + 1e-6, 1.0 - 1e-6)
        residual = jnp.arctanh(r) * s.cfg.learns_residual
        return jnp.concatenate([latent, residual], axis=-1)

    def executed(self, base_params: Params, obs: Array, act: Array) -> tuple[Array, Array]:
        """``(base [B, R], residual [B, R])`` of the chunk the env would execute for ``act``:
        ``base = Des(s, a0)[:H_exec]`` and ``residual = chunk - base`` (after compose's clip
        to the action range, as the recorded ``a_r = a_exec - a_b`` is), both flattened."""
        chunk, base_chunk = self.steering.compose(base_params, obs, self.to_raw(act))
        b = obs.shape[0]
        return base_chunk.reshape(b, -1), (chunk - base_chunk).reshape(b, -1)


def make_td3bc_networks(steering: Steering, cfg: TD3BCConfig) -> TD3BCNetworks:
    check_latent_bound(steering, cfg.latent_bound, "td3bc.latent_bound")
    return TD3BCNetworks(steering=steering, cfg=cfg)


def make_policy(networks: TD3BCNetworks, base_params: Params):
    """``policy(params=(obs_stats, actor_params), obs [B, O], key, deterministic) -> chunk``, the
    signature of ``rfs_jax.agents.ppo.make_policy`` (the actor is deterministic: ``key`` and
    ``deterministic`` are unused)."""

    def policy(params, obs: Array, key: PRNGKey, deterministic: bool = True) -> Array:
        del key, deterministic
        obs_stats, actor_params = params
        act = networks.actor.apply(actor_params, networks.normalize(obs_stats, obs))
        chunk, _ = networks.steering.compose(base_params, obs, networks.to_raw(act))
        return chunk

    return policy
