"""Executing action chunks in batched, auto-resetting envs (shared by training and evaluation).

A chunk policy (RFS, arXiv 2602.01789: the frozen flow emits chunks, H_exec of them are run)
takes one decision every H_exec env steps. ``step_chunk`` runs those steps with a ``lax.scan``
and reduces them to one decision-level transition:

- reward: the plain (undiscounted) sum of the chunk's rewards up to and including the step that
  ends the episode; the trainer discounts per decision, so a chunk is one action of an MDP
  over chunks (gamma per chunk);
- done: the chunk is done if any of its steps ended the episode; ``truncation`` is that step's
  time-limit flag;
- an env whose episode ended inside the chunk is *held* for the rest of the chunk: its state
  stays the freshly reset one (``envs.wrappers`` auto-resets), so the new episode starts
  exactly at the next decision, with an observation the policy has seen, instead of running
  the leftover actions of the previous episode's chunk.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
from brax.envs.base import Env, State

from rfs_jax.types import Array, Metrics


@flax.struct.dataclass
class EpisodeStats:
    """Running totals of the current episode of every env. ``[B]`` each."""

    ret: Array
    success: Array  # 1 once any step of the episode reported success
    whole: Array  # 1 if the episode began at its first step (0: a staggered first episode)

    @classmethod
    def zeros(cls, num_envs: int, whole: bool = True) -> EpisodeStats:
        """Fresh totals; ``whole=False`` marks every env's current episode as cut (one started
        part-way by ``envs.wrappers.stagger``), so its end is not counted as an episode."""
        zeros = jnp.zeros((num_envs,))
        return cls(ret=zeros, success=zeros, whole=jnp.full((num_envs,), float(whole)))


class ChunkResult(NamedTuple):
    """One decision's outcome. ``[B]`` each."""

    reward: Array  # sum of rewards up to the end of the chunk or of the episode
    done: Array  # 1 if the episode ended inside the chunk
    truncation: Array  # 1 if it ended by the time limit (bootstrap), 0 otherwise
    episode_return: Array  # return of the episode that ended in the chunk, 0 where none did
    episode_success: Array  # 1 if that episode succeeded at any step, 0 where none ended
    reward_terms: Metrics  # ``reward/<name>`` summed over the chunk's live steps
    env_steps: Array  # env steps that belonged to an episode (held steps excluded)
    episode_whole: Array  # 1 if the episode that ended was a whole one (see EpisodeStats)


def _where(mask: Array, new, old):
    def select(n, o):
        return jnp.where(jnp.reshape(mask, mask.shape + (1,) * (o.ndim - mask.ndim)), n, o)

    return jax.tree.map(select, new, old)


def step_chunk(
    env: Env, state: State, chunk: Array, stats: EpisodeStats
) -> tuple[State, EpisodeStats, ChunkResult]:
    """Run ``chunk [B, H_exec, A]`` in a batched env (``envs.wrappers.wrap``)."""
    batch = chunk.shape[0]
    zeros = jnp.zeros((batch,))
    term_names = sorted(k for k in state.metrics if k.startswith("reward/"))

    def body(carry, action):
        state, stats, alive, out = carry
        # After an auto-reset the state still carries the finished step's done = 1; an env
        # that forgets to overwrite it would end every episode at once (brax's AutoResetWrapper
        # clears it the same way).
        new = env.step(state.replace(done=jnp.zeros_like(state.done)), action)
        done = new.done * alive
        reward = new.reward * alive
        success = new.metrics["success"] * alive if "success" in new.metrics else zeros
        ep_ret = stats.ret + reward
        ep_success = jnp.maximum(stats.success, success)
        out = ChunkResult(
            reward=out.reward + reward,
            done=out.done + done,
            truncation=out.truncation + done * new.info["truncation"],
            episode_return=out.episode_return + done * ep_ret,
            episode_success=out.episode_success + done * ep_success,
            reward_terms={k: out.reward_terms[k] + alive * new.metrics[k] for k in term_names},
            env_steps=out.env_steps + alive,
            episode_whole=out.episode_whole + done * stats.whole,
        )
        stats = EpisodeStats(
            ret=ep_ret * (1.0 - done),
            success=ep_success * (1.0 - done),
            whole=jnp.maximum(stats.whole, done),
        )
        state = _where(alive > 0, new, state)
        alive = alive * (1.0 - new.done)
        return (state, stats, alive, out), None

    out = ChunkResult(
        reward=zeros,
        done=zeros,
        truncation=zeros,
        episode_return=zeros,
        episode_success=zeros,
        reward_terms={k: zeros for k in term_names},
        env_steps=zeros,
        episode_whole=zeros,
    )
    alive = jnp.ones((batch,))
    (state, stats, _, out), _ = jax.lax.scan(
        body, (state, stats, alive, out), jnp.swapaxes(chunk, 0, 1)
    )
    return state, stats, out
