"""SAC over the steering action: losses by hand, the aliasing regression's target against a
hand-written sampler, the probe (RFS solves it, DSRL and residual cannot), and the run layer
(``rfs steer --algo sac``: folder, eval, kill-free interrupt and resume)."""

from __future__ import annotations

import dataclasses
import json
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from probe_runs import TASK, assert_same_rows, probe_args

from envs.probes import BimodalGoalEnv
from experiments import cli
from experiments.presets import PRESETS
from experiments.steer import evaluate_run, steer
from rfs_jax.agents.sac import SACConfig, losses, make_sac_networks, train
from rfs_jax.checkpoint import Checkpointer
from rfs_jax.flow import FlowConfig, chunks_from_episodes, make_sampler, train_flow
from rfs_jax.logging import read_metrics
from rfs_jax.steering import SteeringConfig, make_steering

# --------------------------------------------------------------------------- losses by hand


def test_td_target_terminal_truncated_and_entropy_by_hand():
    reward = jnp.array([1.0, 0.5, -1.0])
    termination = jnp.array([0.0, 1.0, 0.0])  # the second ended (success or failure)
    next_q = jnp.array([[2.0, 3.0, 0.5], [1.5, 4.0, 1.0]])  # twins: min = 1.5, 3.0, 0.5
    next_log_prob = jnp.array([-2.0, 7.0, 1.0])
    y = losses.td_target(reward, termination, next_q, next_log_prob, jnp.asarray(0.1), 0.9)
    expected = [
        1.0 + 0.9 * (1.5 - 0.1 * -2.0),  # bootstrapped, entropy bonus +0.2
        0.5,  # terminal: no bootstrap, no entropy term
        -1.0 + 0.9 * (0.5 - 0.1 * 1.0),
    ]
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    # A truncated transition (weight 0) is left out of the critic loss entirely.
    q = jnp.array([[1.0, 0.0, 5.0], [2.0, 0.0, 5.0]])
    weight = jnp.array([1.0, 1.0, 0.0])
    loss = losses.critic_loss(q, y, weight)
    by_hand = sum(((q[i, 0] - y[0]) ** 2 + (q[i, 1] - y[1]) ** 2) / 2.0 for i in range(2))
    np.testing.assert_allclose(loss, by_hand, rtol=1e-6)
    q_changed = q.at[:, 2].set(-100.0)
    np.testing.assert_allclose(losses.critic_loss(q_changed, y, weight), loss, rtol=1e-6)


def test_actor_alpha_and_alias_losses_by_hand():
    q = jnp.array([[1.0, 2.0], [0.0, 3.0]])
    log_prob = jnp.array([-1.0, 0.5])
    np.testing.assert_allclose(
        losses.actor_loss(q, log_prob, jnp.asarray(0.2)),
        np.mean([0.2 * -1.0 - 0.0, 0.2 * 0.5 - 2.0]),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        losses.alpha_loss(jnp.asarray(0.3), log_prob, -2.0), -0.3 * (-0.25 - 2.0), rtol=1e-6
    )
    q_w = jnp.array([[0.0, 1.0], [1.0, 1.0]])
    q_a = jnp.array([[0.5, 2.0], [1.0, 1.0]])  # min: 0.5, 1.0
    np.testing.assert_allclose(
        losses.alias_loss(q_w, q_a), (0.25 + 0.0) / 2 + (0.25 + 0.0) / 2, rtol=1e-6
    )


def test_base_kl_by_hand_and_zero_for_the_untrained_actor():
    init = jnp.log(jnp.array([0.5, 0.5, 0.2]))
    mask = jnp.array([1.0, 1.0, 0.0])  # the last dim is not learned: it adds nothing
    mean = jnp.array([[0.0, 0.3, 9.0]])
    log_std = jnp.log(jnp.array([[0.5, 0.25, 1.0]]))
    # dim 0: at the initial Gaussian, 0; dim 1: log(0.5/0.25) + (0.0625 + 0.09) / 0.5 - 0.5.
    expected = np.log(2.0) + (0.0625 + 0.09) / (2 * 0.25) - 0.5
    np.testing.assert_allclose(losses.base_kl(mean, log_std, init, mask), [expected], rtol=1e-5)
    # The untrained actor (mean 0, the initial stds) is at KL 0.
    cfg = dataclasses.replace(SAC, base_kl_coef=0.5)
    steering = make_steering(SteeringConfig(mode="rfs"), _hand_sampler, 3, 2, 4, 2)
    networks = make_sac_networks(steering, cfg)
    obs_n = jax.random.normal(jax.random.key(0), (4, networks.steering.obs_size))
    m, ls = networks.actor.apply(networks.init_actor(jax.random.key(1)), obs_n)
    kl = losses.base_kl(m, ls, networks.init_log_std, networks.learned)
    np.testing.assert_allclose(kl, 0.0, atol=1e-5)
    # The actor loss adds coef * mean|min Q| * mean KL.
    q = jnp.array([[-2.0, 4.0], [-3.0, 5.0]])  # min: -3, 4; mean |.| = 3.5
    log_prob = jnp.array([-1.0, 0.5])
    kl = jnp.array([0.2, 0.4])
    np.testing.assert_allclose(
        losses.actor_loss_with_base_kl(q, log_prob, jnp.asarray(0.1), kl, 0.5),
        np.mean([0.1 * -1.0 + 3.0, 0.1 * 0.5 - 4.0]) + 0.5 * 3.5 * 0.3,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="base_kl_coef"):
        dataclasses.replace(SAC, base_kl_coef=-1.0)


