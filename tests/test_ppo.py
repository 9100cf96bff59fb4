"""PPO pieces: GAE against a loop, the clipped loss by hand, running statistics, chunk
execution, the value function on probes with known values, and the host loop."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.probes import ConstantRewardEnv, ObsDependentRewardEnv
from envs.wrappers import batch_keys, stagger, wrap
from rfs_jax import running_stats
from rfs_jax.acting import EpisodeStats, step_chunk
from rfs_jax.agents.ppo import (
    Batch,
    PPOConfig,
    TrainingState,
    clipped_policy_loss,
    compute_ppo_loss,
    init_training_state,
    make_policy,
    make_ppo_networks,
    make_train_step,
    train,
)
from rfs_jax.evaluation import evaluate
from rfs_jax.gae import compute_gae
from rfs_jax.steering import SteeringConfig, make_steering

H, H_EXEC, ACT = 3, 2, 2


def zero_sampler(params, obs, a0):
    """A stand-in base policy: always action 0 (the value probes ignore actions)."""
    return jnp.zeros_like(a0)


# --------------------------------------------------------------------------- GAE


def gae_loop(rewards, values, bootstrap, termination, truncation, gamma, lam):
    """Plain Python GAE, one env at a time, with brax's time-out convention."""
    T, B = rewards.shape
    adv = np.zeros((T, B))
    for b in range(B):
        acc = 0.0
        for t in reversed(range(T)):
            if truncation[t, b]:
                adv[t, b], acc = 0.0, 0.0  # no valid target; nothing flows through it
                continue
            next_value = values[t + 1, b] if t + 1 < T else bootstrap[b]
            live = 1.0 - termination[t, b]
            delta = rewards[t, b] + gamma * live * next_value - values[t, b]
            acc = delta + gamma * lam * live * acc
            adv[t, b] = acc
    return adv, adv + values


def test_gae_matches_a_python_loop():
    rng = np.random.default_rng(0)
    T, B = 9, 3
    rewards = rng.normal(size=(T, B))
    values = rng.normal(size=(T, B))
    bootstrap = rng.normal(size=(B,))
    termination = np.zeros((T, B))
    truncation = np.zeros((T, B))
    termination[3, 0] = 1.0  # env 0: terminates mid-rollout
    truncation[5, 1] = 1.0  # env 1: a time-out mid-rollout
    termination[8, 1] = 1.0  # ...and a termination on the last step
    truncation[8, 2] = 1.0  # env 2: a time-out on the last step
    args = (rewards, values, bootstrap, termination, truncation)
    adv, ret = compute_gae(*(jnp.asarray(a, jnp.float32) for a in args), 0.97, 0.9)
    adv_ref, ret_ref = gae_loop(*args, 0.97, 0.9)
    np.testing.assert_allclose(adv, adv_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ret_ref, rtol=1e-5, atol=1e-5)


def test_gae_hand_worked():
    """lambda = 1, gamma = 0.5, one env; step 1 terminates, step 3 is a time-out."""
    rewards = jnp.array([[1.0], [2.0], [4.0], [8.0]])
    values = jnp.array([[10.0], [20.0], [40.0], [80.0]])
    termination = jnp.array([[0.0], [1.0], [0.0], [0.0]])
    truncation = jnp.array([[0.0], [0.0], [0.0], [1.0]])
    adv, ret = compute_gae(rewards, values, jnp.array([1000.0]), termination, truncation, 0.5, 1.0)
    # t=3: truncated -> 0. t=2: 4 + 0.5 * V(s3) - 40 (bootstrap from the truncated step's obs,
    # which is still the old episode's). t=1: terminal, 2 - 20. t=0: 1 + 0.5 * 2 - 10 (the
    # return stops at the termination).
    np.testing.assert_allclose(adv[:, 0], [1 + 0.5 * 2 - 10, 2 - 20, 4 + 0.5 * 80 - 40, 0.0])
    np.testing.assert_allclose(ret[:, 0], [1 + 0.5 * 2, 2, 4 + 0.5 * 80, 80])


# --------------------------------------------------------------------------- losses


