"""Simulated corrections: the labels a_b + a_r == a_exec, the takeover rule, the decision-level
dataset TD3+BC reads, and the HDF5 round trip (grasp, 4 envs, 20-step episodes, one compile)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import envs
from envs.experts import make_expert
from experiments.base import base_policy_fn
from experiments.common import parse_overrides
from experiments.offline import CAREFUL
from rfs_jax.agents.td3bc import TD3BCConfig, check_dataset, make_networks
from rfs_jax.corrections import CorrectorConfig, collect_corrections, decision_dataset
from rfs_jax.demos import load_demos, save_demos
from rfs_jax.flow import FlowConfig, make_sampler
from rfs_jax.flow.policy import init_flow_params
from rfs_jax.steering import SteeringConfig

LENGTH, NUM_ENVS, EARLIEST = 20, 4, 4
FLOW = FlowConfig(horizon=4, exec_horizon=2, num_steps=2, hidden=(32, 32))


@pytest.fixture(scope="module")
def setup():
    env = envs.make("grasp", episode_length=LENGTH)
    params = init_flow_params(FLOW, env.observation_size, env.action_size, jax.random.key(0))
    policy = base_policy_fn(FLOW, env, params, deterministic=True)
    expert = make_expert("grasp", env, **parse_overrides(CAREFUL))
    # A rise of 100 never happens: every episode stalls and is taken over at step EARLIEST.
    cfg = CorrectorConfig(earliest=EARLIEST, window=3, min_rise=100.0)
    demos, summary = collect_corrections(
        "grasp",
        env,
        policy,
        params,
        expert,
        NUM_ENVS,
        jax.random.key(1),
        cfg=cfg,
        num_envs=NUM_ENVS,
    )
    return env, demos, summary


def test_labels_compose_exactly_and_the_corrector_takes_over_on_the_rule(setup):
    _, demos, summary = setup
    assert len(demos.episodes) == NUM_ENVS and summary["corrected_fraction"] == 1.0
    for ep in demos.episodes:
        n = len(ep.actions)
        base = ep.extras["base_actions"][:n]
        residual = ep.extras["residual_actions"]
        np.testing.assert_array_equal(base + residual, ep.actions)
        corrected = ep.extras["corrected"] > 0
        np.testing.assert_array_equal(corrected, np.arange(n) >= EARLIEST)
        assert not residual[~corrected].any()
        # The expert drives somewhere else than the untrained base.
        assert np.abs(residual[corrected]).max() > 0.1


def test_decision_dataset_feeds_td3bc(setup):
    env, demos, _ = setup
    data = decision_dataset(demos, FLOW.exec_horizon)
    per_episode = [int(np.ceil(len(e.actions) / FLOW.exec_horizon)) for e in demos.episodes]
    assert len(data["obs"]) == sum(per_episode)
    sampler = make_sampler(FLOW, env.observation_size, env.action_size)
    networks = make_networks(
        env,
        sampler,
        SteeringConfig(),
        TD3BCConfig(),
        horizon=FLOW.horizon,
        exec_horizon=FLOW.exec_horizon,
    )
    check_dataset(data, networks)
    first = demos.episodes[0]
    d = per_episode[0]
    np.testing.assert_array_equal(data["obs"][:d], first.obs[:: FLOW.exec_horizon])
    np.testing.assert_array_equal(data["next_obs"][: d - 1], data["obs"][1:d])
    np.testing.assert_array_equal(data["next_obs"][d - 1], first.extras["final_obs"])
    np.testing.assert_allclose(data["reward"][:d].sum(), first.rewards.sum(), rtol=1e-5)
    # The first decisions are the policy's own (no residual), the corrected ones are not.
    assert not data["residual"][: EARLIEST // FLOW.exec_horizon].any()
    assert data["residual"][d - 1].any()
    # A time-out is not a termination; a success (the episode ended early) is.
    ended_early = len(first.actions) < LENGTH
    assert (
        data["termination"][d - 1] == float(ended_early) and not data["termination"][: d - 1].any()
    )


def test_corrections_file_round_trip(setup, tmp_path):
    env, demos, _ = setup
    path = save_demos(tmp_path / "corrections.hdf5", demos)
    back = load_demos(path, env, "grasp")
    for a, b in zip(demos.episodes, back.episodes, strict=True):
        assert set(a.extras) == set(b.extras)
        for k in a.extras:
            np.testing.assert_array_equal(a.extras[k], b.extras[k])
    np.testing.assert_array_equal(
        decision_dataset(back, FLOW.exec_horizon)["residual"],
        decision_dataset(demos, FLOW.exec_horizon)["residual"],
    )


def test_bad_corrector_settings_are_refused():
    with pytest.raises(ValueError, match="window"):
        CorrectorConfig(window=0)
    with pytest.raises(ValueError, match="drop"):
        CorrectorConfig(drop=0.0)


def test_camera_offset_shifts_only_the_observed_object():
    """``object_pos_bias`` (the camera_offset shift) moves the observed object, and the
    fingertips and grasp point relative to it, by the bias; the simulated state is untouched."""
    bias = np.array([0.02, 0.02, 0.0], np.float32)
    plain = envs.make("grasp")
    shifted = envs.make("grasp", object_pos_bias=tuple(bias.tolist()))
    key = jax.random.key(3)
    a, b = jax.jit(plain.reset)(key), jax.jit(shifted.reset)(key)
    np.testing.assert_array_equal(a.pipeline_state.qpos, b.pipeline_state.qpos)
    diff = np.asarray(b.obs - a.obs)
    want = np.zeros_like(diff)
    want[44:59] = -np.tile(bias, 5)  # four fingertips and the grasp point, relative to it
    want[59:62] = bias  # the object's position
    np.testing.assert_allclose(diff, want, atol=1e-6)