# --------------------------------------------------------------------------- aliasing oracle


def _hand_sampler(params, obs, a0):
    """A known 'base policy': ``Des(s, a0) = tanh(0.5 a0 + s[0])`` per action, all positions."""
    return jnp.tanh(0.5 * a0 + obs[:, :1, None])


@pytest.mark.parametrize("mode", ["rfs", "dsrl", "residual"])
def test_alias_points_denoise_to_the_action_the_critic_is_regressed_at(mode):
    """The aliasing regression's target is ``Q_A(s, Des(s, a0) + beta * ar)``: its actions, fed
    through the run's compose, equal the hand-written sampler's plus the residual."""
    cfg = SteeringConfig(mode=mode, residual_scale=0.2)
    steering = make_steering(cfg, _hand_sampler, 3, 2, horizon=4, exec_horizon=2)
    networks = make_sac_networks(steering, SACConfig(latent_bound=1.5))
    act, raw = networks.alias_actions(jax.random.key(0), 512)
    obs = jax.random.normal(jax.random.key(1), (512, 3))
    chunk, _ = steering.compose(None, obs, raw)
    latent = raw[:, :8].reshape(512, 4, 2)
    if cfg.learns_latent:
        np.testing.assert_allclose(latent, 1.5 * act[:, :8].reshape(512, 4, 2), rtol=1e-6)
        assert float(jnp.max(jnp.abs(latent))) <= 1.5 + 1e-6
        assert 0.7 < float(jnp.std(latent)) < 1.0  # N(0, I) clipped at 1.5
    else:
        assert float(jnp.max(jnp.abs(act[:, :8]))) == 0.0  # unlearned: not a critic input
    expected = _hand_sampler(None, obs, latent)[:, :2]
    if cfg.learns_residual:
        expected = jnp.clip(expected + 0.2 * act[:, 8:].reshape(512, 2, 2), -1.0, 1.0)
        assert float(jnp.min(act[:, 8:])) < -0.9 and float(jnp.max(act[:, 8:])) > 0.9
    np.testing.assert_allclose(chunk, expected, atol=1e-5)


def test_the_untrained_actor_acts_about_like_the_base():
    steering = make_steering(SteeringConfig(mode="rfs"), _hand_sampler, 3, 2, 4, 2)
    networks = make_sac_networks(steering, SACConfig())
    params = networks.init_actor(jax.random.key(0))
    obs_n = jnp.zeros((4096, 3))
    s = networks.sample(params, obs_n, jax.random.key(1))
    latent, residual = s.raw[:, :8], 0.2 * jnp.tanh(s.raw[:, 8:])
    assert abs(float(jnp.mean(latent))) < 0.02 and 0.75 < float(jnp.std(latent)) < 0.95
    assert float(jnp.std(residual)) < 0.05  # beta * tanh(N(0, 0.2^2))
    assert np.all(np.isfinite(np.asarray(s.log_prob)))
    mean = networks.sample(params, obs_n, jax.random.key(1), deterministic=True)
    assert float(jnp.max(jnp.abs(mean.raw))) == 0.0  # at its mean: the base at a0 = 0


# --------------------------------------------------------------------------- the probe

EPISODE_LENGTH = 4
FLOW = FlowConfig(
    horizon=4,
    exec_horizon=2,
    num_steps=5,
    hidden=(128, 128, 128),
    num_updates=2000,
    warmup_steps=50,
    batch_size=256,
)
# 160 iterations of 256 decisions (81,920 env steps), 4 updates of 256 each.
SAC = SACConfig(
    critic="plain",
    num_envs=256,
    unroll_length=1,
    num_updates=4,
    batch_size=256,
    buffer_size=20_000,
    learning_starts=512,
    actor_lr=1e-3,
    critic_lr=1e-3,
    actor_hidden=(64, 64),
    critic_hidden=(128, 128),
    total_env_steps=160 * 256 * 2,
    eval_interval=0,
    eval_episodes=512,
    ckpt_interval=0,
)


