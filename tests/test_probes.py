"""Probe envs: the env contract, the probes' analytic facts, and the RFS probe itself:
on ``BimodalGoalEnv`` with a flow base trained on its demos, RFS solves the task while DSRL
(latent only) and residual RL (residual only) cannot, with the same budget."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.probes import BimodalGoalEnv, ConstantRewardEnv, ObsDependentRewardEnv
from rfs_jax import running_stats
from rfs_jax.agents.ppo import PPOConfig, train
from rfs_jax.evaluation import make_evaluator
from rfs_jax.flow import FlowConfig, chunks_from_episodes, make_sampler, train_flow
from rfs_jax.steering import SteeringConfig, make_steering

PROBES = {
    "constant": ConstantRewardEnv,
    "obs_dependent": ObsDependentRewardEnv,
    "bimodal_goal": BimodalGoalEnv,
}


@pytest.mark.parametrize("name", sorted(PROBES))
def test_env_contract(name):
    env = PROBES[name]()
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    state = reset(jax.random.key(0))
    assert state.obs.shape == (env.observation_size,)
    action = jnp.full((env.action_size,), 0.3)
    for _ in range(3):
        state = step(state, action)
        leaves = jax.tree.leaves((state.obs, state.reward, state.done, state.metrics))
        assert all(np.all(np.isfinite(x)) for x in leaves)
        assert float(state.metrics["success"]) in (0.0, 1.0)
    a, b = reset(jax.random.key(5)), reset(jax.random.key(5))
    jax.tree.map(np.testing.assert_array_equal, _key_data(a), _key_data(b))


def _key_data(tree):
    """Typed PRNG keys (kept in some envs' info) as their raw uint32 data."""

    def raw(x):
        return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x

    return jax.tree.map(raw, tree)


def test_bimodal_goal_rewards_the_cued_offset_target():
    env = BimodalGoalEnv()
    state = jax.jit(env.reset)(jax.random.key(1))
    cue = float(state.obs[2])
    target = np.array([cue * env.goal, 0.0]) + np.array(env.offset)
    hit = env.step(state, jnp.asarray(target))
    assert float(hit.metrics["success"]) == 1.0
    np.testing.assert_allclose(hit.reward, 1.0)
    # Demo-like actions (either goal, on the goals' axis) never succeed.
    for side in (1.0, -1.0):
        for x_err in (-0.05, 0.0, 0.05):
            on_axis = env.step(state, jnp.array([side * env.goal + x_err, 0.0]))
            assert float(on_axis.metrics["success"]) == 0.0
    two = env.step(hit, jnp.asarray(target))
    assert float(hit.done) == 0.0 and float(two.done) == 1.0
    with pytest.raises(ValueError, match="tolerance"):
        BimodalGoalEnv(tolerance=0.5)


def test_bimodal_demos_ignore_the_cue():
    env = BimodalGoalEnv()
    episodes = env.demo_episodes(jax.random.key(0), 400)
    assert len(episodes) == 400
    obs = np.stack([o for o, _ in episodes])  # [N, T, 3]
    actions = np.stack([a for _, a in episodes])  # [N, T, 2]
    assert obs.shape == (400, env.num_steps, 3) and actions.shape == (400, env.num_steps, 2)
    side = np.sign(actions[:, 0, 0])
    cue = obs[:, 0, 2]
    assert 0.4 < np.mean(side > 0) < 0.6  # bimodal
    assert abs(np.mean(side == cue) - 0.5) < 0.1  # independent of the cue
    assert np.all(side[:, None] == np.sign(actions[:, :, 0]))  # one goal per episode
    np.testing.assert_allclose(np.abs(actions[..., 0]), env.goal, atol=0.15)
    assert np.max(np.abs(actions[..., 1])) < 0.05  # on the goals' axis: off the target


# --------------------------------------------------------------------------- RFS probe

EPISODE_LENGTH = 4  # the env itself terminates after 2 steps (one chunk)
FLOW = FlowConfig(
    horizon=4,
    exec_horizon=2,
    num_steps=5,
    hidden=(128, 128, 128),
    num_updates=2000,
    warmup_steps=50,
    batch_size=256,
)
# The same budget for every mode: 60 iterations of 512 decisions (61,440 env steps).
PPO = PPOConfig(
    num_envs=256,
    unroll_length=2,
    minibatch_size=128,
    num_epochs=4,
    total_env_steps=60 * 512 * 2,
    eval_interval=0,
    eval_episodes=512,
    ckpt_interval=0,
)


@pytest.fixture(scope="module")
def probe_base():
    """The bimodal env and a flow base policy trained on its demonstrations (shared)."""
    env = BimodalGoalEnv()
    obs, chunks = chunks_from_episodes(env.demo_episodes(jax.random.key(0), 1000), FLOW.horizon)
    params, _ = train_flow(FLOW, obs, chunks, jax.random.key(1), progress=False)
    sampler = make_sampler(FLOW, env.observation_size, env.action_size)
    return env, sampler, params


def _steer(probe_base, mode):
    env, sampler, params = probe_base
    state, history = train(
        env,
        EPISODE_LENGTH,
        sampler,
        params,
        SteeringConfig(mode=mode),
        PPO,
        jax.random.key(2),
        horizon=FLOW.horizon,
        exec_horizon=FLOW.exec_horizon,
    )
    return state, history[-1]


def networks_normalize(state, obs):
    return running_stats.normalize(state.obs_stats, obs, clip=PPO.obs_clip)


@pytest.fixture(scope="module")
def base_result(probe_base):
    """The untrained base policy (mode ``base``) on the probe."""
    env, sampler, params = probe_base
    steering = make_steering(
        SteeringConfig(mode="base"), sampler, 3, 2, FLOW.horizon, FLOW.exec_horizon
    )
    init = steering.init(jax.random.key(0))

    def policy(base_params, obs, key):
        return steering.sample(init, base_params, obs, obs, key).chunk

    return jax.device_get(
        make_evaluator(env, EPISODE_LENGTH, policy, 512)(params, jax.random.key(3))
    )


def test_base_policy_picks_a_goal_at_random_and_misses(probe_base, base_result):
    env, sampler, params = probe_base
    obs = jnp.tile(jnp.array([[0.0, 0.0, 1.0]]), (2000, 1))
    a0 = jax.random.normal(jax.random.key(4), (2000, FLOW.horizon, 2))
    actions = np.asarray(jax.jit(sampler)(params, obs, a0))[:, : FLOW.exec_horizon]
    assert 0.35 < np.mean(actions[:, 0, 0] > 0) < 0.65  # both modes, whatever the cue
    assert np.max(np.abs(actions[..., 1])) < 0.1  # never near the offset target
    assert base_result["eval/success_rate"] < 0.05


def test_rfs_solves_the_bimodal_probe(probe_base):
    _, result = _steer(probe_base, "rfs")
    assert result["eval/success_rate"] >= 0.9, result


def test_dsrl_cannot_reach_the_offset(probe_base, base_result):
    _, result = _steer(probe_base, "dsrl")
    assert result["eval/success_rate"] < 0.6, result
    # It does learn: picking the cued goal raises the return above the base policy's.
    assert result["eval/return_mean"] > base_result["eval/return_mean"] + 0.3, result


def test_residual_cannot_pick_the_goal(probe_base):
    state, result = _steer(probe_base, "residual")
    assert result["eval/success_rate"] < 0.6, result
    # It does learn: its mean residual moves towards the offset (0, +0.15).
    env, sampler, params = probe_base
    steering = make_steering(
        SteeringConfig(mode="residual"), sampler, 3, 2, FLOW.horizon, FLOW.exec_horizon
    )
    obs = jax.vmap(env.reset)(jax.random.split(jax.random.key(5), 256)).obs
    obs_n = networks_normalize(state, obs)
    sample = steering.sample(state.steering_params, params, obs, obs_n, jax.random.key(6), True)
    residual = np.asarray(sample.chunk - sample.base_chunk)
    assert np.mean(residual[..., 1]) > 0.02, np.mean(residual, axis=(0, 1))  # 0 at init
