"""Demo files: HDF5 round trip, refusal of demos made for another env config, and the
expert success rate that collection records."""

import dataclasses

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.base import Env, State

import envs
from rfs_jax.demos import (
    DemoMismatchError,
    DemoSet,
    Episode,
    collect_demos,
    env_config_dict,
    load_demos,
    save_demos,
)


@pytest.fixture(scope="module")
def env():
    return envs.make("grasp")


def _demos(env, n=3):
    rng = np.random.default_rng(0)
    eps = []
    for k in range(n):
        t = 5 + k
        eps.append(
            Episode(
                obs=rng.normal(size=(t, env.observation_size)).astype(np.float32),
                actions=rng.uniform(-1, 1, size=(t, env.action_size)).astype(np.float32),
                rewards=rng.normal(size=t).astype(np.float32),
                dones=np.eye(t, dtype=np.float32)[-1],
                success=k % 2 == 0,
            )
        )
    return DemoSet("grasp", env_config_dict(env), eps, expert_success=0.75)


def test_round_trip(tmp_path, env):
    demos = _demos(env)
    path = save_demos(tmp_path / "d.hdf5", demos)
    with h5py.File(path) as f:  # robomimic layout
        assert set(f["data/demo_0"].keys()) == {"obs", "actions", "rewards", "dones"}
        assert f["data"].attrs["task"] == "grasp"
    back = load_demos(path, env=env, task="grasp")
    assert back.expert_success == pytest.approx(0.75)
    assert back.env_config == demos.env_config
    for a, b in zip(demos.episodes, back.episodes, strict=True):
        for name in ("obs", "actions", "rewards", "dones"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert a.success == b.success


def test_other_env_config_is_refused(tmp_path, env):
    path = save_demos(tmp_path / "d.hdf5", _demos(env))
    other = envs.make("grasp", **{"object.shape": "sphere", "episode_length": 80})
    with pytest.raises(DemoMismatchError, match="object.shape: file 'box' vs env 'sphere'"):
        load_demos(path, env=other)
    with pytest.raises(DemoMismatchError, match="not 'pour'"):
        load_demos(path, task="pour")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="rfs demos"):
        load_demos(tmp_path / "nope.hdf5")
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(DemoMismatchError, match="not a readable rfs demo file"):
        load_demos(bad)


@dataclasses.dataclass(frozen=True)
class _CoinConfig:
    episode_length: int = 12
    p_success: float = 0.3


class _CoinEnv(Env):
    """Each episode succeeds with probability 0.3, decided at reset; a success ends after 2
    steps, a failure runs 10 (as a scripted expert's successes end early)."""

    config = _CoinConfig()
    observation_size = 1
    action_size = 1
    backend = "jax"

    def reset(self, rng):
        lucky = jax.random.bernoulli(rng, self.config.p_success)
        zero = jnp.zeros(())
        info = {"lucky": lucky, "t": jnp.zeros((), jnp.int32)}
        return State(None, jnp.zeros(1), zero, zero, {"success": zero}, info)

    def step(self, state, action):
        t = state.info["t"] + 1
        lucky = state.info["lucky"]
        done = jnp.where(lucky, t >= 2, t >= 10)
        success = (lucky & done).astype(jnp.float32)
        return state.replace(
            done=done.astype(jnp.float32),
            reward=success,
            metrics={"success": success},
            info={**state.info, "t": t},
        )


class _NoExpert:
    def init(self, key):
        return {}

    def act(self, carry, state, key):
        return carry, jnp.zeros(1)


def test_expert_success_counts_the_failures_still_running():
    """The success rate of collection is not biased towards the successes that end first: the
    episodes running when the last demo comes in are finished and counted."""
    demos = collect_demos(
        "coin", _CoinEnv(), _NoExpert(), 20, jax.random.PRNGKey(0), num_envs=64, progress=False
    )
    assert len(demos.episodes) == 20 and all(e.success for e in demos.episodes)
    # 20 successes arrive at the second step, before any failure ends: counting only finished
    # episodes would give 1.0.
    assert abs(demos.expert_success - 0.3) < 0.12, demos.expert_success
