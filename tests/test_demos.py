"""Demo files: HDF5 round trip and refusal of demos made for another env config."""

import h5py
import numpy as np
import pytest

import envs
from rfs_jax.demos import (
    DemoMismatchError,
    DemoSet,
    Episode,
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
