"""SAC losses over the steering action, as plain functions of arrays (tested by hand).

Transitions are decisions: ``reward`` is the chunk's summed reward, ``termination`` 1 where the
episode ended by success or failure (no bootstrap), ``weight`` 0 on a time-limit truncation
(the stored next observation is already the reset one, so the transition is left out rather
than bootstrapped from the wrong state; as PPO masks it in GAE).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rfs_jax.types import Array


def td_target(
    reward: Array,
    termination: Array,
    next_q: Array,
    next_log_prob: Array,
    alpha: Array,
    gamma: float,
) -> Array:
    """``r + gamma (1 - term) (min_i Q_targ_i(s', a') - alpha log pi(a' | s'))``.

    ``next_q`` is ``[2, B]`` (twin target critics at the next action), the rest ``[B]``."""
    soft = jnp.min(next_q, axis=0) - alpha * next_log_prob
    return jax.lax.stop_gradient(reward + gamma * (1.0 - termination) * soft)


def critic_loss(q: Array, target: Array, weight: Array) -> Array:
    """Weighted squared TD error, summed over the twins: ``q [2, B]``, ``target, weight [B]``."""
    err = jnp.square(q - target[None])
    return jnp.sum(jnp.sum(weight[None] * err, axis=1) / jnp.maximum(jnp.sum(weight), 1.0))


def alias_loss(q_w: Array, q_a: Array) -> Array:
    """Regression of the steering critic onto the action critic at the denoised action:
    ``sum_i mean((Q_W_i(s, w) - min_j Q_A_j(s, Des(s, w)))^2)``, ``q_w, q_a [2, B]``."""
    target = jax.lax.stop_gradient(jnp.min(q_a, axis=0))
    return jnp.sum(jnp.mean(jnp.square(q_w - target[None]), axis=1))


def actor_loss(q: Array, log_prob: Array, alpha: Array) -> Array:
    """``mean(alpha log pi - min_i Q_i)``, ``q [2, B]``; alpha is a constant here."""
    return jnp.mean(jax.lax.stop_gradient(alpha) * log_prob - jnp.min(q, axis=0))


def alpha_loss(log_alpha: Array, log_prob: Array, target_entropy: float) -> Array:
    """Temperature loss ``-log_alpha * (log pi + target_entropy)`` (SAC v2)."""
    return -log_alpha * jnp.mean(jax.lax.stop_gradient(log_prob) + target_entropy)
