"""Tests of the flow-matching base policy: oracle maths, a bimodal toy, checkpoints, freezing."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rfs_jax.flow import (
    FlowCheckpointError,
    FlowConfig,
    FlowParams,
    chunks_from_episodes,
    init_flow_params,
    load_flow,
    make_sampler,
    plot_loss,
    save_flow,
    train_flow,
)
from rfs_jax.flow.policy import euler_integrate, velocity_matching_loss

TINY = FlowConfig(
    horizon=2,
    exec_horizon=1,
    num_steps=4,
    hidden=(32, 32),
    time_embed_dim=8,
    num_updates=20,
    warmup_steps=5,
    batch_size=16,
)


def _identity_params(net, obs_size, action_size):
    return FlowParams(
        net=net,
        obs_mean=jnp.zeros(obs_size),
        obs_std=jnp.ones(obs_size),
        act_mean=jnp.zeros(action_size),
        act_std=jnp.ones(action_size),
    )


# ---------------------------------------------------------------- oracles for the sampler


@pytest.mark.parametrize("num_steps", [1, 3, 5])
def test_euler_constant_field_moves_by_c(num_steps):
    a0 = jax.random.normal(jax.random.key(0), (3, 2, 4))
    c = jnp.linspace(-0.5, 0.5, 4)
    out = euler_integrate(lambda a, t, o: jnp.broadcast_to(c, a.shape), a0, None, num_steps)
    np.testing.assert_allclose(out, a0 + c, atol=1e-6)


@pytest.mark.parametrize("num_steps", [1, 2, 5, 10])
def test_euler_linear_field_is_compound_growth(num_steps):
    a0 = jax.random.normal(jax.random.key(1), (3, 2, 4))
    out = euler_integrate(lambda a, t, o: a, a0, None, num_steps)
    np.testing.assert_allclose(out, a0 * (1 + 1 / num_steps) ** num_steps, rtol=1e-5)


def test_euler_sees_times_0_to_1_minus_dt():
    # v = t integrates under explicit Euler to dt * sum_k k dt = (K - 1) / (2K).
    k = 4
    a0 = jnp.zeros((2, 1, 1))
    out = euler_integrate(lambda a, t, o: jnp.broadcast_to(t[:, None, None], a.shape), a0, None, k)
    np.testing.assert_allclose(out, (k - 1) / (2 * k), atol=1e-6)


def test_sampler_straight_field_hits_target_and_unnormalises():
    """v = (target - x) / (1 - t) is the exact flow of a point mass: Euler lands on it exactly."""
    cfg = FlowConfig(horizon=2, exec_horizon=1, num_steps=5)
    obs_size, action_size = 3, 2
    target_n = jnp.array([0.5, -1.0])

    def velocity_apply(net, a_t, t, obs_n):
        return (net["target"] - a_t) / (1.0 - t[:, None, None])

    sample = jax.jit(make_sampler(cfg, obs_size, action_size, velocity_apply))
    params = _identity_params({"target": target_n}, obs_size, action_size).replace(
        act_mean=jnp.array([0.1, 0.2]), act_std=jnp.array([0.5, 2.0])
    )
    a0 = jax.random.normal(jax.random.key(2), (7, 2, 2))
    out = sample(params, jnp.ones((7, 3)), a0)
    # 0.5 * 0.5 + 0.1 = 0.35; -1 * 2 + 0.2 = -1.8 -> clipped to -1.
    expected = jnp.broadcast_to(jnp.array([0.35, -1.0]), (7, 2, 2))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_sampler_normalises_obs():
    cfg = FlowConfig(horizon=1, exec_horizon=1, num_steps=2)

    def velocity_apply(net, a_t, t, obs_n):  # constant field equal to the normalised obs
        return jnp.broadcast_to(obs_n[:, None, :], a_t.shape)

    sample = make_sampler(cfg, 2, 2, velocity_apply)
    params = _identity_params({}, 2, 2).replace(
        obs_mean=jnp.array([1.0, 2.0]), obs_std=jnp.array([2.0, 4.0])
    )
    out = sample(params, jnp.array([[2.0, 0.0]]), jnp.zeros((1, 1, 2)))
    np.testing.assert_allclose(out, [[[0.5, -0.5]]], atol=1e-6)


def test_sampler_rejects_wrong_shapes():
    sample = make_sampler(TINY, 3, 2)
    params = init_flow_params(TINY, 3, 2, jax.random.key(0))
    with pytest.raises(ValueError, match="a0"):
        sample(params, jnp.zeros((4, 3)), jnp.zeros((4, TINY.horizon + 1, 2)))


# ---------------------------------------------------------------- oracle for the loss


def test_loss_zero_for_true_velocity_positive_otherwise():
    target = jnp.array([[0.3, -0.7], [1.2, 0.4]])  # one point mass, chunk [H=2, A=2]
    act_n = jnp.broadcast_to(target, (512, 2, 2))
    obs_n = jnp.zeros((512, 1))

    def true_v(a_t, t, o):  # along a_t = (1-t) a0 + t a this equals a - a0
        return (target - a_t) / (1.0 - t[:, None, None])

    loss, metrics = velocity_matching_loss(true_v, obs_n, act_n, jax.random.key(0))
    assert float(loss) < 1e-6
    assert set(metrics) >= {"flow/loss", "flow/v_rms", "flow/target_rms"}
    zero_loss, _ = velocity_matching_loss(lambda a, t, o: 0 * a, obs_n, act_n, jax.random.key(0))
    # E||a - a0||^2 per entry = mean(a^2) + 1.
    np.testing.assert_allclose(zero_loss, float(jnp.mean(target**2)) + 1.0, rtol=0.1)
    off_loss, _ = velocity_matching_loss(
        lambda a, t, o: true_v(a, t, o) + 0.1, obs_n, act_n, jax.random.key(0)
    )
    np.testing.assert_allclose(off_loss, 0.01, rtol=1e-3)


# ---------------------------------------------------------------- learning: bimodal toy


def _bimodal_data(n, key):
    key_mode, key_noise = jax.random.split(key)
    sign = jnp.where(jax.random.bernoulli(key_mode, 0.5, (n, 1, 1)), 1.0, -1.0)
    acts = 0.6 * sign + 0.05 * jax.random.normal(key_noise, (n, 1, 2))
    obs = jnp.zeros((n, 1))  # constant obs: a single state with two equally good actions
    return np.asarray(obs), np.asarray(acts)


def test_bimodal_toy_keeps_both_modes(tmp_path):
    cfg = FlowConfig(
        horizon=1,
        exec_horizon=1,
        num_steps=8,
        hidden=(64, 64),
        time_embed_dim=16,
        num_updates=400,
        warmup_steps=20,
        batch_size=128,
        lr=3e-3,
    )
    obs, acts = _bimodal_data(2048, jax.random.key(0))
    params, history = train_flow(cfg, obs, acts, jax.random.key(1), progress=False, log_every=100)
    assert history["loss"].shape == (cfg.num_updates,)
    assert history["wall_time_s"].shape == (4,)
    assert history["loss"][-50:].mean() < 0.6 * history["loss"][:20].mean()
    assert plot_loss(history, tmp_path / "loss.png").stat().st_size > 1000

    sample = jax.jit(make_sampler(cfg, 1, 2))
    a0 = jax.random.normal(jax.random.key(2), (1000, 1, 2))
    out = np.asarray(sample(params, jnp.zeros((1000, 1)), a0))[:, 0]
    plus = np.mean(np.all(out > 0.3, axis=-1))
    minus = np.mean(np.all(out < -0.3, axis=-1))
    assert plus >= 0.3 and minus >= 0.3, (plus, minus)
    assert plus + minus >= 0.8, "most samples should land on a mode, not between them"


# ---------------------------------------------------------------- training API


def test_chunks_from_episodes_pads_with_last_action():
    eps = [
        (np.arange(3)[:, None] * 1.0, np.arange(3)[:, None] * 10.0),
        (np.zeros((1, 1)), np.full((1, 1), 7.0)),
    ]
    obs, chunks = chunks_from_episodes(eps, horizon=3)
    assert obs.shape == (4, 1) and chunks.shape == (4, 3, 1)
    np.testing.assert_array_equal(
        chunks[..., 0], [[0, 10, 20], [10, 20, 20], [20, 20, 20], [7, 7, 7]]
    )
    with pytest.raises(ValueError, match="episode 0"):
        chunks_from_episodes([(np.zeros((3, 1)), np.zeros((2, 1)))], horizon=2)


def test_train_flow_rejects_bad_input():
    obs = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match="N"):
        train_flow(TINY, obs, np.zeros((9, TINY.horizon, 2)), progress=False)
    with pytest.raises(ValueError, match="horizon"):
        train_flow(TINY, obs, np.zeros((10, TINY.horizon + 1, 2)), progress=False)
    with pytest.raises(ValueError, match="chunks"):
        train_flow(TINY, obs, np.zeros((10, 2)), progress=False)
    bad = np.zeros((10, TINY.horizon, 2))
    bad[3, 0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_flow(TINY, obs, bad, progress=False)


def test_train_flow_non_finite_loss_is_reported():
    cfg = dataclasses.replace(TINY, lr=float("nan"))
    obs, chunks = np.zeros((10, 3)), np.zeros((10, TINY.horizon, 2))
    with pytest.raises(FloatingPointError, match="non-finite"):
        train_flow(cfg, obs, chunks, progress=False, log_every=10)


def test_config_validates_exec_horizon():
    with pytest.raises(ValueError, match="exec_horizon=5.*horizon=4"):
        FlowConfig(horizon=4, exec_horizon=5)


# ---------------------------------------------------------------- frozen, checkpointed


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(64, 3)).astype(np.float32)
    obs[:, 2] = 1.0  # a constant dim: exercises the std floor
    chunks = np.clip(rng.normal(size=(64, TINY.horizon, 2)), -1, 1).astype(np.float32)
    params, _ = train_flow(TINY, obs, chunks, jax.random.key(3), progress=True, log_every=8)
    return params, obs


def test_no_gradient_reaches_frozen_params(trained):
    params, obs = trained
    sample = make_sampler(TINY, 3, 2)
    a0 = jax.random.normal(jax.random.key(4), (64, TINY.horizon, 2))

    def objective(p, a0):
        return jnp.sum(sample(p, jnp.asarray(obs), a0) ** 2)

    grads = jax.grad(objective)(params, a0)
    for leaf in jax.tree.leaves(grads):
        np.testing.assert_array_equal(leaf, 0.0)
    # ...while the steering input a0 still gets a gradient (DSRL-style pathwise use stays open).
    assert float(jnp.abs(jax.grad(objective, argnums=1)(params, a0)).sum()) > 0


def test_checkpoint_round_trip_gives_identical_actions(trained, tmp_path):
    params, obs = trained
    meta = {"task": "toy", "final_loss": 0.5}
    save_flow(tmp_path / "ckpt", TINY, params, meta)
    cfg2, params2, meta2 = load_flow(tmp_path / "ckpt")
    assert cfg2 == TINY and meta2 == meta
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["obs_size"] == 3
    a0 = jax.random.normal(jax.random.key(5), (64, TINY.horizon, 2))
    out1 = jax.jit(make_sampler(TINY, 3, 2))(params, jnp.asarray(obs), a0)
    out2 = jax.jit(make_sampler(cfg2, 3, 2))(params2, jnp.asarray(obs), a0)
    np.testing.assert_array_equal(out1, out2)
    # Saving again over the same directory works (force overwrite).
    save_flow(tmp_path / "ckpt", TINY, params, meta)


def test_missing_or_corrupt_checkpoint_gives_clear_error(trained, tmp_path):
    params, _ = trained
    with pytest.raises(FileNotFoundError, match="rfs base"):
        load_flow(tmp_path / "nowhere")

    save_flow(tmp_path / "ckpt", TINY, params, {})
    for f in (tmp_path / "ckpt" / "params").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with pytest.raises(FlowCheckpointError, match=r"ckpt.*rfs base"):
        load_flow(tmp_path / "ckpt")

    save_flow(tmp_path / "ckpt2", TINY, params, {})
    (tmp_path / "ckpt2" / "config.json").write_text("{not json")
    with pytest.raises(FlowCheckpointError, match="config.json"):
        load_flow(tmp_path / "ckpt2")

    # A config that disagrees with the stored arrays is caught, not silently reshaped.
    save_flow(tmp_path / "ckpt3", TINY, params, {})
    cfg_path = tmp_path / "ckpt3" / "config.json"
    config = json.loads(cfg_path.read_text())
    config["flow"]["hidden"] = [16, 16]
    cfg_path.write_text(json.dumps(config))
    with pytest.raises(FlowCheckpointError, match="rfs base"):
        load_flow(tmp_path / "ckpt3")
