"""SAC networks for RFS: a tanh-squashed Gaussian actor over the steering action and twin critics.

The actor draws ``u ~ N(mu(s), sigma(s))`` over the same ``[a0, ar]`` layout as the PPO head
(``rfs_jax.steering``) and squashes it: the latent fed to the sampler is ``bound * tanh(u_l)``,
the residual goes through ``rfs_jax.steering.compose`` (which applies ``beta * tanh``), so
``raw = [bound * tanh(u_l), u_r]`` reproduces the executed chunk exactly as a PPO sample does.
Dimensions a mode does not learn keep their definition (fresh ``N(0, I)`` latent in residual
mode, zero residual in dsrl mode) and are left out of the log-probability.

The critics see the steering action in ``[-1, 1]``: ``act = [tanh(u_l), tanh(u_r)]`` (zero on
unlearned dims), or, for the aliased action critic, the executed chunk itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from rfs_jax import running_stats
from rfs_jax.agents.sac.config import SACConfig
from rfs_jax.running_stats import RunningStats
from rfs_jax.steering import Steering
from rfs_jax.types import Array, Params, PRNGKey

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_STD_MIN, _LOG_STD_MAX = -5.0, 1.0


class Actor(nn.Module):
    """``(mean [B, D], log_std [B, D])`` of the pre-tanh Gaussian; output layer zero-initialised
    (mean 0), its log-std bias set to ``init_log_std`` (so the untrained actor is about the
    base policy)."""

    hidden: Sequence[int]
    init_log_std: tuple[float, ...]

    @nn.compact
    def __call__(self, obs_n: Array) -> tuple[Array, Array]:
        x = obs_n
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        size = len(self.init_log_std)
        mean = nn.Dense(size, kernel_init=nn.initializers.zeros)(x)
        init = jnp.asarray(self.init_log_std)
        log_std = nn.Dense(size, kernel_init=nn.initializers.zeros, bias_init=lambda *_: init)(x)
        return mean, jnp.clip(log_std, _LOG_STD_MIN, _LOG_STD_MAX)


class TwinQ(nn.Module):
    """Two independent Q MLPs of ``[obs_n, action]``, LayerNorm after each hidden layer;
    ``-> [2, B]``."""

    hidden: Sequence[int]

    @nn.compact
    def __call__(self, obs_n: Array, action: Array) -> Array:
        x0 = jnp.concatenate([obs_n, action], axis=-1)
        qs = []
        for i in range(2):
            x = x0
            for j, width in enumerate(self.hidden):
                x = nn.Dense(width, name=f"q{i}_dense{j}")(x)
                x = nn.relu(nn.LayerNorm(name=f"q{i}_norm{j}")(x))
            qs.append(nn.Dense(1, name=f"q{i}_out")(x)[..., 0])
        return jnp.stack(qs)


class ActorSample(NamedTuple):
    raw: Array  # [B, D] what compose takes: [bound * tanh(u_l) or noise, u_r or 0]
    act: Array  # [B, D] the critic's steering action in [-1, 1], 0 on unlearned dims
    log_prob: Array  # [B] of the squashed action, over the learned dims
    mean_act: Array  # [B, D] tanh of the mean (the deterministic action), 0 on unlearned dims
    mean: Array  # [B, D] the pre-tanh Gaussian's mean
    log_std: Array  # [B, D] and log-std


@dataclasses.dataclass(frozen=True)
class SACNetworks:
    steering: Steering  # layout, mode, sampler and compose (its head is not used)
    cfg: SACConfig

    @property
    def actor(self) -> Actor:
        s = self.steering
        init = [math.log(self.cfg.init_latent_std)] * s.latent_size + [
            math.log(self.cfg.init_residual_std)
        ] * s.residual_size
        return Actor(self.cfg.actor_hidden, tuple(init))

    @property
    def init_log_std(self) -> Array:
        """``[D]`` the untrained actor's pre-tanh log-std (its mean is 0)."""
        return jnp.asarray(self.actor.init_log_std)

    @property
    def critic(self) -> TwinQ:
        return TwinQ(self.cfg.critic_hidden)

    @property
    def action_critic_size(self) -> int:
        """Input size of the aliased action critic: the executed chunk, flattened."""
        return self.steering.residual_size

    def normalize(self, stats: RunningStats, obs: Array) -> Array:
        return running_stats.normalize(stats, obs, clip=self.cfg.obs_clip)

    @property
    def learned(self) -> Array:
        """``[D]`` 1 on the learned dims."""
        return self.steering.mask

    @property
    def num_learned(self) -> int:
        s = self.steering
        return s.latent_size * s.cfg.learns_latent + s.residual_size * s.cfg.learns_residual

    @property
    def target_entropy(self) -> float:
        return self.cfg.target_entropy_per_dim * self.num_learned

    def init_actor(self, key: PRNGKey) -> Params:
        return self.actor.init(key, jnp.zeros((1, self.steering.obs_size)))

    def init_critic(self, key: PRNGKey, action_size: int) -> Params:
        return self.critic.init(
            key, jnp.zeros((1, self.steering.obs_size)), jnp.zeros((1, action_size))
        )

    def _latent_scale(self) -> Array:
        """``[D]``: ``bound`` on latent dims, 1 on residual dims (``a = scale * tanh(u)``)."""
        s = self.steering
        return jnp.concatenate(
            [jnp.full((s.latent_size,), self.cfg.latent_bound), jnp.ones((s.residual_size,))]
        )

    def to_raw(self, act: Array, noise: Array) -> Array:
        """``raw`` for compose from the critic's action ``act [B, D]`` in ``(-1, 1)``; ``noise``
        ``[B, D]`` N(0, I) fills the latent where the mode does not learn it."""
        s = self.steering
        latent = jnp.where(
            s.cfg.learns_latent,
            self.cfg.latent_bound * act[:, : s.latent_size],
            noise[:, : s.latent_size],
        )
        r = jnp.clip(act[:, s.latent_size :], -1.0 + 1e-6, 1.0 - 1e-6)
        residual = jnp.where(s.cfg.learns_residual, jnp.arctanh(r), 0.0)
        return jnp.concatenate([latent, residual], axis=-1)

    def sample(
        self, actor_params: Params, obs_n: Array, key: PRNGKey, deterministic: bool = False
    ) -> ActorSample:
        """Draw the steering action (reparameterised: differentiable in ``actor_params``)."""
        mean, log_std = self.actor.apply(actor_params, obs_n)
        key_u, key_noise = jax.random.split(key)
        eps = jax.random.normal(key_u, mean.shape)
        u = mean if deterministic else mean + jnp.exp(log_std) * eps
        mask = self.learned
        squashed = jnp.tanh(u)
        act = mask * squashed
        log_prob_u = -0.5 * jnp.square(eps) - log_std - _HALF_LOG_2PI
        if deterministic:
            log_prob_u = -log_std - _HALF_LOG_2PI
        # a = scale * tanh(u): log|da/du| = log(scale) + log(1 - tanh(u)^2), the stable form.
        log_det = jnp.log(self._latent_scale()) + 2.0 * (
            math.log(2.0) - u - jax.nn.softplus(-2.0 * u)
        )
        log_prob = jnp.sum(mask * (log_prob_u - log_det), axis=-1)
        noise = jax.random.normal(key_noise, mean.shape)
        raw = self.to_raw(act, noise)
        return ActorSample(
            raw=raw,
            act=act,
            log_prob=log_prob,
            mean_act=mask * jnp.tanh(mean),
            mean=mean,
            log_std=log_std,
        )

    def alias_actions(self, key: PRNGKey, batch: int) -> tuple[Array, Array]:
        """``(act, raw)`` of the aliasing regression: ``a0 ~ N(0, I)`` clipped to the latent
        bound, ``ar ~ U(-1, 1)``; unlearned dims as the actor has them."""
        s = self.steering
        key_l, key_r, key_noise = jax.random.split(key, 3)
        latent = (
            jnp.clip(
                jax.random.normal(key_l, (batch, s.latent_size)),
                -self.cfg.latent_bound,
                self.cfg.latent_bound,
            )
            / self.cfg.latent_bound
        )
        residual = jax.random.uniform(key_r, (batch, s.residual_size), minval=-1.0, maxval=1.0)
        act = self.learned * jnp.concatenate([latent, residual], axis=-1)
        noise = jax.random.normal(key_noise, act.shape)
        return act, self.to_raw(act, noise)

    def drift_metrics(self, actor_params: Params, obs_n: Array) -> dict[str, Array]:
        """The actor's latent and residual means (in the sampler's units) and stds."""
        mean, log_std = self.actor.apply(actor_params, obs_n)
        s = self.steering
        metrics = {}
        parts = []
        if s.cfg.learns_latent:
            parts.append(("latent", slice(0, s.latent_size), self.cfg.latent_bound))
        if s.cfg.learns_residual:
            parts.append(("residual", slice(s.latent_size, s.raw_size), 1.0))
        for name, part, scale in parts:
            m = scale * jnp.tanh(mean[:, part])
            metrics[f"steering/{name}_mean_rms"] = jnp.sqrt(jnp.mean(jnp.square(m)))
            offset = jnp.mean(m, axis=0)
            metrics[f"steering/{name}_mean_offset_rms"] = jnp.sqrt(jnp.mean(jnp.square(offset)))
            metrics[f"steering/{name}_std"] = jnp.mean(jnp.exp(log_std[:, part]))
        return metrics


