"""Pack: the box's pose and walls, the success rule (inside the walls, released, at rest),
and the scripted expert (power and pinch grasps) over one episode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import fixtures
from rfs_jax.demos import make_batched

from episodes import first_success, put_object_at, run_expert

NUM_ENVS = 64  # the batch of tests/test_envs.py: the compiled step is shared through the cache


@pytest.fixture(scope="module")
def batched():
    env = envs.make("pack")
    reset, step = make_batched(env, NUM_ENVS)
    return env, reset, step


def _put_at_rest_height(env, state, xy):
    """Every env's object upright and still, 2 mm above its resting height at ``xy`` [B, 2]."""
    return put_object_at(
        env, state, jnp.concatenate([xy, state.info["rest_z"][:, None] + 0.002], axis=1)
    )


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
    inside = _put_at_rest_height(env, state, state.info["box_xy"])
    first = first_success(env, inside, step, cfg.settle_steps + 10)
    assert (first > 0).mean() >= 0.95, first
    assert np.all(first[first > 0] >= cfg.settle_steps)
    # Just outside a wall, on the table: released and still, but not packed.
    out = cfg.box.inner_half[0] + 2 * cfg.box.wall_half_thickness + 0.05
    beside = state.info["box_xy"] + jax.vmap(fixtures.rotate)(
        state.info["box_yaw"], jnp.broadcast_to(jnp.array([out, 0.0]), (NUM_ENVS, 2))
    )
    assert np.all(first_success(env, _put_at_rest_height(env, state, beside), step, 10) < 0)


def test_expert_packs_with_both_grasps(batched):
    env, reset, step = batched
    success, plan, _ = run_expert("pack", env, reset, step, seed=2, plan=("style",))
    styles = plan["style"]
    assert 0.4 <= success.mean() <= 0.97, success.mean()
    for s in (0, 1):
        assert (styles == s).sum() >= 10
        assert success[styles == s].mean() >= 0.3
