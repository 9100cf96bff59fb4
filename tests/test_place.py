"""The placing tasks (pick & place, stack): scene sampling and the success rule, checked by
putting the object on its goal by hand."""

import jax
import numpy as np
import pytest

import envs
from rfs_jax.demos import make_batched

from episodes import first_success, put_object_at, run_expert

NUM_ENVS = 64  # the batch of tests/test_envs.py: the compiled step is shared through the cache
PLACE_TASKS = ("pick_place", "stack")


@pytest.fixture(scope="module", params=PLACE_TASKS)
def batched(request):
    env = envs.make(request.param)
    reset, step = make_batched(env, NUM_ENVS)
    return request.param, env, reset, step


def _goal(env, state):
    return jax.vmap(env.goal)(state.pipeline_state, state.info)


def test_success_when_placed_released_and_still(batched):
    task, env, reset, step = batched
    state = reset(jax.random.PRNGKey(0))
    goal = _goal(env, state)
    # A few millimetres up: the object drops onto its goal and settles there.
    state = put_object_at(env, state, goal.at[:, 2].add(0.002))
    first = first_success(env, state, step, env.config.settle_steps + 10)
    assert (first > 0).mean() >= 0.95, first
    assert np.all(first[first > 0] >= env.config.settle_steps)


def test_no_success_away_from_the_goal(batched):
    task, env, reset, step = batched
    state = reset(jax.random.PRNGKey(1))
    # The object rests where it started, which is never within tolerance of its goal.
    start = state.pipeline_state.qpos[
        :, env._obj["object"]["qadr"] : env._obj["object"]["qadr"] + 3
    ]
    assert np.all(np.linalg.norm(np.asarray(start - _goal(env, state))[:, :2], axis=1) > 0.05)
    first = first_success(env, state, step, env.config.settle_steps + 5)
    assert np.all(first < 0)


def test_pick_place_target_is_reachable_shown_and_observed():
    env = envs.make("pick_place")
    cfg = env.config
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 256))
    target = np.asarray(states.info["target"])
    adr = env._obj["object"]["qadr"]
    start = np.asarray(states.pipeline_state.qpos[:, adr : adr + 2])
    dist = np.linalg.norm(target - start, axis=1)
    assert np.all(np.abs(target) <= cfg.target_bound + 1e-6)
    assert np.all(dist <= cfg.target_distance[1] + 1e-5)
    assert np.mean(dist >= cfg.target_distance[0] - 1e-5) > 0.9  # the edge may shorten a few
    # The disc marking the target sits on it, and the observation carries it.
    np.testing.assert_allclose(np.asarray(states.pipeline_state.mocap_pos[:, 0, :2]), target)
    obs = np.asarray(states.obs)
    assert all(np.any(np.isclose(obs, target[:, i : i + 1]), axis=1).all() for i in (0, 1))


def test_stack_contact_pairs_and_scene():
    env = envs.make("stack")
    m = env.mj_model
    import mujoco

    def name(i):
        return mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, i)

    pairs = {frozenset((name(m.pair_geom1[i]), name(m.pair_geom2[i]))) for i in range(m.npair)}
    base_pairs = {tuple(sorted(p - {"base"}))[0] for p in pairs if "base" in p}
    assert base_pairs == {"table", "object", "index_dist", "middle_dist", "ring_dist", "thumb_dist"}
    assert envs.make("stack", base_hand_contacts="none").mj_model.npair == m.npair - 4
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 128))
    cfg = env.config
    top = np.asarray(
        states.pipeline_state.qpos[:, env._obj["object"]["qadr"] : env._obj["object"]["qadr"] + 2]
    )
    base = np.asarray(
        states.pipeline_state.qpos[:, env._obj["base"]["qadr"] : env._obj["base"]["qadr"] + 2]
    )
    assert np.all(np.linalg.norm(top - base, axis=1) > cfg.base_distance[0] * 0.7)
    # Both cubes' sizes are drawn per episode, and the lower one is the heavier.
    assert np.ptp(np.asarray(states.info["base_size"])) > 0.003
    assert np.ptp(np.asarray(states.info["obj_size"])) > 0.003
    assert np.all(np.asarray(states.info["base_mass"]) > np.asarray(states.info["obj_mass"]))


# On these seeds the place expert reaches 0.656 on pick_place and 0.438 on stack (below the 0.6
# aimed for: the README says why); the bounds leave a margin so that a regression shows.
EXPERT_SUCCESS = {"pick_place": (0.5, 0.9), "stack": (0.3, 0.9)}


def test_expert_places_with_both_grasps(batched):
    task, env, reset, step = batched
    success, plan, _ = run_expert(task, env, reset, step, seed=2, plan=("style", "carry_h"))
    lo, hi = EXPERT_SUCCESS[task]
    assert lo <= success.mean() <= hi, success.mean()
    # Both grasps and both carry heights are used, and each succeeds at times.
    for name, values in plan.items():
        for v in np.unique(values):
            assert (values == v).sum() >= 10, (name, v)
            assert success[values == v].mean() > 0.05, (name, v)
        assert len(np.unique(values)) == 2, name