def check_latent_bound(steering: Steering, bound: float, flag: str) -> None:
    """An actor's ``latent_bound * tanh`` latent must stay inside the clip ``compose`` applies
    (``flag`` names the option in the error, e.g. ``sac.latent_bound``)."""
    if steering.cfg.learns_latent and bound > steering.cfg.latent_bound:
        raise ValueError(
            f"{flag} {bound} must not exceed steering.latent_bound "
            f"{steering.cfg.latent_bound} (the clip compose applies)"
        )


def make_sac_networks(steering: Steering, cfg: SACConfig) -> SACNetworks:
    check_latent_bound(steering, cfg.latent_bound, "sac.latent_bound")
    return SACNetworks(steering=steering, cfg=cfg)


def make_policy(networks: SACNetworks, base_params: Params):
    """``policy(params=(obs_stats, actor_params), obs [B, O], key, deterministic) -> chunk``, the
    same signature as ``rfs_jax.agents.ppo.make_policy``."""

    def policy(params, obs: Array, key: PRNGKey, deterministic: bool = False) -> Array:
        obs_stats, actor_params = params
        obs_n = networks.normalize(obs_stats, obs)
        sample = networks.sample(actor_params, obs_n, key, deterministic=deterministic)
        chunk, _ = networks.steering.compose(base_params, obs, sample.raw)
        return chunk

    return policy