def test_clipped_policy_loss_hand_worked():
    ratio = jnp.array([1.5, 0.5, 1.1, 0.7])
    old = jnp.zeros(4)
    adv = jnp.array([1.0, 1.0, -1.0, -1.0])
    # min(r A, clip(r) A): 1.5 -> 1.2 (clipped), 0.5 -> 0.5 (unclipped: pessimistic), 1.1 -> -1.1,
    # 0.7 -> -0.8 (clipped). Mean 0.2 / 4 = -0.05; the loss is its negative.
    loss, metrics = clipped_policy_loss(jnp.log(ratio), old, adv, jnp.ones(4), 0.2)
    np.testing.assert_allclose(loss, 0.05, rtol=1e-5)
    np.testing.assert_allclose(metrics["ppo/clip_frac"], 0.75)
    # Weight 0 drops the last sample: -(1.2 + 0.5 - 1.1) / 3.
    loss, _ = clipped_policy_loss(jnp.log(ratio), old, adv, jnp.array([1.0, 1, 1, 0]), 0.2)
    np.testing.assert_allclose(loss, -0.2, rtol=1e-5)
    # Clipped samples get no gradient, unclipped ones get -A r / N.
    grad = jax.grad(lambda lp: clipped_policy_loss(lp, old, adv, jnp.ones(4), 0.2)[0])(
        jnp.log(ratio)
    )
    np.testing.assert_allclose(grad, [0.0, -0.5 / 4, 1.1 / 4, 0.0], rtol=1e-5)


def test_ppo_config_sizes():
    cfg = PPOConfig(num_envs=64, unroll_length=8, minibatch_size=128, total_env_steps=10_000)
    assert (cfg.batch_size, cfg.num_minibatches) == (512, 4)
    assert cfg.env_steps_per_iteration(2) == 1024
    assert cfg.num_iterations(2) == 10  # ceil(10000 / 1024)
    with pytest.raises(ValueError, match=r"64 \* 8 = 512 .* minibatch_size = 384"):
        PPOConfig(num_envs=64, unroll_length=8, minibatch_size=384)
    with pytest.raises(ValueError, match="num_envs"):
        PPOConfig(num_envs=0)


# --------------------------------------------------------------------------- running stats


def test_running_stats_match_numpy_and_run_in_jit():
    rng = np.random.default_rng(1)
    parts = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (1, 7, 300, 50)]
    parts[2][:, 3] = 5.0  # a feature constant within a batch
    stats = running_stats.init(4)
    update = jax.jit(running_stats.update)
    for x in parts:
        stats = update(stats, jnp.asarray(x, jnp.float32))
    x = np.concatenate(parts)
    np.testing.assert_allclose(stats.count, len(x))
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, x.std(0), rtol=1e-4)
    z = running_stats.normalize(stats, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1.0, rtol=1e-3)
    # Empty stats normalise as the identity; a never-varying feature maps to 0.
    x0 = jnp.array([[1.5, -2.0]])
    np.testing.assert_allclose(running_stats.normalize(running_stats.init(2), x0), x0)
    const = running_stats.update(running_stats.init(1), jnp.full((5, 1), 7.0))
    np.testing.assert_allclose(running_stats.normalize(const, jnp.array([[7.0]])), 0.0)


# --------------------------------------------------------------------------- chunks


def test_step_chunk_masks_after_done_and_holds_the_new_episode():
    env = wrap(ConstantRewardEnv(), episode_length=3)
    state = env.reset(batch_keys(jax.random.key(0), 2))
    stats = EpisodeStats.zeros(2)
    chunk = jnp.zeros((2, H_EXEC, ACT))
    step = jax.jit(lambda s, st: step_chunk(env, s, chunk, st))
    state, stats, out = step(state, stats)  # steps 1, 2 of 3
    np.testing.assert_allclose(out.reward, 2.0)
    np.testing.assert_allclose(out.done, 0.0)
    state, stats, out = step(state, stats)  # step 3 times out; the 4th action is not run
    np.testing.assert_allclose(out.reward, 1.0)
    np.testing.assert_allclose(out.done, 1.0)
    np.testing.assert_allclose(out.truncation, 1.0)
    np.testing.assert_allclose(out.episode_return, 3.0)
    np.testing.assert_allclose(out.env_steps, 1.0)
    np.testing.assert_allclose(state.info["steps"], 0.0)  # the new episode has not started
    np.testing.assert_allclose(stats.ret, 0.0)

    env = wrap(ObsDependentRewardEnv(), episode_length=10)
    state = env.reset(batch_keys(jax.random.key(1), 64))
    obs = state.obs[:, 0]
    chunk = jnp.zeros((64, H_EXEC, ACT))
    state, _, out = jax.jit(lambda s: step_chunk(env, s, chunk, EpisodeStats.zeros(64)))(state)
    np.testing.assert_allclose(out.reward, obs)  # only the first (terminal) step counts
    np.testing.assert_allclose(out.truncation, 0.0)
    np.testing.assert_allclose(out.episode_success, obs > 0)


