"""The one place that batches environments.

Envs in this package are written for a single instance (mujoco_playground style). ``wrap``
turns one into a batched training env: brax's ``EpisodeWrapper`` (time limit and the
``truncation`` flag), brax's ``VmapWrapper`` and ``FreshResetWrapper`` below, which re-runs
``reset`` with a fresh key when an episode ends. Because every task samples its object (shape
size, mass, friction) and initial poses inside ``reset(key)``, a fresh reset is what makes the
randomisation per *episode* rather than per env slot (brax's own ``AutoResetWrapper`` restores a
cached first state, so every episode of a slot would see the same object).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State, Wrapper
from brax.envs.wrappers.training import EpisodeWrapper, VmapWrapper


class FreshResetWrapper(Wrapper):
    """Auto-reset with a new key per episode; keeps the finished step's reward, done, metrics.

    ``state.info["truncation"]`` of the finished step is kept too, so a trainer reading the
    returned state can tell a time-out (bootstrap) from a termination (no bootstrap).
    """

    def reset(self, rng: jax.Array) -> State:
        rng, rng_reset = _split_batch(rng)
        state = self.env.reset(rng_reset)
        state.info["reset_key"] = rng
        return state

    def step(self, state: State, action: jax.Array) -> State:
        keys = state.info["reset_key"]
        keys, keys_reset = _split_batch(keys)
        state = self.env.step(state, action)
        fresh = self.env.reset(keys_reset)
        done = state.done.astype(bool)

        def where_done(new, old):
            mask = jnp.reshape(done, done.shape + (1,) * (old.ndim - done.ndim))
            return jnp.where(mask, new, old)

        info = dict(jax.tree.map(where_done, fresh.info, {k: state.info[k] for k in fresh.info}))
        info["truncation"] = state.info["truncation"]
        info["reset_key"] = keys
        return state.replace(
            pipeline_state=jax.tree.map(where_done, fresh.pipeline_state, state.pipeline_state),
            obs=jax.tree.map(where_done, fresh.obs, state.obs),
            info=info,
        )


def _split_batch(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Split each of a batch of keys ``[B, 2]`` (or typed keys ``[B]``) into two."""
    pair = jax.vmap(jax.random.split)(keys)
    return pair[:, 0], pair[:, 1]


def wrap(env: Env, episode_length: int) -> Env:
    """Batch a single-instance env: time limit, vmap, fresh auto-reset.

    The returned env takes ``reset(keys[B, 2])`` and ``step(state, actions[B, A])``.
    """
    if episode_length <= 0:
        raise ValueError(f"episode_length must be positive, got {episode_length}")
    env = EpisodeWrapper(env, episode_length, action_repeat=1)
    env = VmapWrapper(env)
    return FreshResetWrapper(env)


def stagger(state: State, key: jax.Array, episode_length: int) -> State:
    """Start every env of a freshly reset batch at a random step of its first episode.

    Sets the ``EpisodeWrapper`` step counter of each env to a uniform draw in ``[0,
    episode_length)``, so the first time-limits (and with them every later episode boundary)
    are spread over the episode instead of falling on the same step in every env. A trainer
    started in lock-step sees all its episodes end together, and a per-rollout success rate
    swings between "no episode ended" and "every env's first episode ended" (rsl_rl's
    ``init_at_random_ep_len`` does the same). The first episode of each env is then cut
    short by the time limit; the task's own state (its step counter, the scene) is untouched.
    """
    steps = state.info["steps"]
    offset = jax.random.randint(key, steps.shape, 0, episode_length)
    return state.replace(info={**state.info, "steps": offset.astype(steps.dtype)})


def batch_keys(key: jax.Array, num_envs: int) -> jax.Array:
    """``num_envs`` independent reset keys ``[B, 2]`` from one key."""
    return jax.random.split(key, num_envs)


def hold_ended(alive: jax.Array, new: State, old: State) -> State:
    """``new`` where ``alive [B] > 0``, else ``old``: an env whose first episode has ended is
    held at its last state (the first-episode rollouts of ``rfs video`` and ``rfs sim2sim``; the
    auto-reset would start a new episode there)."""

    def select(n, o):
        return jnp.where(jnp.reshape(alive > 0, alive.shape + (1,) * (o.ndim - 1)), n, o)

    return jax.tree.map(select, new, old)
