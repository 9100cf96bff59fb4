"""Throughput benchmarks at one task and batch: env-only control steps/s, env + base sampler,
the full RFS-PPO training iteration, and brax's own PPO trainer on the same env.

Every number is measured on the machine it runs on: a warm-up call compiles (its time is the
``compile_s`` reported), then timed calls of a jitted ``lax.scan`` over control steps. With the
persistent compilation cache (``rfs_jax.compile_cache``) a repeated run reports the time to
load a cached program instead of compiling it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from envs.wrappers import batch_keys, wrap
from rfs_jax.acting import EpisodeStats, step_chunk


def _episode_length(env) -> int:
    return getattr(getattr(env, "config", None), "episode_length", 1000)


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
    benv = wrap(env, _episode_length(env))
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
    benv = wrap(env, _episode_length(env))
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


def bench_train_sac(
    env,
    num_envs: int,
    flow_cfg=None,
    steering_cfg=None,
    sac_cfg=None,
    seed: int = 0,
    repeats: int = 1,
) -> dict:
    """Env steps/s of the whole RFS-SAC iteration (rollout with env, actor and sampler, buffer
    insert, ``num_updates`` gradient steps: with the aliased critic each denoises a batch of next
    actions and aliasing latents) at ``num_envs``, with the updates on (the buffer is past
    ``learning_starts`` and ``actor_starts`` from the first iteration)."""
    from rfs_jax.agents.sac import SACConfig
    from rfs_jax.agents.sac.train import init_training_state, make_networks, make_train_step
    from rfs_jax.flow import FlowConfig, init_flow_params, make_sampler
    from rfs_jax.steering import SteeringConfig

    flow_cfg = flow_cfg or FlowConfig()
    steering_cfg = steering_cfg or SteeringConfig()
    sac_cfg = sac_cfg or SACConfig()
    decisions = num_envs * sac_cfg.unroll_length
    batch = min(sac_cfg.batch_size, decisions)
    sac_cfg = dataclasses.replace(
        sac_cfg,
        num_envs=num_envs,
        batch_size=batch,
        learning_starts=batch,
        actor_starts=0,
        buffer_size=max(sac_cfg.buffer_size, decisions),
    )
    key = jax.random.PRNGKey(seed)
    base = init_flow_params(flow_cfg, env.observation_size, env.action_size, key)
    sampler = make_sampler(flow_cfg, env.observation_size, env.action_size)
    networks = make_networks(
        env,
        sampler,
        steering_cfg,
        sac_cfg,
        horizon=flow_cfg.horizon,
        exec_horizon=flow_cfg.exec_horizon,
    )
    benv = wrap(env, _episode_length(env))
    state = init_training_state(benv, networks, sac_cfg, key)
    step = jax.jit(make_train_step(benv, networks, sac_cfg), donate_argnums=0)
    t0 = time.perf_counter()
    state, metrics = jax.block_until_ready(step(state, base))
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, metrics = jax.block_until_ready(step(state, base))
        best = min(best, time.perf_counter() - t0)
    env_steps = sac_cfg.env_steps_per_iteration(flow_cfg.exec_horizon)
    return {
        "sac_env_steps_per_s": env_steps / best,
        "sac_compile_s": max(first - best, 0.0),
        "sac_iteration_s": best,
        "sac_env_steps_per_iteration": env_steps,
        "sac_critic": sac_cfg.critic,
        "sac_updates_per_iteration": float(metrics["sac/updates"]),
        "sac_replay_ratio": sac_cfg.replay_ratio,
    }


def bench_base(
    env, num_envs: int, flow_cfg=None, steps: int = 50, seed: int = 0, repeats: int = 2
) -> dict:
    """Env steps/s of the batched env driven by the base policy alone: per decision, K Euler
    steps of a freshly initialised flow network of the configured size turn ``a0 ~ N(0, I)``
    into a chunk, and its first H_exec actions run (``rfs_jax.acting.step_chunk``). This is the
    RFS rollout without the steering head, the value network and the update."""
    from rfs_jax.flow import FlowConfig, init_flow_params, make_sampler

    flow_cfg = flow_cfg or FlowConfig()
    benv = wrap(env, _episode_length(env))
    sampler = make_sampler(flow_cfg, env.observation_size, env.action_size)
    base = init_flow_params(
        flow_cfg, env.observation_size, env.action_size, jax.random.PRNGKey(seed)
    )
    decisions = max(1, math.ceil(steps / flow_cfg.exec_horizon))
    chunk_shape = (num_envs, flow_cfg.horizon, env.action_size)

    @jax.jit
    def rollout(base, key):
        key_reset, key_noise = jax.random.split(key)
        state = benv.reset(batch_keys(key_reset, num_envs))

        def body(carry, k):
            state, stats = carry
            chunk = sampler(base, state.obs, jax.random.normal(k, chunk_shape))
            state, stats, out = step_chunk(benv, state, chunk[:, : flow_cfg.exec_horizon], stats)
            return (state, stats), out.reward.mean()

        carry = (state, EpisodeStats.zeros(num_envs))
        (state, _), rewards = jax.lax.scan(body, carry, jax.random.split(key_noise, decisions))
        return state.obs.sum() + rewards.sum()

    first, best, _ = _time_call(rollout, base, jax.random.PRNGKey(seed), repeats=repeats)
    env_steps = num_envs * decisions * flow_cfg.exec_horizon
    return {
        "base_env_steps_per_s": env_steps / best,
        "base_compile_s": max(first - best, 0.0),
        "base_steps_timed": decisions * flow_cfg.exec_horizon,
    }


# --- brax's own PPO trainer -------------------------------------------------------------------


def _device_put_replicated(tree, devices, axis_name: str):
    """``jax.device_put_replicated`` as it was before jax 0.10: every leaf gains a leading axis
    of ``len(devices)`` whose entries live one per device. The sharding is the one ``jax.pmap``
    gives its own outputs (a 1-D mesh named after the pmap axis), so that a pmapped function
    fed these arrays and then its own outputs compiles once, not twice."""
    devices = list(devices)
    sharding = NamedSharding(Mesh(np.array(devices), (axis_name,)), PartitionSpec(axis_name))

    def put(leaf):
        leaf = jnp.asarray(leaf)
        return jax.device_put(jnp.broadcast_to(leaf, (len(devices), *leaf.shape)), sharding)

    return jax.tree.map(put, tree)


@contextlib.contextmanager
def brax_jax_compat() -> Iterator[None]:
    """Run brax 0.14's trainers on jax >= 0.10.

    brax 0.14.2's ``brax.training`` calls one jax API that jax 0.10 removed:
    ``jax.device_put_replicated`` (``ppo/train.py`` puts the initial training state on the
    local devices with it; ``brax.training.pmap.bcast_local_devices`` too). Every other jax
    name brax's PPO path uses still exists (``jax.pmap``, ``jax.lax.pmean``, ``jax.local_devices``
    ...); ``jax.pmap`` is now built on ``shard_map`` and runs on one CPU device. Inside this
    context ``jax.device_put_replicated`` is provided (see ``_device_put_replicated``); on exit
    the attribute is removed again. With a jax that still has it, nothing is changed.
    """
    if hasattr(jax, "device_put_replicated"):
        yield
        return
    from brax.training.agents.ppo import train as brax_ppo

    axis_name = getattr(brax_ppo, "_PMAP_AXIS_NAME", "i")
    jax.device_put_replicated = functools.partial(_device_put_replicated, axis_name=axis_name)
    try:
        yield
    finally:
        del jax.device_put_replicated


def brax_ppo_settings(num_envs: int, ppo_cfg, steering_cfg, exec_horizon: int) -> dict:
    """Keyword arguments of ``brax.training.agents.ppo.train.train`` that match our PPO preset.

    Ours counts decisions of H_exec env steps; brax counts env steps. Matched: envs, env steps
    per env per rollout (``unroll_length * H_exec``), minibatches per epoch, epochs, hidden
    widths (ReLU), observation normalisation, learning rate, clip, GAE lambda, gradient clip.
    Different by design: brax's policy emits one action per env step (no flow sampler, no
    chunk), one Adam optimiser for policy and value, and a minibatch of whole trajectories.
    """
    from brax.training.agents.ppo import networks as brax_networks

    minibatch = min(ppo_cfg.minibatch_size, num_envs * ppo_cfg.unroll_length)
    num_minibatches = num_envs * ppo_cfg.unroll_length // minibatch
    if num_envs % num_minibatches:
        raise ValueError(
            f"brax PPO needs num_envs ({num_envs}) divisible by the minibatch count "
            f"({num_minibatches})"
        )
    network_factory = functools.partial(
        brax_networks.make_ppo_networks,
        policy_hidden_layer_sizes=tuple(steering_cfg.hidden),
        value_hidden_layer_sizes=tuple(ppo_cfg.value_hidden),
        activation=jax.nn.relu,
    )
    return {
        "num_envs": num_envs,
        "unroll_length": ppo_cfg.unroll_length * exec_horizon,
        "batch_size": num_envs // num_minibatches,
        "num_minibatches": num_minibatches,
        "num_updates_per_batch": ppo_cfg.num_epochs,
        "learning_rate": ppo_cfg.policy_lr,
        "entropy_cost": ppo_cfg.entropy_coef,
        "discounting": ppo_cfg.gamma,
        "gae_lambda": ppo_cfg.gae_lambda,
        "clipping_epsilon": ppo_cfg.clip_eps,
        "max_grad_norm": ppo_cfg.max_grad_norm,
        "reward_scaling": ppo_cfg.reward_scaling,
        "normalize_observations": True,
        "network_factory": network_factory,
    }


def _wrap_for_brax(env, episode_length: int, action_repeat: int = 1, randomization_fn=None):
    """brax's ``wrap_env_fn``: our batching wrappers, so that brax steps the very env the other
    measurements step (fresh reset per episode instead of brax's cached first state)."""
    if action_repeat != 1 or randomization_fn is not None:
        raise ValueError("the brax PPO benchmark uses no action repeat or domain randomisation")
    return wrap(env, episode_length)


def bench_brax_ppo(
    env,
    num_envs: int,
    flow_cfg=None,
    steering_cfg=None,
    ppo_cfg=None,
    iterations: int = 3,
    seed: int = 0,
) -> dict:
    """Env steps/s of ``brax.training.agents.ppo.train`` on ``env`` with settings matched to
    ours (``brax_ppo_settings``), from its own per-iteration ``training/sps``.

    It runs ``iterations`` training iterations (one per progress callback, no evaluation). The
    first compiles; the best of the others is the steady-state number, and the first minus
    that is ``brax_ppo_compile_s``. ``brax_ppo_wall_s`` is the whole ``train`` call (with the
    env reset's compile and the network initialisation).
    """
    from brax.training.agents.ppo import train as brax_ppo

    from rfs_jax.agents.ppo import PPOConfig
    from rfs_jax.flow import FlowConfig
    from rfs_jax.steering import SteeringConfig

    if iterations < 2:
        raise ValueError(f"iterations must be >= 2 (one compiles), got {iterations}")
    flow_cfg = flow_cfg or FlowConfig()
    settings = brax_ppo_settings(
        num_envs, ppo_cfg or PPOConfig(), steering_cfg or SteeringConfig(), flow_cfg.exec_horizon
    )
    steps_per_iteration = num_envs * settings["unroll_length"]
    sps = []
    t0 = time.perf_counter()
    with brax_jax_compat():
        brax_ppo.train(
            env,
            num_timesteps=iterations * steps_per_iteration,
            num_evals=iterations + 1,  # one training iteration between progress callbacks
            run_evals=False,
            episode_length=_episode_length(env),
            wrap_env_fn=_wrap_for_brax,
            max_devices_per_host=1,
            seed=seed,
            progress_fn=lambda step, metrics: sps.append(float(metrics["training/sps"])),
            **settings,
        )
    wall = time.perf_counter() - t0
    seconds = [steps_per_iteration / s for s in sps]
    best = min(seconds[1:])
    return {
        "brax_ppo_env_steps_per_s": steps_per_iteration / best,
        "brax_ppo_compile_s": max(seconds[0] - best, 0.0),
        "brax_ppo_iteration_s": best,
        "brax_ppo_env_steps_per_iteration": steps_per_iteration,
        "brax_ppo_iterations": len(sps),
        "brax_ppo_wall_s": wall,
        "brax_ppo_unroll_length": settings["unroll_length"],
        "brax_ppo_num_minibatches": settings["num_minibatches"],
        "brax_ppo_batch_size": settings["batch_size"],
    }


# --- all of them ------------------------------------------------------------------------------


def run_benchmarks(
    env,
    num_envs: int,
    steps: int = 20,
    *,
    env_only: bool = False,
    brax: bool = True,
    brax_iterations: int = 3,
    flow_cfg=None,
    steering_cfg=None,
    ppo_cfg=None,
    sac: bool = True,
    sac_cfg=None,
) -> dict:
    """Every measurement at one batch, with the ratios ``rfs bench`` prints: env only, then
    (unless ``env_only``) env + base sampler, the RFS-PPO iteration and (if ``brax``) brax's
    PPO. Keys of the result: see ``bench_env``, ``bench_base``, ``bench_train`` and
    ``bench_brax_ppo``, plus ``base_vs_env``, ``train_vs_env`` and ``ratio_train_vs_brax``."""
    result = bench_env(env, num_envs, steps=steps)
    if env_only:
        return result
    cfgs = {"flow_cfg": flow_cfg, "steering_cfg": steering_cfg, "ppo_cfg": ppo_cfg}
    result.update(bench_base(env, num_envs, flow_cfg=flow_cfg, steps=steps))
    result["base_vs_env"] = result["base_env_steps_per_s"] / result["env_steps_per_s"]
    result.update(bench_train(env, num_envs, **cfgs))
    result["train_vs_env"] = result["train_env_steps_per_s"] / result["env_steps_per_s"]
    if sac:
        result.update(
            bench_train_sac(
                env, num_envs, flow_cfg=flow_cfg, steering_cfg=steering_cfg, sac_cfg=sac_cfg
            )
        )
        result["sac_vs_ppo"] = result["sac_env_steps_per_s"] / result["train_env_steps_per_s"]
    if brax:
        result.update(bench_brax_ppo(env, num_envs, iterations=brax_iterations, **cfgs))
        result["ratio_train_vs_brax"] = (
            result["train_env_steps_per_s"] / result["brax_ppo_env_steps_per_s"]
        )
    return result


# (label, env steps/s key, compile seconds key) of the rows of the summary table
SUMMARY_ROWS = (
    ("env only (random)", "env_steps_per_s", "compile_s"),
    ("env + base sampler", "base_env_steps_per_s", "base_compile_s"),
    ("RFS-PPO iteration", "train_env_steps_per_s", "train_compile_s"),
    ("RFS-SAC iteration", "sac_env_steps_per_s", "sac_compile_s"),
    ("brax PPO iteration", "brax_ppo_env_steps_per_s", "brax_ppo_compile_s"),
)


def summary_rows(result: dict) -> list[tuple[str, float, float, float]]:
    """(label, env steps/s, ratio to env-only, compile s) of each measurement in ``result``."""
    return [
        (label, result[sps], result[sps] / result["env_steps_per_s"], result[compile_s])
        for label, sps, compile_s in SUMMARY_ROWS
        if sps in result
    ]
