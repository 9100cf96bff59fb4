"""Throughput benchmarks: env-only control steps/s, env + base sampler, full RFS training.

Every number is measured on the machine it runs on: a warm-up call compiles (its time is the
``compile_s`` reported), then timed calls of a jitted ``lax.scan`` over control steps.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax

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


def bench_train(
    env,
    num_envs: int,
    flow_cfg=None,
    steering_cfg=None,
    ppo_cfg=None,
    seed: int = 0,
    repeats: int = 1,
) -> dict:
    """Env steps/s of the whole RFS-PPO iteration (rollout with env, steering head and K-step
    Euler sampler, GAE, epochs x minibatches) at ``num_envs``. The base is a freshly initialised
    flow network of the configured size: its weights do not change the cost."""
    from rfs_jax.agents.ppo import PPOConfig
    from rfs_jax.agents.ppo.train import init_training_state, make_networks, make_train_step
    from rfs_jax.flow import FlowConfig, init_flow_params, make_sampler
    from rfs_jax.steering import SteeringConfig

    flow_cfg = flow_cfg or FlowConfig()
    steering_cfg = steering_cfg or SteeringConfig()
    ppo_cfg = ppo_cfg or PPOConfig()
    minibatch = min(ppo_cfg.minibatch_size, num_envs * ppo_cfg.unroll_length)
    ppo_cfg = dataclasses.replace(ppo_cfg, num_envs=num_envs, minibatch_size=minibatch)
    key = jax.random.PRNGKey(seed)
    base = init_flow_params(flow_cfg, env.observation_size, env.action_size, key)
    sampler = make_sampler(flow_cfg, env.observation_size, env.action_size)
    networks = make_networks(
        env,
        sampler,
        steering_cfg,
        ppo_cfg,
        horizon=flow_cfg.horizon,
        exec_horizon=flow_cfg.exec_horizon,
    )
    benv = wrap(env, getattr(getattr(env, "config", None), "episode_length", 1000))
    state = init_training_state(benv, networks, ppo_cfg, key)
    step = jax.jit(make_train_step(benv, networks, ppo_cfg), donate_argnums=0)
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(step(state, base))
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, _ = jax.block_until_ready(step(state, base))
        best = min(best, time.perf_counter() - t0)
    env_steps = ppo_cfg.env_steps_per_iteration(flow_cfg.exec_horizon)
    return {
        "train_env_steps_per_s": env_steps / best,
        "train_compile_s": max(first - best, 0.0),
        "train_iteration_s": best,
        "train_env_steps_per_iteration": env_steps,
        "mode": steering_cfg.mode,
        "flow_num_steps": flow_cfg.num_steps,
        "unroll_length": ppo_cfg.unroll_length,
        "num_epochs": ppo_cfg.num_epochs,
    }