def test_stagger_spreads_the_first_time_limits_and_their_episodes_are_not_counted():
    length = 6
    env = wrap(ConstantRewardEnv(), episode_length=length)
    state = stagger(env.reset(batch_keys(jax.random.key(0), 256)), jax.random.key(1), length)
    steps = np.asarray(state.info["steps"])
    assert steps.min() >= 0 and steps.max() <= length - 1
    assert len(np.unique(steps)) == length  # every start step drawn among 256 envs
    stats = EpisodeStats.zeros(256, whole=False)
    chunk = jnp.zeros((256, H_EXEC, ACT))
    step = jax.jit(lambda s, st: step_chunk(env, s, chunk, st))
    ends = []
    for _ in range(length):  # 12 env steps: every env ends its cut episode and a whole one
        state, stats, out = step(state, stats)
        ends.append((np.asarray(out.done), np.asarray(out.episode_whole)))
    done = np.stack([d for d, _ in ends])
    whole = np.stack([w for _, w in ends])
    # The first ending of each env is its cut episode (not whole); its next one is whole.
    first = np.argmax(done > 0, axis=0)
    assert np.all(whole[first, np.arange(256)] == 0)
    assert len(np.unique(first)) > 1  # not in lock-step
    assert np.all(whole.sum(0) == done.sum(0) - 1)
    np.testing.assert_allclose(stats.whole, 1.0)


# --------------------------------------------------------------------------- value probes


def _value_setup(env, episode_length, cfg):
    steering = make_steering(
        SteeringConfig(mode="base", hidden=(32, 32)), zero_sampler, 1, ACT, H, H_EXEC
    )
    networks = make_ppo_networks(steering, value_hidden=(64, 64))
    batched = wrap(env, episode_length)
    state = init_training_state(batched, networks, cfg, jax.random.key(0))
    step = jax.jit(make_train_step(batched, networks, cfg), donate_argnums=0)
    return networks, state, step


def test_value_learns_the_constant_reward_with_bootstrapped_time_outs():
    """V = H_exec / (1 - gamma): the time limit (5 decisions) must not look like an ending,
    which would give about 2 (1 - 0.9^5) / 0.1 = 8.2 at best."""
    cfg = PPOConfig(
        gamma=0.9, num_envs=32, unroll_length=16, minibatch_size=128, num_epochs=4, value_lr=3e-3
    )
    networks, state, step = _value_setup(ConstantRewardEnv(), 10, cfg)
    for _ in range(40):
        state, metrics = step(state, None)
    obs = jnp.linspace(-1.0, 1.0, 9)[:, None]  # the noise observations' range
    value = networks.value.apply(state.value_params, networks.normalize(state.obs_stats, obs))
    np.testing.assert_allclose(value, H_EXEC / (1 - cfg.gamma), rtol=0.05)
    assert float(metrics["env/truncated"]) == 1.0
    np.testing.assert_allclose(metrics["reward/constant"], 1.0)


def test_value_learns_an_obs_dependent_terminal_reward():
    cfg = PPOConfig(num_envs=64, unroll_length=4, minibatch_size=128, num_epochs=4)
    networks, state, step = _value_setup(ObsDependentRewardEnv(), 10, cfg)
    for _ in range(60):
        state, metrics = step(state, None)
    obs = jnp.array([[1.0], [-1.0]])
    value = networks.value.apply(state.value_params, networks.normalize(state.obs_stats, obs))
    np.testing.assert_allclose(value, [1.0, -1.0], atol=0.1)
    assert float(metrics["env/truncated"]) == 0.0


def _regulariser_loss(name: str):
    """``loss(coef) -> (loss, metrics)`` of one fixed minibatch and moved head, with the
    ``compute_ppo_loss`` weight ``name`` set to ``coef``."""
    steering = make_steering(SteeringConfig(hidden=(16,)), zero_sampler, 1, ACT, H, H_EXEC)
    networks = make_ppo_networks(steering, value_hidden=(16,))
    params = jax.tree.map(lambda x: x + 0.1, steering.init(jax.random.key(0)))  # means off 0
    value_params = networks.init_value(jax.random.key(1))
    n = 8
    keys = jax.random.split(jax.random.key(2), 4)
    batch = Batch(
        obs=jax.random.normal(keys[0], (n, 1)),
        raw=jax.random.normal(keys[1], (n, steering.raw_size)),
        base_chunk=jnp.zeros((n, H_EXEC, ACT)),
        log_prob=jnp.zeros((n,)),
        advantage=jax.random.normal(keys[2], (n,)),
        target=jax.random.normal(keys[3], (n,)),
        weight=jnp.ones((n,)),
    )
    stats = running_stats.init(1)

    def loss(coef):
        return compute_ppo_loss(
            (params, value_params), stats, batch, networks, 0.2, 0.5, 0.0, True, **{name: coef}
        )

    return loss


