"""Pack: the box's pose and walls, the success rule (inside the walls, released, at rest),
and the scripted expert (power and pinch grasps) over one episode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import fixtures
from envs.experts import make_expert
from envs.hand.base import fingers_to_action
from rfs_jax.demos import make_batched

NUM_ENVS = 64  # the batch of tests/test_envs.py: the compiled step is shared through the cache


@pytest.fixture(scope="module")
def batched():
    env = envs.make("pack")
    reset, step = make_batched(env, NUM_ENVS)
    return env, reset, step


def _put_object_at(env, state, xy):
    """Teleport every env's object upright and still, 2 mm above its resting height at
    ``xy`` [B, 2]."""
    adr, vadr = env._obj["object"]["qadr"], env._obj["object"]["vadr"]
    data = state.pipeline_state
    pos = jnp.concatenate([xy, state.info["rest_z"][:, None] + 0.002], axis=1)
    qpos = (
        data.qpos.at[:, adr : adr + 3]
        .set(pos)
        .at[:, adr + 3 : adr + 7]
        .set(jnp.array([1.0, 0.0, 0.0, 0.0]))
    )
    qvel = data.qvel.at[:, vadr : vadr + 6].set(0.0)
    return state.replace(pipeline_state=data.replace(qpos=qpos, qvel=qvel))


def _first_success(env, state, step, steps):
    """Step with the hand going up, fingers straight; the first step each env succeeds."""
    a = jnp.concatenate(
        [jnp.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]), fingers_to_action(jnp.zeros(16))]
    )
    a = jnp.broadcast_to(a, (NUM_ENVS, env.action_size))
    first = np.full(NUM_ENVS, -1)
    for i in range(steps):
        state = step(state, a)
        ok = np.asarray(state.metrics["success"]) > 0
        first = np.where((first < 0) & ok, i + 1, first)
    return first


def test_walls_surround_the_box_middle(batched):
    env, reset, _ = batched
    state = reset(jax.random.PRNGKey(0))
    walls = np.asarray(state.pipeline_state.geom_xpos[:, env._walls])  # [B, 4, 3]
    local = jax.vmap(fixtures.rotate)(
        -state.info["box_yaw"], walls[..., :2] - np.asarray(state.info["box_xy"])[:, None]
    )
    expected = np.array([pos[:2] for _, pos in env.config.box.walls()])
    np.testing.assert_allclose(np.asarray(local), np.broadcast_to(expected, local.shape), atol=1e-5)
    assert np.ptp(np.asarray(state.info["box_yaw"])) > 1.0


def test_success_inside_the_box_not_just_outside(batched):
    env, reset, step = batched
    cfg = env.config
    state = reset(jax.random.PRNGKey(1))
    inside = _put_object_at(env, state, state.info["box_xy"])
    first = _first_success(env, inside, step, cfg.settle_steps + 10)
    assert (first > 0).mean() >= 0.95, first
    assert np.all(first[first > 0] >= cfg.settle_steps)
    # Just outside a wall, on the table: released and still, but not packed.
    out = cfg.box.inner_half[0] + 2 * cfg.box.wall_half_thickness + 0.05
    beside = state.info["box_xy"] + jax.vmap(fixtures.rotate)(
        state.info["box_yaw"], jnp.broadcast_to(jnp.array([out, 0.0]), (NUM_ENVS, 2))
    )
    assert np.all(_first_success(env, _put_object_at(env, state, beside), step, 10) < 0)


def test_expert_packs_with_both_grasps(batched):
    env, reset, step = batched
    expert = make_expert("pack", env)
    act = jax.jit(jax.vmap(expert.act))
    state = reset(jax.random.PRNGKey(2))
    carry = jax.vmap(expert.init)(jax.random.split(jax.random.PRNGKey(3), NUM_ENVS))
    finished = np.zeros(NUM_ENVS, bool)
    success = np.zeros(NUM_ENVS)
    styles = None
    key = jax.random.PRNGKey(4)
    for _ in range(env.config.episode_length):
        key, k = jax.random.split(key)
        carry, a = act(carry, state, jax.random.split(k, NUM_ENVS))
        if styles is None:
            styles = np.asarray(carry["style"])
        state = step(state, a)
        success = np.where(finished, success, np.asarray(state.metrics["success"]))
        finished |= np.asarray(state.done) > 0
    assert finished.all()
    assert 0.4 <= success.mean() <= 0.97, success.mean()
    for s in (0, 1):
        assert (styles == s).sum() >= 10
        assert success[styles == s].mean() >= 0.3
