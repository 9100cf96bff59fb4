"""Pour: the balls' layout, the success rule and the scripted expert (one episode of 64 envs)."""

import jax
import jax.numpy as jnp
import mujoco
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
def reset(env):
    return jax.jit(env.reset)


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


def test_balls_are_frictionless_slide_joints(env, reset):
    """Each ball: 3 slide dofs whose qpos is its centre, and only condim-1 contact pairs."""
    m = env.mj_model
    bodies = np.array([m.body(b).id for b in env._balls])
    assert env._ball_qadr.shape == (env.config.balls.num, 3)
    for b, qadr in zip(bodies, env._ball_qadr, strict=True):
        assert m.body_dofnum[b] == 3 and m.body_jntnum[b] == 3
        joints = range(m.body_jntadr[b], m.body_jntadr[b] + 3)
        assert all(m.jnt_type[j] == mujoco.mjtJoint.mjJNT_SLIDE for j in joints)
        np.testing.assert_array_equal(qadr, [m.jnt_qposadr[j] for j in joints])
    geoms = [m.geom(b).id for b in env._balls]
    ball = np.isin(m.pair_geom1, geoms) | np.isin(m.pair_geom2, geoms)
    assert ball.sum() > 0 and np.all(m.pair_dim[ball] == 1) and np.all(m.pair_dim[~ball] == 3)
    # Reset leaves the kinematics consistent with the balls' qpos.
    d = reset(jax.random.PRNGKey(1)).pipeline_state
    np.testing.assert_allclose(env.ball_pos(d), d.xpos[bodies], atol=1e-6)


def test_success_rule_counts_balls_inside_the_bowl_only(env, reset):
    state = reset(jax.random.PRNGKey(0))
    assert env.config.balls.num == 4 and env.config.success_fraction == 0.7
    r, inner, rim = env.config.balls.radius, env.config.bowl.inner_half, env.config.bowl.rim_height
    inside = [0.0, 0.0, r]
    on_table = [inner + 0.05, 0.0, r]  # outside the walls
    above = [0.0, 0.0, rim + 0.02]  # over the bowl, above its rim
    corner = [inner - 0.01, -(inner - 0.01), r]
    local = jnp.array([inside, corner, on_table, above])
    in_bowl, spilled = env.balls_in_bowl(_with_balls(env, state, local), state.info)
    np.testing.assert_array_equal(np.asarray(in_bowl), [True, True, False, False])
    np.testing.assert_array_equal(np.asarray(spilled), [False, False, True, False])
    # 2 of 4 is short of the default 0.7; 3 of 4 is enough.
    assert float(jnp.mean(in_bowl)) < env.config.success_fraction
    local = local.at[3].set(jnp.array(corner))
    in_bowl, _ = env.balls_in_bowl(_with_balls(env, state, local), state.info)
    assert float(jnp.mean(in_bowl)) == 0.75 >= env.config.success_fraction


def test_balls_start_in_the_cup(env, reset):
    state = reset(jax.random.PRNGKey(1))
    in_bowl, spilled = env.balls_in_bowl(state.pipeline_state, state.info)
    assert not np.any(np.asarray(in_bowl)) and not np.any(np.asarray(spilled))


def test_a_spilled_ball_stops_on_the_table(env, reset):
    """On the frictionless table only the slide joints' drag slows a ball: one thrown out at
    0.5 m/s from 0.1 m up stops within about damping / mass of that (C MuJoCo, same model)."""
    m, d = env.mj_model, mujoco.MjData(env.mj_model)
    state = reset(jax.random.PRNGKey(2))
    d.qpos[:] = np.asarray(state.pipeline_state.qpos)
    d.ctrl[:] = np.asarray(state.pipeline_state.ctrl)
    qadr, vadr = env._ball_qadr[0], env._ball_vadr[0]
    d.qpos[qadr] = [0.3, 0.3, 0.1]  # clear of the cup, the bowl (at the origin here), the hand
    d.qvel[vadr] = [-0.5, 0.0, 0.0]
    for _ in range(round(2.0 / m.opt.timestep)):
        mujoco.mj_step(m, d)
    assert np.abs(d.qvel[vadr]).max() < 1e-3, d.qvel[vadr]
    assert 0.05 < 0.3 - d.qpos[qadr[0]] < 0.2, d.qpos[qadr]
    assert abs(d.qpos[qadr[2]] - env.config.balls.radius) < 2e-3, d.qpos[qadr]


def test_expert_pours_with_both_sides(env, batched):
    """One episode of 64 envs: the expert pours often enough (0.78 here when written) and uses
    both pouring sides."""
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
    assert success.mean() >= 0.65, success.mean()
    for s in (0, 1):
        assert success[side == s].sum() > 0, f"side {s} never poured"


def test_a_spill_is_paid_once(env, batched):
    """A ball put on the table costs ``spill`` x its share of the balls on the step it lies
    there and nothing on the next, while ``spilled`` still reports it."""
    reset, step = batched
    state = reset(jax.random.PRNGKey(3))
    r, inner = env.config.balls.radius, env.config.bowl.inner_half
    local = jnp.array([[inner + 0.05, 0.0, r]])

    def spill_first_ball(s):
        info = s.info
        xy = info["bowl_xy"] + fixtures.rotate(info["bowl_yaw"], local[:, :2])
        qpos = s.pipeline_state.qpos.at[env._ball_qadr[0]].set(
            jnp.concatenate([xy[0], local[0, 2:]])
        )
        return s.replace(pipeline_state=s.pipeline_state.replace(qpos=qpos))

    state = jax.vmap(spill_first_ball)(state)
    action = jnp.zeros((NUM_ENVS, env.action_size))
    first = step(state, action)
    second = step(first, action)
    share = 1.0 / env.config.balls.num
    lying = (np.asarray(first.metrics["spilled"]) == share) & (
        np.asarray(second.metrics["spilled"]) == share
    )
    assert lying.mean() > 0.9, lying.mean()
    scale = env.config.reward.spill
    np.testing.assert_allclose(np.asarray(first.metrics["reward/spill"])[lying], -scale * share)
    np.testing.assert_allclose(np.asarray(second.metrics["reward/spill"])[lying], 0.0)