@pytest.fixture(scope="module")
def bimodal_base():
    env = BimodalGoalEnv()
    obs, chunks = chunks_from_episodes(env.demo_episodes(jax.random.key(0), 1000), FLOW.horizon)
    params, _ = train_flow(FLOW, obs, chunks, jax.random.key(1), progress=False)
    return env, make_sampler(FLOW, env.observation_size, env.action_size), params


def _sac(bimodal_base, mode, cfg=SAC):
    env, sampler, params = bimodal_base
    _, history = train(
        env,
        EPISODE_LENGTH,
        sampler,
        params,
        SteeringConfig(mode=mode),
        cfg,
        jax.random.key(2),
        horizon=FLOW.horizon,
        exec_horizon=FLOW.exec_horizon,
    )
    return history[-1]


def test_sac_rfs_solves_the_bimodal_probe(bimodal_base):
    result = _sac(bimodal_base, "rfs")
    assert result["eval/success_rate"] >= 0.9, result
    assert result["sac/updates"] == SAC.num_updates


@pytest.mark.parametrize("mode", ["dsrl", "residual"])
def test_sac_dsrl_and_residual_cannot_solve_it(bimodal_base, mode):
    result = _sac(bimodal_base, mode)
    assert result["eval/success_rate"] < 0.6, result


# --------------------------------------------------------------------------- the run layer


def test_cli_steer_with_sac_writes_a_run_that_evaluates(probe_base, tmp_path):
    out = tmp_path / "sac"
    cli.main(
        ["steer", "--task", TASK, "--base", str(probe_base), "--algo", "sac", "--preset", "probe"]
        + ["--out", str(out), "--no-progress", "--sac.critic", "aliased"]
    )
    config = json.loads((out / "config.json").read_text())
    assert config["algo"] == "sac" and "ppo" not in config
    assert SACConfig(**config["sac"]) == dataclasses.replace(PRESETS["probe"].sac, critic="aliased")
    rows = read_metrics(out)
    assert rows[-1]["sac/updates"] == PRESETS["probe"].sac.num_updates
    assert {"sac/alias_loss", "sac/critic_loss", "sac/alpha", "env/success"} <= set(rows[-1])
    result = evaluate_run(out, episodes=16)
    assert result["mode"] == "rfs" and 0.0 <= result["success_rate"] <= 1.0
    with pytest.raises(SystemExit):  # SAC trains one seed per program
        cli.main(["steer", "--base", str(probe_base), "--algo", "sac", "--seeds", "2"])


def test_sac_interrupt_and_resume_equals_an_uninterrupted_run(probe_base, tmp_path):
    """The whole state is checkpointed, the replay buffer included, so a resumed SAC run
    computes what an uninterrupted one does."""
    args = probe_args(probe_base, tmp_path / "full", task=TASK, mode="rfs", algo="sac")
    steer(args)

    def interrupt(it, record):
        if it == 2:
            signal.raise_signal(signal.SIGINT)

    part = dataclasses.replace(args, out=tmp_path / "part")
    with pytest.raises(KeyboardInterrupt):
        steer(part, on_iteration=interrupt)
    with Checkpointer(part.out / "checkpoints") as ckpt:
        assert ckpt.steps() == [1, 2]
    steer(dataclasses.replace(part, resume=True))
    assert_same_rows(read_metrics(part.out), read_metrics(args.out))


def test_the_actor_waits_for_actor_starts_while_the_critics_learn(bimodal_base):
    cfg = dataclasses.replace(
        SAC, total_env_steps=8 * 256 * 2, learning_starts=512, actor_starts=10**9
    )
    env, sampler, params = bimodal_base
    state, history = train(
        env,
        EPISODE_LENGTH,
        sampler,
        params,
        SteeringConfig(mode="rfs"),
        cfg,
        jax.random.key(2),
        horizon=FLOW.horizon,
        exec_horizon=FLOW.exec_horizon,
    )
    last = history[-1]
    assert last["sac/updates"] == cfg.num_updates and last["sac/actor_updates"] == 0.0
    assert last["steering/latent_mean_rms"] == 0.0  # the zero-initialised mean never moved
    assert (
        last["sac/critic_loss"] > 0.0 and history[2]["sac/critic_loss"] != last["sac/critic_loss"]
    )
