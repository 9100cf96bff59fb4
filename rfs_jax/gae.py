"""Generalised advantage estimation (Schulman et al. 2016) with time-outs handled as in brax.

Our batched envs auto-reset (``envs/wrappers.py``): the observation stored after a finished
step is already the first one of the next episode, so the value of the true final observation
of a timed-out episode is not available. The two kinds of episode end are therefore treated
differently:

- termination (``done`` and not ``truncation``): the episode really ended, nothing follows,
  the TD target of that step is the reward alone;
- truncation (a time limit): the episode could have gone on. Its last transition cannot be
  given a correct target (the next value would be that of the new episode), so it is *masked
  out*: its TD error and advantage are zero, the accumulated advantage does not flow through
  it, and the trainer drops it from the losses. The step before it bootstraps from the value
  of the truncated step's observation, which still belongs to the old episode, so no return
  ever crosses an episode boundary and time-outs are bootstrapped rather than treated as
  terminal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rfs_jax.types import Array


def compute_gae(
    rewards: Array,
    values: Array,
    bootstrap_value: Array,
    termination: Array,
    truncation: Array,
    gamma: float,
    gae_lambda: float,
) -> tuple[Array, Array]:
    """Advantages and value targets.

    Args:
      rewards: ``[T, B]`` reward of step t.
      values: ``[T, B]`` value of the observation step t acted on.
      bootstrap_value: ``[B]`` value of the observation after step T-1.
      termination: ``[T, B]`` 1 where step t ended its episode for good.
      truncation: ``[T, B]`` 1 where step t ended its episode by a time limit.
      gamma: discount per step.
      gae_lambda: GAE's lambda.

    Returns:
      ``(advantages [T, B], returns [T, B])``; both are 0 advantage / ``values`` at truncated
      steps, which the caller should mask with ``1 - truncation``. Gradients are stopped.
    """
    live = 1.0 - truncation
    not_term = 1.0 - termination
    next_values = jnp.concatenate([values[1:], bootstrap_value[None]], axis=0)
    deltas = (rewards + gamma * not_term * next_values - values) * live

    def backward(acc, xs):
        delta, not_term_t, live_t = xs
        acc = delta + gamma * gae_lambda * not_term_t * live_t * acc
        return acc, acc

    _, advantages = jax.lax.scan(
        backward, jnp.zeros_like(bootstrap_value), (deltas, not_term, live), reverse=True
    )
    returns = advantages + values
    return jax.lax.stop_gradient(advantages), jax.lax.stop_gradient(returns)
