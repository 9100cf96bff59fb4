"""The RFS modulation policy pi(a0, ar | s) and the composition a = Des(s, a0) + beta * ar.

RFS (Su et al., arXiv 2602.01789) fine-tunes a frozen flow policy by learning, with PPO, a
diagonal Gaussian over the concatenation of
- the latent noise a0 ``[H * A]`` that the frozen sampler denoises (input steering, DSRL), and
- a residual ar ``[H_exec * A]`` added to the executed part of the chunk (output steering,
  Policy Decorator / ResiP).
To the RL algorithm the action is just the raw Gaussian sample ``raw = [a0, ar]``; the sampler
is a deterministic part of the environment from its point of view, so no gradient crosses the
ODE and no likelihood of the flow is needed. DSRL, residual RL and the plain base policy are the
same object with some dimensions switched off (``SteeringConfig.mode``).

Layout of ``raw [B, D]``: ``D = H * A + H_exec * A``, latent first. In the modes that do not learn
the latent its slot holds the fresh N(0, I) noise that was fed to the sampler, so a stored
``raw`` always reproduces the executed chunk through ``compose``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from rfs_jax.steering.config import SteeringConfig
from rfs_jax.types import Array, Params, PRNGKey

# sample(base_params, obs [B, O], a0 [B, H, A]) -> actions [B, H, A], the frozen base policy.
Sampler = Callable[[Params, Array, Array], Array]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class MLP(nn.Module):
    """ReLU MLP; the output layer is zero-initialised when ``zero_out`` (mean 0 at init)."""

    hidden: Sequence[int]
    out: int
    zero_out: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        if self.zero_out:
            return nn.Dense(self.out, kernel_init=nn.initializers.zeros)(x)
        return nn.Dense(self.out)(x)


def initial_log_std(
    latent_size: int, residual_size: int, init_residual_std: float, init_latent_std: float = 1.0
) -> Array:
    """``[D]`` log-stds of the untrained head: ``log(init_latent_std)`` on the latent (0 by
    default: N(0, I), the base's own noise), ``log(init_residual_std)`` on the residual."""
    return jnp.concatenate(
        [
            jnp.full((latent_size,), math.log(init_latent_std)),
            jnp.full((residual_size,), math.log(init_residual_std)),
        ]
    )


class SteeringHead(nn.Module):
    """Means ``[B, D]`` and state-independent log-stds ``[D]`` of the Gaussian over ``[a0, ar]``.

    Output layers start at zero, so the latent mean is 0 with std ``init_latent_std`` (1 by
    default: exactly N(0, I)), and the residual mean is 0 with std ``init_residual_std``.
    """

    latent_size: int
    residual_size: int
    hidden: Sequence[int]
    init_residual_std: float
    residual_sees_base_action: bool = False
    init_latent_std: float = 1.0

    @nn.compact
    def __call__(self, obs_n: Array, base_flat: Array) -> tuple[Array, Array]:
        """obs_n [B, O] (normalised), base_flat [B, H_exec * A] (used only by the ResiP form)."""
        if self.residual_sees_base_action:
            latent = MLP(self.hidden, self.latent_size, zero_out=True, name="latent")(obs_n)
            residual = MLP(self.hidden, self.residual_size, zero_out=True, name="residual")(
                jnp.concatenate([obs_n, base_flat], axis=-1)
            )
            mean = jnp.concatenate([latent, residual], axis=-1)
        else:
            mean = MLP(self.hidden, self.latent_size + self.residual_size, zero_out=True)(obs_n)
        init = initial_log_std(
            self.latent_size, self.residual_size, self.init_residual_std, self.init_latent_std
        )
        log_std = self.param("log_std", lambda _: init)
        return mean, log_std


class SteeringSample(NamedTuple):
    """One action of the steering policy for a batch of B observations."""

    raw: Array  # [B, D] the Gaussian sample PPO sees (latent slot = sampler noise)
    log_prob: Array  # [B] of raw, masked to the dimensions the mode learns
    chunk: Array  # [B, H_exec, A] executed actions
    base_chunk: Array  # [B, H_exec, A] the base policy's part, before the residual


def gaussian_log_prob(x: Array, mean: Array, log_std: Array, mask: Array) -> Array:
    """Sum over the masked dims of log N(x; mean, exp(log_std)^2). ``[..., D] -> [...]``."""
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(mask * (-0.5 * jnp.square(z) - log_std - _HALF_LOG_2PI), axis=-1)


def gaussian_entropy(log_std: Array, mask: Array) -> Array:
    """Sum over the masked dims of the entropy of N(., exp(log_std)^2). ``[..., D] -> [...]``."""
    return jnp.sum(mask * (log_std + 0.5 + _HALF_LOG_2PI), axis=-1)


def compose(
    cfg: SteeringConfig,
    sampler: Sampler,
    base_params: Params,
    obs: Array,
    raw: Array,
    horizon: int,
    exec_horizon: int,
) -> tuple[Array, Array]:
    """Executed chunk ``clip(Des(s, a0)[:, :H_exec] + beta * tanh(ar), -1, 1)`` per mode.

    Args:
      cfg: the steering config (mode, ``residual_scale`` beta, ``latent_bound``).
      sampler: the frozen base sampler ``sample(base_params, obs, a0) -> [B, H, A]``.
      base_params: its params (constants: the sampler stops their gradient).
      obs: ``[B, O]`` raw observations, as the base policy was trained on.
      raw: ``[B, H * A + H_exec * A]`` Gaussian sample ``[a0, ar]``.
      horizon, exec_horizon: H and H_exec of the base policy's chunks.

    Returns:
      ``(chunk [B, H_exec, A], base_chunk [B, H_exec, A])``. ``a0`` is clipped to
      ``latent_bound`` only where it is learned (rfs, dsrl); the residual is used only in rfs
      and residual modes (elsewhere ar = 0 whatever ``raw`` holds).
    """
    batch, size = raw.shape
    if size % (horizon + exec_horizon):
        raise ValueError(
            f"raw has {size} dims, not a multiple of horizon + exec_horizon = "
            f"{horizon} + {exec_horizon}"
        )
    action_size = size // (horizon + exec_horizon)
    latent_size = horizon * action_size
    a0 = raw[:, :latent_size].reshape(batch, horizon, action_size)
    if cfg.learns_latent:
        a0 = jnp.clip(a0, -cfg.latent_bound, cfg.latent_bound)
    base_chunk = sampler(base_params, obs, a0)[:, :exec_horizon]
    if not cfg.learns_residual:
        return base_chunk, base_chunk
    ar = raw[:, latent_size:].reshape(batch, exec_horizon, action_size)
    chunk = jnp.clip(base_chunk + cfg.residual_scale * jnp.tanh(ar), -1.0, 1.0)
    return chunk, base_chunk


@dataclasses.dataclass(frozen=True)
class Steering:
    """The steering policy as pure functions of its params (brax ``networks`` style).

    Build it with ``make_steering``. ``obs`` is the raw observation (for the base sampler),
    ``obs_n`` the normalised one (for the head); the caller owns the normaliser.
    """

    cfg: SteeringConfig
    sampler: Sampler
    obs_size: int
    action_size: int
    horizon: int
    exec_horizon: int

    @property
    def latent_size(self) -> int:
        return self.horizon * self.action_size

    @property
    def residual_size(self) -> int:
        return self.exec_horizon * self.action_size

    @property
    def raw_size(self) -> int:
        return self.latent_size + self.residual_size

    @property
    def mask(self) -> Array:
        """``[D]`` 1 on the dimensions this mode learns, 0 elsewhere."""
        return jnp.concatenate(
            [
                jnp.full((self.latent_size,), float(self.cfg.learns_latent)),
                jnp.full((self.residual_size,), float(self.cfg.learns_residual)),
            ]
        )

    @property
    def head(self) -> SteeringHead:
        return SteeringHead(
            latent_size=self.latent_size,
            residual_size=self.residual_size,
            hidden=self.cfg.hidden,
            init_residual_std=self.cfg.init_residual_std,
            residual_sees_base_action=self.cfg.residual_sees_base_action,
            init_latent_std=self.cfg.init_latent_std,
        )

    def init(self, key: PRNGKey) -> Params:
        return self.head.init(
            key, jnp.zeros((1, self.obs_size)), jnp.zeros((1, self.residual_size))
        )

    def distribution(self, params: Params, obs_n: Array, base_chunk: Array) -> tuple[Array, Array]:
        """``(mean [B, D], log_std [D])``; ``base_chunk [B, H_exec, A]`` matters only to the
        ResiP form (``residual_sees_base_action``)."""
        mean, log_std = self.head.apply(params, obs_n, base_chunk.reshape(obs_n.shape[0], -1))
        return mean, jnp.clip(log_std, self.cfg.min_log_std, self.cfg.max_log_std)

    def log_prob_entropy(
        self, params: Params, obs_n: Array, raw: Array, base_chunk: Array
    ) -> tuple[Array, Array]:
        """``(log_prob [B], entropy [B])`` of stored samples, over the learned dims only."""
        mean, log_std = self.distribution(params, obs_n, base_chunk)
        return self.log_prob_entropy_of(mean, log_std, raw)

    def log_prob_entropy_of(self, mean: Array, log_std: Array, raw: Array) -> tuple[Array, Array]:
        """``log_prob_entropy`` given the head's ``(mean [B, D], log_std [D])`` (for callers that
        also need the distribution itself, like the PPO loss)."""
        log_std = jnp.broadcast_to(log_std, mean.shape)
        return gaussian_log_prob(raw, mean, log_std, self.mask), gaussian_entropy(
            log_std, self.mask
        )

    def kl_to_base(self, mean: Array, log_std: Array) -> Array:
        """``KL(pi(. | s) || pi_0)`` over the learned dims, ``[B, D] -> [B]``.

        ``pi_0`` is the untrained head: latent N(0, init_latent_std^2) and residual
        N(0, init_residual_std^2), i.e. the base policy itself at the default latent std 1.
        ``log_std`` is ``[D]`` or ``[B, D]``.
        """
        log_std0 = initial_log_std(
            self.latent_size,
            self.residual_size,
            self.cfg.init_residual_std,
            self.cfg.init_latent_std,
        )
        log_ratio = log_std - log_std0
        kl = 0.5 * (jnp.exp(2.0 * log_ratio) + jnp.square(mean) * jnp.exp(-2.0 * log_std0) - 1.0)
        return jnp.sum(self.mask * (kl - log_ratio), axis=-1)

    def latent_offset_kl(self, mean: Array, weight: Array | None = None) -> Array:
        """``[]``: ``KL(N(m, I) || N(0, I)) = |m|^2 / 2`` of the latent mean's state-independent
        part ``m``, its (``weight``-ed) average over a batch ``mean [B, D]``; 0 in the modes that
        do not learn the latent.

        ``kl_to_base`` restricted to the part of the latent means that is the same in every
        state. That part has no use as steering: the frozen sampler turns a shared shift of its
        noise into the same action bias in every state (a wrist drift the delta actions
        integrate), and the policy gradient along it was measured at the level of its noise on
        the placing tasks (README, "Why the latent drifts"). The state-dependent part, the
        steering itself, is not penalised.
        """
        if not self.cfg.learns_latent:
            return jnp.zeros(())
        latent = mean[:, : self.latent_size]
        if weight is None:
            offset = jnp.mean(latent, axis=0)
        else:
            offset = jnp.sum(weight[:, None] * latent, axis=0) / jnp.maximum(jnp.sum(weight), 1.0)
        return 0.5 * jnp.sum(jnp.square(offset))

    def drift_metrics(self, mean: Array, log_std: Array) -> dict[str, Array]:
        """How far the head has moved from the base policy, over a batch ``mean [B, D]``.

        ``steering/latent_mean_rms``: root mean square of the latent means (0 for the untrained
        head, which is exactly the base; the policy at its mean feeds the sampler these);
        ``steering/latent_mean_offset_rms``: the same of their average over the batch, the part
        that is the same in every state; ``steering/latent_std``: mean std. Likewise
        ``residual_*`` (raw ``ar``, before ``tanh`` and the scale). Only the parts the mode
        learns are reported.
        """
        parts = []
        if self.cfg.learns_latent:
            parts.append(("latent", slice(0, self.latent_size)))
        if self.cfg.learns_residual:
            parts.append(("residual", slice(self.latent_size, self.raw_size)))
        metrics = {}
        for name, part in parts:
            m = mean[:, part]
            metrics[f"steering/{name}_mean_rms"] = jnp.sqrt(jnp.mean(jnp.square(m)))
            offset = jnp.mean(m, axis=0)
            metrics[f"steering/{name}_mean_offset_rms"] = jnp.sqrt(jnp.mean(jnp.square(offset)))
            metrics[f"steering/{name}_std"] = jnp.mean(jnp.exp(log_std[part]))
        return metrics

    def compose(self, base_params: Params, obs: Array, raw: Array) -> tuple[Array, Array]:
        """See the module-level ``compose``."""
        return compose(
            self.cfg, self.sampler, base_params, obs, raw, self.horizon, self.exec_horizon
        )

    def sample(
        self,
        params: Params,
        base_params: Params,
        obs: Array,
        obs_n: Array,
        key: PRNGKey,
        deterministic: bool = False,
    ) -> SteeringSample:
        """Draw ``[a0, ar]``, denoise, compose. ``obs``/``obs_n`` ``[B, O]``.

        ``deterministic`` (static) takes the mean of the *learned* dims; dims a mode does not
        learn keep their definition (fresh N(0, I) latent, zero residual), so deterministic
        ``base`` mode is still the stochastic base policy.
        """
        chex.assert_shape([obs, obs_n], (None, self.obs_size))
        batch = obs.shape[0]
        key_latent, key_residual = jax.random.split(key)
        eps_latent = jax.random.normal(key_latent, (batch, self.latent_size))
        eps_residual = jax.random.normal(key_residual, (batch, self.residual_size))
        if deterministic:
            eps_latent = eps_latent * (1.0 - float(self.cfg.learns_latent))
            eps_residual = jnp.zeros_like(eps_residual)

        placeholder = jnp.zeros((batch, self.exec_horizon, self.action_size))
        mean, log_std = self.distribution(params, obs_n, placeholder)
        std = jnp.exp(log_std)
        latent = eps_latent
        if self.cfg.learns_latent:
            latent = mean[:, : self.latent_size] + std[: self.latent_size] * eps_latent
        if self.cfg.residual_sees_base_action and self.cfg.learns_residual:
            # The residual's mean depends on the base action, which depends on the latent.
            dummy = jnp.concatenate([latent, jnp.zeros((batch, self.residual_size))], axis=-1)
            _, base_chunk = self.compose(base_params, obs, dummy)
            mean, log_std = self.distribution(params, obs_n, base_chunk)
            std = jnp.exp(log_std)
        residual = jnp.zeros_like(eps_residual)
        if self.cfg.learns_residual:
            residual = mean[:, self.latent_size :] + std[self.latent_size :] * eps_residual
        raw = jnp.concatenate([latent, residual], axis=-1)

        chunk, base_chunk = self.compose(base_params, obs, raw)
        log_prob = gaussian_log_prob(raw, mean, jnp.broadcast_to(log_std, mean.shape), self.mask)
        return SteeringSample(raw=raw, log_prob=log_prob, chunk=chunk, base_chunk=base_chunk)


def make_steering(
    cfg: SteeringConfig,
    sampler: Sampler,
    obs_size: int,
    action_size: int,
    horizon: int,
    exec_horizon: int,
) -> Steering:
    """The steering policy for a base sampler with chunks ``[H, A]`` of which H_exec run."""
    if not 1 <= exec_horizon <= horizon:
        raise ValueError(
            f"need 1 <= exec_horizon <= horizon, got exec_horizon={exec_horizon}, horizon={horizon}"
        )
    return Steering(
        cfg=cfg,
        sampler=sampler,
        obs_size=obs_size,
        action_size=action_size,
        horizon=horizon,
        exec_horizon=exec_horizon,
    )
