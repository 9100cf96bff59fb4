"""Push to grasp: the starting layout blocks a direct grasp, the success rule, and the
scripted expert (both push directions) over one episode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.hand.base import fingers_to_action
from rfs_jax.demos import make_batched

from episodes import run_expert

NUM_ENVS = 64  # the batch of tests/test_envs.py: the compiled step is shared through the cache


@pytest.fixture(scope="module")
def batched():
    env = envs.make("push_to_grasp")
    reset, step = make_batched(env, NUM_ENVS)
    return env, reset, step


def _object_pos(env, state):
    adr = env._obj["object"]["qadr"]
    return state.pipeline_state.qpos[:, adr : adr + 3]


def test_object_starts_against_the_middle_of_the_wall(batched):
    env, reset, _ = batched
    cfg = env.config
    state = reset(jax.random.PRNGKey(0))
    pos = _object_pos(env, state)
    local = np.asarray(jax.vmap(env.wall_frame)(pos, state.info))
    size = np.asarray(state.info["obj_size"])
    # Flush against the wall's long face, and far from either end: no finger fits between
    # the object and the wall, and none past the end of the wall.
    gap = -local[:, 0] - size[:, 0] - cfg.wall.half_thickness
    np.testing.assert_allclose(gap, cfg.wall.gap, atol=2e-3)
    assert np.all(np.abs(local[:, 1]) <= cfg.wall.along_range + 1e-6)
    clearance = np.asarray(jax.vmap(env.clearance)(pos, state.info))
    assert np.all(clearance < -cfg.wall.half_length + cfg.wall.along_range + 1e-6)


def test_success_after_holding_at_lift_height(batched):
    env, reset, step = batched
    cfg = env.config
    state = reset(jax.random.PRNGKey(1))
    adr, vadr = env._obj["object"]["qadr"], env._obj["object"]["vadr"]
    a = jnp.concatenate(
        [jnp.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]), fingers_to_action(jnp.zeros(16))]
    )
    a = jnp.broadcast_to(a, (NUM_ENVS, env.action_size))
    successes = []
    for _ in range(cfg.hold_steps):
        # Hold the object up by hand-of-god, away from the hand and the wall, high enough that
        # it stays lifted through a step.
        data = state.pipeline_state
        up = state.info["rest_z"] + cfg.lift_height + 0.03
        qpos = data.qpos.at[:, adr : adr + 2].set(-0.3).at[:, adr + 2].set(up)
        qvel = data.qvel.at[:, vadr : vadr + 6].set(0.0)
        state = step(state.replace(pipeline_state=data.replace(qpos=qpos, qvel=qvel)), a)
        successes.append(np.asarray(state.metrics["success"]))
    assert np.all(np.stack(successes[:-1]) == 0)
    assert np.all(successes[-1] == 1)
    assert np.all(np.asarray(state.done) == 1)


def test_expert_pushes_both_ways_and_mostly_succeeds(batched):
    env, reset, step = batched
    success, plan, cleared = run_expert(
        "push_to_grasp",
        env,
        reset,
        step,
        seed=2,
        plan=("strategy",),
        watch=lambda state: state.metrics["clearance"] > 0,
    )
    strategies = plan["strategy"]
    assert 0.4 <= success.mean() <= 0.97, success.mean()
    # Every success pushed the object past a wall end first, and both directions work.
    assert np.all(cleared[success > 0])
    for s in (0, 1):
        assert (strategies == s).sum() >= 10
        assert success[strategies == s].mean() >= 0.3
