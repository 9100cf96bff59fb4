"""What several test modules do with a batched env: run the scripted expert for one episode,
teleport the carried object, and step with the hand going away until success."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from envs.experts import make_expert
from envs.hand.base import fingers_to_action


def run_expert(
    task: str,
    env,
    reset,
    step,
    seed: int,
    plan: tuple[str, ...] = (),
    watch: Callable | None = None,
):
    """One episode of ``task``'s expert in every env of the batch (``make_batched``'s reset and
    step); keys ``seed`` (reset), ``seed + 1`` (the expert's carry), ``seed + 2`` (its noise).

    Returns each env's success at its first episode end [B], the expert's ``plan`` entries at
    the first step (``{name: [B]}``), and, if ``watch(state) -> [B] bool`` is given, whether it
    held at some step before that end [B] (else ``None``). Fails if an episode did not end."""
    expert = make_expert(task, env)
    act = jax.jit(jax.vmap(expert.act))
    state = reset(jax.random.PRNGKey(seed))
    n = state.obs.shape[0]
    carry = jax.vmap(expert.init)(jax.random.split(jax.random.PRNGKey(seed + 1), n))
    finished = np.zeros(n, bool)
    success = np.zeros(n)
    seen = np.zeros(n, bool)
    chosen = None
    key = jax.random.PRNGKey(seed + 2)
    for _ in range(env.config.episode_length):
        key, k = jax.random.split(key)
        carry, a = act(carry, state, jax.random.split(k, n))
        if chosen is None:
            chosen = {name: np.asarray(carry[name]) for name in plan}
        state = step(state, a)
        success = np.where(finished, success, np.asarray(state.metrics["success"]))
        if watch is not None:
            seen |= ~finished & np.asarray(watch(state))
        finished |= np.asarray(state.done) > 0
    assert finished.all(), f"{(~finished).sum()} episodes did not end"
    return success, chosen, (seen if watch is not None else None)


def put_object_at(env, state, pos):
    """Teleport every env's carried object to ``pos`` [B, 3], upright and still."""
    adr, vadr = env._obj["object"]["qadr"], env._obj["object"]["vadr"]
    data = state.pipeline_state
    qpos = (
        data.qpos.at[:, adr : adr + 3]
        .set(pos)
        .at[:, adr + 3 : adr + 7]
        .set(jnp.array([1.0, 0.0, 0.0, 0.0]))
    )
    qvel = data.qvel.at[:, vadr : vadr + 6].set(0.0)
    return state.replace(pipeline_state=data.replace(qpos=qpos, qvel=qvel))


def first_success(env, state, step, steps: int) -> np.ndarray:
    """Step ``steps`` times with the wrist going up and the fingers straight; the step at which
    each env first succeeds [B] (-1: never)."""
    n = state.obs.shape[0]
    a = jnp.concatenate(
        [jnp.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]), fingers_to_action(jnp.zeros(16))]
    )
    a = jnp.broadcast_to(a, (n, env.action_size))
    first = np.full(n, -1)
    for i in range(steps):
        state = step(state, a)
        ok = np.asarray(state.metrics["success"]) > 0
        first = np.where((first < 0) & ok, i + 1, first)
    return first
