"""PPO losses (Schulman et al. 2017) over the steering action ``[a0, ar]`` of RFS.

Every loss is a pure function returning ``(loss, metrics)``; transitions whose episode was cut
by a time limit carry weight 0 (see ``rfs_jax.gae``), so all means are weighted means.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rfs_jax.agents.ppo.networks import PPONetworks
from rfs_jax.running_stats import RunningStats
from rfs_jax.types import Array, Metrics, Params


class Batch(NamedTuple):
    """Decisions for one SGD step; every field has leading axis ``[N]``."""

    obs: Array  # [N, O] raw observation the decision was taken on
    raw: Array  # [N, D] Gaussian sample [a0, ar]
    base_chunk: Array  # [N, H_exec, A] base part of the executed chunk
    log_prob: Array  # [N] behaviour log-probability of raw
    advantage: Array  # [N]
    target: Array  # [N] value target (GAE return)
    weight: Array  # [N] 0 for time-limit-truncated transitions, 1 otherwise


def _weighted_mean(x: Array, w: Array) -> Array:
    return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)


def clipped_policy_loss(
    log_prob: Array,
    old_log_prob: Array,
    advantage: Array,
    weight: Array,
    clip_eps: float,
) -> tuple[Array, Metrics]:
    """``-E[min(r A, clip(r, 1 - eps, 1 + eps) A)]`` with ``r = exp(log_prob - old_log_prob)``.

    All ``[N]``; ``weight`` gives the mean's weights. Metrics: approximate KL (the ``(r - 1) -
    log r`` estimator) and the fraction of clipped ratios.
    """
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    unclipped = ratio * advantage
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantage
    loss = -_weighted_mean(jnp.minimum(unclipped, clipped), weight)
    metrics = {
        "ppo/approx_kl": _weighted_mean((ratio - 1.0) - log_ratio, weight),
        "ppo/clip_frac": _weighted_mean(
            (jnp.abs(ratio - 1.0) > clip_eps).astype(ratio.dtype), weight
        ),
    }
    return loss, metrics


def compute_ppo_loss(
    params: tuple[Params, Params],
    obs_stats: RunningStats,
    batch: Batch,
    networks: PPONetworks,
    clip_eps: float,
    value_coef: float,
    entropy_coef: float,
    normalize_advantage: bool,
    base_kl_coef: float = 0.0,
    offset_kl_coef: float = 0.0,
) -> tuple[Array, Metrics]:
    """Total loss of ``params = (steering_params, value_params)`` on one minibatch.

    ``obs_stats`` are the normalisation statistics the rollout acted with (kept fixed during
    the update, so the first epoch's ratio is exactly 1).
    """
    steering_params, value_params = params
    obs_n = networks.normalize(obs_stats, batch.obs)
    steering = networks.steering
    action_mean, log_std = steering.distribution(steering_params, obs_n, batch.base_chunk)
    log_prob, entropy = steering.log_prob_entropy_of(action_mean, log_std, batch.raw)
    base_kl = _weighted_mean(steering.kl_to_base(action_mean, log_std), batch.weight)
    offset_kl = steering.latent_offset_kl(action_mean, batch.weight)
    advantage = batch.advantage
    if normalize_advantage:
        mean = _weighted_mean(advantage, batch.weight)
        std = jnp.sqrt(_weighted_mean(jnp.square(advantage - mean), batch.weight))
        advantage = (advantage - mean) / (std + 1e-8)
    policy_loss, metrics = clipped_policy_loss(
        log_prob, batch.log_prob, jax.lax.stop_gradient(advantage), batch.weight, clip_eps
    )
    value = networks.value.apply(value_params, obs_n)
    value_loss = _weighted_mean(jnp.square(value - batch.target), batch.weight)
    entropy = _weighted_mean(entropy, batch.weight)
    loss = (
        policy_loss
        + value_coef * value_loss
        - entropy_coef * entropy
        + base_kl_coef * base_kl
        + offset_kl_coef * offset_kl
    )
    metrics.update(
        {
            "ppo/loss": loss,
            "ppo/policy_loss": policy_loss,
            "ppo/value_loss": value_loss,
            "ppo/entropy": entropy,
            "ppo/base_kl": base_kl,
            "ppo/offset_kl": offset_kl,
        }
    )
    return loss, metrics