def test_base_kl_term_enters_the_loss_with_its_weight():
    """Same params and minibatch: the loss with base_kl_coef 2 is the loss with 0 plus 2 x the
    logged ppo/base_kl, which is > 0 once the head's means are off zero."""
    loss = _regulariser_loss("base_kl_coef")

    plain, metrics = loss(0.0)
    weighted, _ = loss(2.0)
    assert float(metrics["ppo/base_kl"]) > 0.0
    np.testing.assert_allclose(weighted, plain + 2.0 * metrics["ppo/base_kl"], rtol=1e-5)


def test_latent_offset_kl_by_hand_and_in_the_loss():
    """The offset KL is |weighted batch mean of the latent means|^2 / 2, blind to the part of
    the means that varies by state and to the residual; it enters the loss with its weight."""
    steering = make_steering(SteeringConfig(hidden=(16,)), zero_sampler, 1, ACT, H, H_EXEC)
    latent, residual = steering.latent_size, steering.residual_size
    offset = jnp.arange(latent, dtype=jnp.float32) / latent
    varying = jnp.array([[1.0], [-1.0], [3.0]]) * jnp.ones((1, latent))  # weighted mean 0
    mean = jnp.concatenate([offset + varying, jnp.full((3, residual), 5.0)], axis=1)
    weight = jnp.array([1.0, 1.0, 0.0])
    expected = 0.5 * float(jnp.sum(offset**2))
    np.testing.assert_allclose(steering.latent_offset_kl(mean, weight), expected, rtol=1e-6)
    residual_only = make_steering(
        SteeringConfig(mode="residual", hidden=(16,)), zero_sampler, 1, ACT, H, H_EXEC
    )
    assert float(residual_only.latent_offset_kl(mean)) == 0.0

    loss = _regulariser_loss("offset_kl_coef")
    plain, metrics = loss(0.0)
    weighted, _ = loss(3.0)
    assert float(metrics["ppo/offset_kl"]) > 0.0
    np.testing.assert_allclose(weighted, plain + 3.0 * metrics["ppo/offset_kl"], rtol=1e-5)


def test_critic_warmup_trains_only_the_value_first():
    """With 2 warm-up iterations the steering head (params and Adam state) is untouched by the
    first two iterations while the value function learns; the third moves the head."""
    cfg = PPOConfig(
        num_envs=32, unroll_length=4, minibatch_size=64, num_epochs=2, critic_warmup_iterations=2
    )
    steering = make_steering(SteeringConfig(hidden=(16,)), zero_sampler, 1, ACT, H, H_EXEC)
    networks = make_ppo_networks(steering, value_hidden=(16,))
    batched = wrap(ObsDependentRewardEnv(), 10)
    state = init_training_state(batched, networks, cfg, jax.random.key(0))
    step = jax.jit(make_train_step(batched, networks, cfg))
    head = (state.steering_params, state.policy_opt_state)

    def same(a, b):
        return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.all(x == y)), a, b)))

    for _ in range(2):
        value_before = state.value_params
        state, metrics = step(state, None)
        assert same((state.steering_params, state.policy_opt_state), head)
        assert not same(state.value_params, value_before)
        assert float(metrics["ppo/policy_grad_norm"]) > 0.0  # a gradient existed and was dropped
        assert float(metrics["steering/latent_mean_rms"]) == 0.0  # still exactly the base
        assert float(metrics["ppo/policy_steps"]) == 0.0
        assert float(metrics["steering/latent_std"]) == 1.0
    state, metrics = step(state, None)
    assert not same(state.steering_params, head[0])
    assert float(metrics["steering/latent_mean_rms"]) > 0.0
    assert float(metrics["steering/residual_mean_rms"]) > 0.0


