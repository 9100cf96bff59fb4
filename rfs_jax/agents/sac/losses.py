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


def base_kl(mean: Array, log_std: Array, init_log_std: Array, mask: Array) -> Array:
    """``[B]`` KL of the actor's pre-tanh Gaussian ``N(mean, exp(log_std)^2)`` from the
    untrained actor's ``N(0, exp(init_log_std)^2)`` (about the base policy), summed over the
    learned dims (``mask [D]``): ``log(s0 / s) + (s^2 + mean^2) / (2 s0^2) - 1/2``."""
    var0 = jnp.exp(2.0 * init_log_std)
    kl = init_log_std - log_std + (jnp.exp(2.0 * log_std) + jnp.square(mean)) / (2.0 * var0) - 0.5
    return jnp.sum(mask * kl, axis=-1)


def actor_loss_with_base_kl(
    q: Array, log_prob: Array, alpha: Array, kl: Array, coef: float
) -> Array:
    """``actor_loss`` plus ``coef * mean|min_i Q_i| * mean(kl)``: the KL to the base is weighted
    by the batch's Q scale (a constant here, as TD3+BC normalises its Q term), so that ``coef``
    does not depend on the task's reward scale."""
    q_min = jnp.min(q, axis=0)
    scale = jax.lax.stop_gradient(jnp.mean(jnp.abs(q_min)))
    return actor_loss(q, log_prob, alpha) + coef * scale * jnp.mean(kl)


def alpha_loss(log_alpha: Array, log_prob: Array, target_entropy: float) -> Array:
    """Temperature loss ``-log_alpha * (log pi + target_entropy)`` (SAC v2)."""
    return -log_alpha * jnp.mean(jax.lax.stop_gradient(log_prob) + target_entropy)
