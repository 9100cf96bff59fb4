"""Success rate and return of a chunk policy over the first episode of each of N envs.

An episode succeeds if any of its steps reports ``metrics["success"] == 1`` (tasks that end
the episode on success report it on the last step, which is the same thing).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from brax.envs.base import Env
from jax.sharding import Mesh

from envs.wrappers import batch_keys, wrap
from rfs_jax import sharding
from rfs_jax.acting import EpisodeStats, step_chunk
from rfs_jax.types import Array, Metrics, Params, PRNGKey

# policy_fn(params, obs [B, O], key) -> executed chunk [B, H_exec, A]
ChunkPolicy = Callable[[Params, Array, PRNGKey], Array]


def make_evaluator(
    env: Env,
    episode_length: int,
    policy_fn: ChunkPolicy,
    num_episodes: int,
    *,
    mesh: Mesh | None = None,
) -> Callable[[Params, PRNGKey], Metrics]:
    """A jitted ``run(params, key) -> {"eval/success_rate", "eval/return_mean", ...}``.

    ``num_episodes`` envs run in parallel until each has finished its first episode; the
    episode of each env is counted once. Build it once and call it with new params: it compiles
    once. With a ``mesh`` (``rfs_jax.sharding``) the envs are split over its data axis when
    ``num_episodes`` divides by its size (else every device runs them all: same numbers).
    """
    if num_episodes <= 0:
        raise ValueError(f"num_episodes must be positive, got {num_episodes}")
    batched = wrap(env, episode_length)
    split_over = mesh if mesh is not None and num_episodes % mesh.size == 0 else None

    def run(params: Params, key: PRNGKey) -> Metrics:
        key_reset, key_policy = jax.random.split(key)
        state = batched.reset(batch_keys(key_reset, num_episodes))
        exec_horizon = jax.eval_shape(policy_fn, params, state.obs, key_policy).shape[1]
        # Every chunk runs >= 1 step of the first episode until it ends (at the time limit
        # at the latest), so this many decisions always finish it.
        num_chunks = math.ceil(episode_length / exec_horizon)

        def body(carry, key_t):
            state, stats, finished, ret, success = carry
            state = sharding.constrain_batch(state, split_over)
            chunk = policy_fn(params, state.obs, key_t)
            state, stats, out = step_chunk(batched, state, chunk, stats)
            first = out.done * (1.0 - finished)
            ret = ret + first * out.episode_return
            success = success + first * out.episode_success
            finished = jnp.maximum(finished, out.done)
            return (state, stats, finished, ret, success), None

        zeros = jnp.zeros((num_episodes,))
        carry = (state, EpisodeStats.zeros(num_episodes), zeros, zeros, zeros)
        keys = jax.random.split(key_policy, num_chunks)
        (_, _, finished, ret, success), _ = jax.lax.scan(body, carry, keys)
        return {
            "eval/success_rate": jnp.mean(success),
            "eval/return_mean": jnp.mean(ret),
            "eval/episodes_finished": jnp.sum(finished),
        }

    return jax.jit(run)


def evaluate(
    env: Env,
    episode_length: int,
    policy_fn: Callable[[Array, PRNGKey], Array],
    key: PRNGKey,
    num_episodes: int,
) -> dict[str, float]:
    """``policy_fn(obs [B, O], key) -> chunk [B, H_exec, A]``; returns host floats
    ``{"success_rate", "return_mean", "episodes"}``."""
    run = make_evaluator(env, episode_length, lambda _, obs, k: policy_fn(obs, k), num_episodes)
    metrics = jax.device_get(run(None, key))
    return {
        "success_rate": float(metrics["eval/success_rate"]),
        "return_mean": float(metrics["eval/return_mean"]),
        "episodes": num_episodes,
    }
