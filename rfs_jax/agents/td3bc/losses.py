"""TD3+BC losses over the steering action, as plain functions of arrays (tested by hand).

Transitions are decisions: ``reward`` is the chunk's summed reward, ``termination`` 1 where the
episode ended by success or failure (no bootstrap), ``weight`` 0 where the next observation is not
the transition's own (a time-limit truncation whose stored next observation is the reset one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rfs_jax.agents.sac.losses import critic_loss  # the same weighted twin TD loss
from rfs_jax.types import Array, PRNGKey

__all__ = ["actor_loss", "critic_action", "critic_loss", "smoothed_action", "td_target"]


def smoothed_action(act: Array, key: PRNGKey, noise: float, noise_clip: float) -> Array:
    """Target policy smoothing: ``clip(act + clip(N(0, noise^2), +-noise_clip), -1, 1)``, kept
    strictly inside ``(-1, 1)`` so that the residual's ``arctanh`` stays finite."""
    eps = jnp.clip(noise * jax.random.normal(key, act.shape), -noise_clip, noise_clip)
    return jnp.clip(act + eps, -1.0 + 1e-6, 1.0 - 1e-6)


def td_target(reward: Array, termination: Array, next_q: Array, gamma: float) -> Array:
    """``r + gamma (1 - term) min_i Q_targ_i(s', a')``; ``next_q [2, B]``, the rest ``[B]``."""
    return jax.lax.stop_gradient(reward + gamma * (1.0 - termination) * jnp.min(next_q, axis=0))


def actor_loss(
    q: Array, residual: Array, residual_label: Array, alpha: float, bc_coef: float
) -> tuple[Array, Array]:
    """TD3+BC's actor loss ``-lambda mean(Q) + bc_coef mean ||a_r_hat - a_r||^2`` with
    ``lambda = alpha / mean|Q|`` (a constant), and that lambda.

    ``q [B]`` is the first critic at the actor's action; ``residual``, ``residual_label [B, R]``
    the actor's executed residual and the recorded one (``a_exec - a_b``). The squared error is
    summed over the residual dims and averaged over the batch, as TD3+BC's BC term.
    """
    lam = jax.lax.stop_gradient(alpha / jnp.maximum(jnp.mean(jnp.abs(q)), 1e-6))
    bc = jnp.mean(jnp.sum(jnp.square(residual - residual_label), axis=-1))
    return -lam * jnp.mean(q) + bc_coef * bc, lam


def critic_action(kind: str, base: Array, residual: Array) -> Array:
    """What the critic sees: ``composed`` ``a_b + a_r``; ``residual`` ``a_r``; ``concat``
    ``[a_r, a_b]``. ``base``, ``residual [B, R]`` (executed chunk parts, flattened)."""
    if kind == "composed":
        return base + residual
    if kind == "residual":
        return residual
    if kind == "concat":
        return jnp.concatenate([residual, base], axis=-1)
    raise ValueError(f"unknown critic {kind!r}")
