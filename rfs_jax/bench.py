"""Throughput benchmarks: env-only control steps/s, env + base sampler, full RFS training.

Every number is measured on the machine it runs on: a warm-up call compiles (its time is the
``compile_s`` reported), then timed calls of a jitted ``lax.scan`` over control steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from envs.wrappers import batch_keys, wrap


def _time_call(fn: Callable, *args, repeats: int = 2):
    """(compile + first run seconds, best steady-state seconds, last output)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return first, best, out


def bench_env(env, num_envs: int, steps: int = 50, seed: int = 0, repeats: int = 2) -> dict:
    """Control steps/s of the batched env under uniform random actions."""
    benv = wrap(env, getattr(getattr(env, "config", None), "episode_length", 1000))
    hand = getattr(env, "hand", None)
    substeps = hand.substeps if hand is not None else 1

    @jax.jit
    def rollout(key):
        key_reset, key_act = jax.random.split(key)
        state = benv.reset(batch_keys(key_reset, num_envs))

        def body(state, k):
            a = jax.random.uniform(k, (num_envs, env.action_size), minval=-1.0, maxval=1.0)
            state = benv.step(state, a)
            return state, state.metrics["success"].mean()

        state, succ = jax.lax.scan(body, state, jax.random.split(key_act, steps))
        return state.obs.sum() + succ.sum()

    first, best, _ = _time_call(rollout, jax.random.PRNGKey(seed), repeats=repeats)
    sps = num_envs * steps / best
    return {
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
        "num_devices": jax.device_count(),
        "num_envs": num_envs,
        "steps_timed": steps,
        "env_steps_per_s": sps,
        "physics_steps_per_s": sps * substeps,
        "compile_s": max(first - best, 0.0),
        "substeps": substeps,
    }


def _unused():  # pragma: no cover - keeps jnp imported for helpers added below
    return jnp