def test_target_kl_stops_the_policy_epochs_not_the_value():
    """The first SGD step's ratio is exactly 1 (KL 0), so with a tiny target_kl exactly one
    policy step of the 2 x 2 is taken and every later one is skipped, while the value function
    takes all four; with a huge target_kl the step is the one without the early stop."""
    cfg = PPOConfig(num_envs=32, unroll_length=4, minibatch_size=64, num_epochs=2)
    steering = make_steering(SteeringConfig(hidden=(16,)), zero_sampler, 1, ACT, H, H_EXEC)
    networks = make_ppo_networks(steering, value_hidden=(16,))
    batched = wrap(ObsDependentRewardEnv(), 10)
    state = init_training_state(batched, networks, cfg, jax.random.key(0))

    def run(target_kl):
        step_cfg = dataclasses.replace(cfg, target_kl=target_kl)
        return jax.jit(make_train_step(batched, networks, step_cfg))(state, None)

    free, free_metrics = run(None)
    tight, tight_metrics = run(1e-12)
    loose, loose_metrics = run(1e6)
    assert float(free_metrics["ppo/policy_steps"]) == 1.0
    assert float(loose_metrics["ppo/policy_steps"]) == 1.0
    assert float(tight_metrics["ppo/policy_steps"]) == 0.25
    chex.assert_trees_all_close(loose.steering_params, free.steering_params)
    chex.assert_trees_all_close(tight.value_params, free.value_params)
    # One Adam step from zero moments: count 1 in the stopped run, 4 in the free one.
    counts = [int(x) for x in jax.tree.leaves(tight.policy_opt_state) if jnp.ndim(x) == 0]
    assert counts and set(counts) == {1}
    moved = jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a - b))), tight.steering_params, state.steering_params
    )
    assert max(jax.tree.leaves(moved)) > 0.0
    with pytest.raises(ValueError, match="target_kl"):
        PPOConfig(target_kl=0.0)


# --------------------------------------------------------------------------- host loop


def test_train_loop_hooks_policy_and_evaluate():
    env = ObsDependentRewardEnv()
    cfg = PPOConfig(
        num_envs=16,
        unroll_length=4,
        minibatch_size=32,
        num_epochs=1,
        total_env_steps=3 * 16 * 4 * H_EXEC,
        eval_interval=2,
        eval_episodes=8,
        ckpt_interval=2,
    )
    steering_cfg = SteeringConfig(hidden=(16,))
    seen, saved = [], []
    state, history = train(
        env,
        5,
        zero_sampler,
        {},
        steering_cfg,
        cfg,
        jax.random.key(0),
        horizon=H,
        exec_horizon=H_EXEC,
        progress_fn=lambda it, m: seen.append(it),
        checkpoint_fn=lambda it, s: saved.append((it, type(s))),
    )
    assert isinstance(state, TrainingState)
    assert seen == [1, 2, 3] and [h["iteration"] for h in history] == [1.0, 2.0, 3.0]
    assert saved == [(2, TrainingState), (3, TrainingState)]
    assert "eval/success_rate" in history[1] and "eval/success_rate" in history[2]
    assert "eval/success_rate" not in history[0]
    assert int(state.iteration) == 3 and int(state.env_steps) == 3 * 16 * 4 * H_EXEC
    assert all(np.isfinite(v) for h in history for v in h.values())

    steering = make_steering(steering_cfg, zero_sampler, 1, ACT, H, H_EXEC)
    policy = make_policy(make_ppo_networks(steering), {})
    obs = jnp.ones((5, 1))
    chunk = policy(state.policy_params, obs, jax.random.key(1), deterministic=True)
    assert chunk.shape == (5, H_EXEC, ACT)
    # zero base + a tanh residual bounded by residual_scale
    assert float(jnp.max(jnp.abs(chunk))) <= steering_cfg.residual_scale

    # Every env's first episode: reward = its sign, success when positive.
    result = evaluate(
        env, 5, lambda o, k: jnp.zeros((o.shape[0], H_EXEC, ACT)), jax.random.key(2), 200
    )
    assert 0.35 < result["success_rate"] < 0.65
    np.testing.assert_allclose(result["return_mean"], 2 * result["success_rate"] - 1, atol=1e-5)
    const = evaluate(
        ConstantRewardEnv(),
        5,
        lambda o, k: jnp.zeros((o.shape[0], H_EXEC, ACT)),
        jax.random.key(2),
        4,
    )
    assert const == {"success_rate": 0.0, "return_mean": 5.0, "episodes": 4}
