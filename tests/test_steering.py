"""Steering head and composition: modes, masks, identity at init, frozen base."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from rfs_jax.flow import FlowConfig, init_flow_params, make_sampler
from rfs_jax.steering import MODES, SteeringConfig, compose, make_steering

OBS, ACT, H, H_EXEC = 3, 2, 4, 2
N = 256  # one batch size everywhere: eager ops compile once per shape
FLOW_CFG = FlowConfig(horizon=H, exec_horizon=H_EXEC, num_steps=3, hidden=(32, 32))


@pytest.fixture(scope="module")
def base():
    """A random (untrained) flow base: the identities below hold for any params."""
    params = init_flow_params(FLOW_CFG, OBS, ACT, jax.random.key(0))
    return make_sampler(FLOW_CFG, OBS, ACT), params


def toy_sampler(params, obs, a0):
    """A linear stand-in with a closed form: a = w * a0 + obs[:, :1]."""
    return params["w"] * a0 + obs[:, None, :1]


def _sample(steering):
    return steering.sample


def _obs(n=N, seed=1):
    return jax.random.normal(jax.random.key(seed), (n, OBS))


def test_bad_mode_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown steering mode 'rsf'.*rfs.*dsrl"):
        SteeringConfig(mode="rsf")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"residual_scale": 0.0},
        {"latent_bound": -1.0},
        {"init_residual_std": 0.0},
        {"init_latent_std": 0.0},
        {"init_latent_std": 3.0},  # above exp(max_log_std = 1)
    ],
)
def test_bad_numbers_are_rejected(kwargs):
    with pytest.raises(ValueError):
        SteeringConfig(**kwargs)


def test_sizes_and_init(base):
    sampler, _ = base
    steering = make_steering(SteeringConfig(init_residual_std=0.3), sampler, OBS, ACT, H, H_EXEC)
    assert (steering.latent_size, steering.residual_size, steering.raw_size) == (8, 4, 12)
    params = steering.init(jax.random.key(0))
    obs = _obs()
    mean, log_std = steering.distribution(params, obs, jnp.zeros((N, H_EXEC, ACT)))
    np.testing.assert_array_equal(mean, 0.0)
    np.testing.assert_allclose(log_std[:8], 0.0)
    np.testing.assert_allclose(log_std[8:], np.log(0.3), rtol=1e-6)
    with pytest.raises(ValueError, match="exec_horizon"):
        make_steering(SteeringConfig(), sampler, OBS, ACT, 2, 3)


def test_init_latent_std_narrows_the_untrained_latent(base):
    """``init_latent_std=0.5``: the untrained latent is N(0, 0.25 I) (sample std 0.5 about the
    base's), the residual keeps its own std, and that head is pi_0 of the KL (KL 0 at init)."""
    sampler, base_params = base
    cfg = SteeringConfig(init_latent_std=0.5, init_residual_std=0.3)
    steering = make_steering(cfg, sampler, OBS, ACT, H, H_EXEC)
    params = steering.init(jax.random.key(0))
    mean, log_std = steering.distribution(params, _obs(), jnp.zeros((N, H_EXEC, ACT)))
    np.testing.assert_allclose(log_std[:8], np.log(0.5), rtol=1e-6)
    np.testing.assert_allclose(log_std[8:], np.log(0.3), rtol=1e-6)
    np.testing.assert_allclose(steering.kl_to_base(mean, log_std), 0.0, atol=1e-6)
    s = steering.sample(params, base_params, _obs(), _obs(), jax.random.key(3))
    a0 = np.asarray(s.raw)[:, :8]
    assert 0.45 < a0.std() < 0.55, a0.std()


@pytest.mark.parametrize("mode", MODES)
def test_compose_per_mode(mode):
    cfg = SteeringConfig(mode=mode, residual_scale=0.2, latent_bound=2.0)
    params = {"w": 0.3}
    obs = _obs()
    raw = 3.0 * jax.random.normal(jax.random.key(2), (N, H * ACT + H_EXEC * ACT))
    chunk, base_chunk = compose(cfg, toy_sampler, params, obs, raw, H, H_EXEC)
    a0 = np.asarray(raw[:, : H * ACT]).reshape(N, H, ACT)
    if cfg.learns_latent:
        a0 = np.clip(a0, -2.0, 2.0)
    expected_base = np.asarray(toy_sampler(params, obs, a0))[:, :H_EXEC]
    expected = expected_base
    if cfg.learns_residual:
        ar = np.asarray(raw[:, H * ACT :]).reshape(N, H_EXEC, ACT)
        expected = np.clip(expected_base + 0.2 * np.tanh(ar), -1.0, 1.0)
    np.testing.assert_allclose(base_chunk, expected_base, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(chunk, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["rfs", "dsrl"])
def test_untrained_policy_reproduces_the_base(base, mode):
    """Zero-mean latent = the given noise and zero residual give exactly Des(s, a0)."""
    sampler, base_params = base
    steering = make_steering(SteeringConfig(mode=mode), sampler, OBS, ACT, H, H_EXEC)
    params = steering.init(jax.random.key(3))
    obs = _obs()
    a0 = jnp.clip(jax.random.normal(jax.random.key(4), (N, H, ACT)), -2.0, 2.0)
    expected = sampler(base_params, obs, a0)[:, :H_EXEC]
    mean, log_std = steering.distribution(params, obs, expected)
    raw = jnp.concatenate([mean[:, :8] + a0.reshape(N, -1), mean[:, 8:]], axis=-1)
    chunk, _ = steering.compose(base_params, obs, raw)
    np.testing.assert_allclose(chunk, expected, atol=1e-6)
    # The policy's own samples: latent ~ N(0, I) fed to the sampler (clipped at the bound).
    sample = _sample(steering)(params, base_params, obs, obs, jax.random.key(5))
    latent = jnp.clip(sample.raw[:, :8].reshape(N, H, ACT), -2.5, 2.5)
    np.testing.assert_allclose(
        sample.base_chunk, sampler(base_params, obs, latent)[:, :H_EXEC], atol=1e-5
    )
    big = _sample(steering)(params, base_params, obs, obs, jax.random.key(6))
    assert abs(float(jnp.mean(big.raw[:, :8]))) < 0.1
    assert abs(float(jnp.std(big.raw[:, :8])) - 1.0) < 0.1
    # Deterministic: latent = mean = 0, no residual.
    det = _sample(steering)(params, base_params, obs, obs, jax.random.key(5), deterministic=True)
    zero = sampler(base_params, obs, jnp.zeros((N, H, ACT)))[:, :H_EXEC]
    np.testing.assert_allclose(det.chunk, zero, atol=1e-6)


@pytest.mark.parametrize("mode", ["residual", "base"])
def test_unlearned_latent_is_fresh_gaussian_noise(base, mode):
    sampler, base_params = base
    steering = make_steering(SteeringConfig(mode=mode), sampler, OBS, ACT, H, H_EXEC)
    params = steering.init(jax.random.key(3))
    obs = _obs()
    det = [
        _sample(steering)(params, base_params, obs, obs, jax.random.key(k), deterministic=True)
        for k in (7, 8)
    ]
    latent = det[0].raw[:, :8]
    assert abs(float(jnp.std(latent)) - 1.0) < 0.1  # still N(0, I), even "deterministic"
    assert not np.allclose(det[0].raw[:, :8], det[1].raw[:, :8])
    np.testing.assert_array_equal(det[0].raw[:, 8:], 0.0)  # deterministic residual = mean = 0
    np.testing.assert_allclose(
        det[0].base_chunk,
        sampler(base_params, obs, latent.reshape(-1, H, ACT))[:, :H_EXEC],
        atol=1e-5,
    )
    if mode == "base":
        np.testing.assert_array_equal(det[0].chunk, det[0].base_chunk)


@pytest.mark.parametrize("sees_base", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_log_prob_and_entropy_cover_only_the_learned_dims(base, mode, sees_base):
    sampler, base_params = base
    cfg = SteeringConfig(mode=mode, residual_sees_base_action=sees_base)
    steering = make_steering(cfg, sampler, OBS, ACT, H, H_EXEC)
    params = steering.init(jax.random.key(3))
    # Move the means away from 0 so that a wrong mean would show.
    params = jax.tree.map(lambda p: p + 0.05, params)
    obs = _obs()
    sample = _sample(steering)(params, base_params, obs, obs, jax.random.key(9))
    log_prob, entropy = steering.log_prob_entropy(params, obs, sample.raw, sample.base_chunk)
    np.testing.assert_allclose(log_prob, sample.log_prob, rtol=1e-5, atol=1e-5)

    mean, log_std = steering.distribution(params, obs, sample.base_chunk)
    std = jnp.exp(log_std)
    per_dim = norm.logpdf(sample.raw, mean, std)
    per_dim_entropy = jnp.broadcast_to(0.5 * jnp.log(2 * jnp.pi * jnp.e) + log_std, mean.shape)
    mask = np.r_[np.full(8, cfg.learns_latent), np.full(4, cfg.learns_residual)].astype(float)
    np.testing.assert_allclose(log_prob, per_dim @ mask, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(entropy, per_dim_entropy @ mask, rtol=1e-5, atol=1e-5)

    # Changing an unused part of raw leaves the log-prob unchanged; a used part changes it.
    shifted_latent = sample.raw.at[:, :8].add(0.7)
    shifted_residual = sample.raw.at[:, 8:].add(0.7)
    lp_latent, _ = steering.log_prob_entropy(params, obs, shifted_latent, sample.base_chunk)
    lp_residual, _ = steering.log_prob_entropy(params, obs, shifted_residual, sample.base_chunk)
    assert np.allclose(lp_latent, log_prob) != cfg.learns_latent
    assert np.allclose(lp_residual, log_prob) != cfg.learns_residual


def test_residual_sees_base_action(base):
    sampler, base_params = base
    cfg = SteeringConfig(residual_sees_base_action=True)
    steering = make_steering(cfg, sampler, OBS, ACT, H, H_EXEC)
    params = steering.init(jax.random.key(3))
    params = jax.tree.map(lambda p: p + 0.1, params)  # non-zero output layers
    obs = _obs()
    base_a = jnp.zeros((N, H_EXEC, ACT))
    base_b = jnp.ones((N, H_EXEC, ACT))
    mean_a, _ = steering.distribution(params, obs, base_a)
    mean_b, _ = steering.distribution(params, obs, base_b)
    np.testing.assert_allclose(mean_a[:, :8], mean_b[:, :8])  # latent: obs only
    assert not np.allclose(mean_a[:, 8:], mean_b[:, 8:])  # residual: sees the base action


@pytest.mark.parametrize("sees_base", [False, True])
def test_no_gradient_reaches_the_base_params(base, sees_base):
    sampler, base_params = base
    cfg = SteeringConfig(residual_sees_base_action=sees_base)
    steering = make_steering(cfg, sampler, OBS, ACT, H, H_EXEC)
    params = steering.init(jax.random.key(3))
    obs = _obs()

    def through_chunk(base_params, params):
        sample = _sample(steering)(params, base_params, obs, obs, jax.random.key(1))
        lp, _ = steering.log_prob_entropy(params, obs, sample.raw, sample.base_chunk)
        return jnp.sum(sample.chunk**2) + jnp.sum(lp)

    g_base, g_steer = jax.jit(jax.grad(through_chunk, argnums=(0, 1)))(base_params, params)
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(g_base))
    # ...while the steering params do get a gradient through the same function.
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(g_steer))


@pytest.mark.parametrize("mode", ["rfs", "dsrl", "residual"])
def test_drift_metrics_by_hand(mode):
    """Latent means [1, -1] and [3, 1] over two states: rms sqrt(3), offset [2, 0] -> rms sqrt(2);
    residual means all 0.5 -> rms and offset 0.5; stds exp(log_std) averaged per part."""
    steering = make_steering(SteeringConfig(mode=mode), toy_sampler, OBS, 1, 2, 1)
    mean = jnp.array([[1.0, -1.0, 0.5], [3.0, 1.0, 0.5]])
    log_std = jnp.log(jnp.array([1.0, 3.0, 0.2]))
    metrics = {k: float(v) for k, v in steering.drift_metrics(mean, log_std).items()}
    expected = {}
    if mode in ("rfs", "dsrl"):
        expected |= {
            "steering/latent_mean_rms": np.sqrt(3.0),
            "steering/latent_mean_offset_rms": np.sqrt(2.0),
            "steering/latent_std": 2.0,
        }
    if mode in ("rfs", "residual"):
        expected |= {
            "steering/residual_mean_rms": 0.5,
            "steering/residual_mean_offset_rms": 0.5,
            "steering/residual_std": 0.2,
        }
    assert metrics.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_allclose(metrics[key], value, rtol=1e-6, err_msg=key)


@pytest.mark.parametrize("mode", ["rfs", "dsrl", "residual"])
def test_kl_to_base_by_hand(mode):
    """KL to the untrained head (latent N(0, 1), residual N(0, 0.2^2)), per learned dim:
    latent mean 1, std 1 -> 0.5; latent mean 0, std 2 -> (4 - 1) / 2 - log 2; residual mean 0.2,
    std 0.2 -> 0.5. The untrained head itself is at KL 0."""
    cfg = SteeringConfig(mode=mode, init_residual_std=0.2)
    steering = make_steering(cfg, toy_sampler, OBS, 1, 2, 1)
    mean = jnp.array([[1.0, 0.0, 0.2]])
    log_std = jnp.log(jnp.array([1.0, 2.0, 0.2]))
    expected = 0.0
    if mode in ("rfs", "dsrl"):
        expected += 0.5 + 1.5 - np.log(2.0)
    if mode in ("rfs", "residual"):
        expected += 0.5
    np.testing.assert_allclose(steering.kl_to_base(mean, log_std), [expected], rtol=1e-6)
    init = jnp.log(jnp.array([1.0, 1.0, 0.2]))
    np.testing.assert_allclose(steering.kl_to_base(jnp.zeros((1, 3)), init), [0.0], atol=1e-7)
