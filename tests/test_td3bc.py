"""Offline TD3+BC over the steering action: losses by hand, delayed updates, critic inputs,
and a toy dataset it must learn from."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rfs_jax.agents.td3bc import (
    TD3BCConfig,
    check_dataset,
    fit,
    init_state,
    losses,
    make_td3bc_networks,
    make_update,
)
from rfs_jax.steering import SteeringConfig, make_steering

OBS, ACT, H, H_EXEC = 3, 2, 4, 2
R = H_EXEC * ACT
TARGET = 0.1  # the executed action the toy reward pays for
NUM_UPDATES = 4000


def toy_sampler(params, obs, a0):
    """A linear stand-in for the frozen flow: ``Des(s, a0) = w * a0 + s[0]``."""
    return params["w"] * a0 + obs[:, None, :1]


BASE = {"w": jnp.float32(0.1)}


def _networks(**cfg):
    steering = make_steering(SteeringConfig(mode="rfs"), toy_sampler, OBS, ACT, H, H_EXEC)
    small = {"actor_hidden": (32, 32), "critic_hidden": (32, 32), "batch_size": 64}
    return make_td3bc_networks(steering, TD3BCConfig(**{**small, **cfg}))


def test_td_target_by_hand():
    reward = jnp.array([1.0, 2.0])
    term = jnp.array([0.0, 1.0])
    next_q = jnp.array([[3.0, 5.0], [4.0, 1.0]])  # min over the twins: 3, 1
    np.testing.assert_allclose(
        losses.td_target(reward, term, next_q, 0.9), [1.0 + 0.9 * 3.0, 2.0], rtol=1e-6
    )


def test_smoothed_action_is_clipped():
    act = jnp.array([[0.0, 0.95, -0.95]] * 1000)
    out = np.asarray(losses.smoothed_action(act, jax.random.key(0), noise=1.0, noise_clip=0.3))
    assert np.all(np.abs(out - np.asarray(act)) <= 0.3 + 1e-6)
    assert np.all(np.abs(out) < 1.0)
    assert out[:, 1].max() > 0.999  # the noise reached the range's edge and was clipped there
    assert np.std(out[:, 0]) > 0.1


def test_actor_loss_by_hand():
    q = jnp.array([2.0, -4.0])  # mean|Q| = 3 -> lambda = 2.5 / 3
    res = jnp.array([[0.1, 0.0], [0.0, 0.0]])
    label = jnp.array([[0.0, 0.0], [0.0, 0.2]])  # squared errors summed per row: 0.01, 0.04
    loss, lam = losses.actor_loss(q, res, label, alpha=2.5, bc_coef=2.0)
    np.testing.assert_allclose(lam, 2.5 / 3.0, rtol=1e-6)
    np.testing.assert_allclose(loss, -(2.5 / 3.0) * (-1.0) + 2.0 * 0.025, rtol=1e-6)
    # lambda is a constant: no gradient flows through the normalisation.
    g = jax.grad(lambda q: losses.actor_loss(q, res, label, 2.5, 0.0)[0])(q)
    np.testing.assert_allclose(g, [-2.5 / 3.0 / 2.0] * 2, rtol=1e-6)


def test_critic_action_kinds():
    base, res = jnp.array([[1.0, 2.0]]), jnp.array([[0.1, -0.2]])
    np.testing.assert_allclose(losses.critic_action("composed", base, res), [[1.1, 1.8]])
    np.testing.assert_allclose(losses.critic_action("residual", base, res), [[0.1, -0.2]])
    np.testing.assert_allclose(losses.critic_action("concat", base, res), [[0.1, -0.2, 1.0, 2.0]])
    with pytest.raises(ValueError, match="unknown critic"):
        losses.critic_action("both", base, res)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="unknown critic"):
        TD3BCConfig(critic="action")
    with pytest.raises(ValueError, match="policy_delay"):
        TD3BCConfig(policy_delay=0)


def _dataset(n=1024, seed=0):
    """One-step episodes of the deployed base at ``a0 = 0`` (``a_b = Des(s, 0) = s[0]``) with
    recorded residuals ``a_r ~ U(-0.2, 0.2)`` per dim; the reward ``-|a_exec - TARGET|^2``
    pays for executing TARGET whatever the base proposes (a fixed goal), so the best steering
    action depends on the state: offset ``TARGET - s[0]``."""
    rng = np.random.default_rng(seed)
    obs = (0.3 * rng.normal(size=(n, OBS))).astype(np.float32)  # |Des| < 1: no clip
    base = np.repeat(obs[:, :1], R, axis=1)
    residual = rng.uniform(-0.2, 0.2, size=(n, R))
    return {
        "obs": obs,
        "next_obs": (0.3 * rng.normal(size=(n, OBS))).astype(np.float32),
        "base": base.astype(np.float32),
        "residual": residual.astype(np.float32),
        "reward": _reward(base + residual).astype(np.float32),
        "termination": np.ones(n, np.float32),
        "weight": np.ones(n, np.float32),
    }


def _reward(executed):
    return -np.sum(np.square(np.asarray(executed) - TARGET), axis=-1)


def test_untrained_actor_is_the_base_at_its_mean():
    nets = _networks()
    state = init_state(nets, _dataset(), jax.random.key(0))
    obs = jnp.asarray(_dataset()["obs"][:8])
    act = nets.actor.apply(state.actor, nets.normalize(state.obs_stats, obs))
    base, res = nets.executed(BASE, obs, act)
    np.testing.assert_allclose(res, 0.0, atol=1e-6)
    np.testing.assert_allclose(base, np.repeat(np.asarray(obs[:, :1]), R, axis=1), rtol=1e-6)


def test_actor_and_targets_move_every_policy_delay_steps():
    nets = _networks(policy_delay=2, tau=0.5)
    data = {k: jnp.asarray(v) for k, v in _dataset(n=64).items()}
    state = init_state(nets, data, jax.random.key(0))
    update = jax.jit(make_update(nets, BASE))
    s1, m1 = update(state, data)
    leaves = lambda p: jax.tree.leaves(p)  # noqa: E731
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b), strict=True))  # noqa: E731
    assert same(s1.actor, state.actor) and same(s1.target_critic, state.target_critic)
    assert not same(s1.critic, state.critic)
    assert np.isnan(float(m1["td3bc/actor_loss"]))
    s2, m2 = update(s1, data)
    assert not same(s2.actor, s1.actor)
    assert np.isfinite(float(m2["td3bc/actor_loss"]))
    # Polyak at tau 0.5: the target critic is halfway between the old target and the critic.
    for t, old, new in zip(
        leaves(s2.target_critic), leaves(s1.target_critic), leaves(s2.critic), strict=True
    ):
        np.testing.assert_allclose(t, 0.5 * np.asarray(old) + 0.5 * np.asarray(new), rtol=1e-5)


def test_check_dataset_names_the_bad_field():
    nets = _networks()
    data = _dataset()
    data["residual"] = data["residual"][:, :3]
    with pytest.raises(ValueError, match=r"'residual' has shape \(\d+, 3\), expected \(\d+, 4\)"):
        check_dataset(data, nets)
    del data["weight"]
    with pytest.raises(ValueError, match="lacks"):
        check_dataset(data, nets)


def test_fit_improves_on_the_data_and_the_base():
    """The actor starts as the base at its mean (reward about -0.40); the data's own actions
    average about -0.45. After the updates the composed-action critic's actor must do much
    better than both (half the base's squared error or less)."""
    nets = _networks(critic="composed", num_updates=NUM_UPDATES, log_interval=NUM_UPDATES // 2)
    data = _dataset()
    state, history = fit(nets, BASE, data, jax.random.key(1))
    assert len(history) == 2 and history[-1]["updates"] == NUM_UPDATES
    obs = jnp.asarray(_dataset(seed=5)["obs"][:256])
    act = nets.actor.apply(state.actor, nets.normalize(state.obs_stats, obs))
    base, res = nets.executed(BASE, obs, act)
    untrained = float(np.mean(_reward(np.repeat(np.asarray(obs[:, :1]), R, axis=1))))
    trained = float(np.mean(_reward(base + res)))
    assert trained > 0.5 * untrained, (trained, untrained)
    assert untrained > float(np.mean(data["reward"]))
