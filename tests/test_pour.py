"""Pour: the success rule and the scripted expert (one episode of 64 envs)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import fixtures
from envs.experts import make_expert
from rfs_jax.demos import make_batched

NUM_ENVS = 64  # as in test_envs: the persistent cache shares the compiled step


@pytest.fixture(scope="module")
def env():
    return envs.make("pour")


@pytest.fixture(scope="module")
def batched(env):
    return make_batched(env, NUM_ENVS)


def _with_balls(env, state, local):
    """The state's data with the balls at ``local`` [N, 3], given in the bowl's frame."""
    info = state.info
    xy = info["bowl_xy"] + fixtures.rotate(info["bowl_yaw"], local[:, :2])
    pos = jnp.concatenate([xy, local[:, 2:]], axis=1)
    qpos = state.pipeline_state.qpos.at[env._ball_qadr].set(pos)
    return state.pipeline_state.replace(qpos=qpos)


def test_success_rule_counts_balls_inside_the_bowl_only(env):
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    r, inner, rim = env.config.balls.radius, env.config.bowl.inner_half, env.config.bowl.rim_height
    inside = [0.0, 0.0, r]
    on_table = [inner + 0.05, 0.0, r]  # outside the walls
    above = [0.0, 0.0, rim + 0.02]  # over the bowl, above its rim
    corner = [inner - 0.01, -(inner - 0.01), r]
    local = jnp.array([inside, corner, inside, on_table, above])
    in_bowl, spilled = env.balls_in_bowl(_with_balls(env, state, local), state.info)
    np.testing.assert_array_equal(np.asarray(in_bowl), [True, True, True, False, False])
    np.testing.assert_array_equal(np.asarray(spilled), [False, False, False, True, False])
    # 3 of 5 is short of the default 0.7; 4 of 5 is enough.
    assert float(jnp.mean(in_bowl)) < env.config.success_fraction
    local = local.at[4].set(jnp.array(corner))
    in_bowl, _ = env.balls_in_bowl(_with_balls(env, state, local), state.info)
    assert float(jnp.mean(in_bowl)) >= env.config.success_fraction


def test_balls_start_in_the_cup(env):
    state = jax.jit(env.reset)(jax.random.PRNGKey(1))
    in_bowl, spilled = env.balls_in_bowl(state.pipeline_state, state.info)
    assert not np.any(np.asarray(in_bowl)) and not np.any(np.asarray(spilled))


def test_expert_pours_with_both_sides(env, batched):
    """One episode of 64 envs: the expert pours often enough and uses both pouring sides."""
    reset, step = batched
    expert = make_expert("pour", env)
    act = jax.jit(jax.vmap(expert.act))
    state = reset(jax.random.PRNGKey(0))
    carry = jax.vmap(expert.init)(jax.random.split(jax.random.PRNGKey(1), NUM_ENVS))
    done = np.zeros(NUM_ENVS, bool)
    success = np.zeros(NUM_ENVS)
    for i in range(env.config.episode_length):
        carry, a = act(carry, state, jax.random.split(jax.random.PRNGKey(100 + i), NUM_ENVS))
        state = step(state, a)
        if i == 0:
            side = np.asarray(carry["side"])
        ended = (np.asarray(state.done) > 0) & ~done
        success[ended] = np.asarray(state.metrics["success"])[ended]
        done |= ended
    assert success.mean() >= 0.4, success.mean()
    for s in (0, 1):
        assert success[side == s].sum() > 0, f"side {s} never poured"
