"""``rfs sim2sim``: an exported policy on its task in C MuJoCo (mujoco.mj_step), not MJX.

On grasp with a tiny untrained flow base (the probe tasks have no MuJoCo model), two episodes
of 6 control steps. The C physics must carry the whole state across (hand, wrist setpoint,
object, each episode's own object size and mass): over the first control steps, before the
hand reaches the object, C MuJoCo and MJX agree on every joint. Then the command end to end,
in both simulators and both artifact formats. C-physics programs hold a host callback, so JAX's
compile cache cannot keep them: this module compiles the grasp step with it twice.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

import envs
from experiments import cli
from experiments.export import ExportArgs, export
from experiments.sim2sim import CMuJoCo, Sim2SimArgs, make_rollout, sim2sim
from rfs_jax.flow import FlowConfig, init_flow_params, save_flow

EPISODE_LENGTH = 6
EPISODES = 2


@pytest.fixture(scope="module")
def grasp_export(tmp_path_factory):
    """``rfs export`` of a tiny untrained grasp base (sampled: its latent is N(0, I))."""
    directory = tmp_path_factory.mktemp("sim2sim")
    env = envs.make("grasp")
    cfg = FlowConfig(hidden=(32,), time_embed_dim=8, num_steps=2)
    params = init_flow_params(cfg, env.observation_size, env.action_size, jax.random.PRNGKey(0))
    meta = {"task": "grasp", "env_config": dataclasses.asdict(envs.default_config("grasp"))}
    save_flow(directory / "base", cfg, params, meta)
    out = directory / "export"
    export(ExportArgs(run=directory / "base", out=out, sampled=True, platforms=("cpu",)))
    return out


def test_c_mujoco_carries_the_state_and_the_episodes_object():
    env = envs.make("grasp", episode_length=EPISODE_LENGTH)
    c_env = envs.make("grasp", episode_length=EPISODE_LENGTH)
    c_env.physics = CMuJoCo(c_env.mj_model)
    key = jax.random.PRNGKey(3)
    # Down and closing the fingers: every actuator moves, the hand stays clear of the object.
    chunk = np.zeros((EPISODES, 3, env.action_size), np.float32)
    chunk[:, :, 2] = -0.5
    chunk[:, :, 6:] = 0.3
    starts, ends = [], []
    for e in (env, c_env):
        reset, act = make_rollout(e, EPISODE_LENGTH, EPISODES)
        starts.append(reset(key))
        ends.append(act(starts[-1], chunk)[0])
    sizes = np.asarray(starts[0][0].info["obj_size"])
    assert not np.allclose(sizes[0], sizes[1])  # each env its own object
    q0 = np.asarray(starts[0][0].pipeline_state.qpos)
    q_mjx, q_c = (np.asarray(s.pipeline_state.qpos) for s in ends)
    assert np.abs(q_c - q_mjx).max() < 1e-3, np.abs(q_c - q_mjx).max(axis=1)
    assert np.abs(q_mjx - q0).max() > 1e-2  # ...and the state did move
    # Every env ran `substeps` C steps per control step.
    assert c_env.physics.steps == EPISODES * 3 * env.hand.substeps


def test_sim2sim_end_to_end_in_both_simulators(grasp_export, tmp_path):
    override = (f"episode_length={EPISODE_LENGTH}",)
    c = sim2sim(
        Sim2SimArgs(
            export=grasp_export, episodes=EPISODES, override=override, json=tmp_path / "c.json"
        )
    )
    assert c["physics"] == "mujoco" and c["task"] == "grasp" and c["mode"] == "base"
    assert 0.0 <= c["success_rate"] <= 1.0
    assert 1 <= c["mean_episode_steps"] <= EPISODE_LENGTH
    substeps = envs.make("grasp").hand.substeps
    assert c["mj_steps"] >= EPISODES * substeps * c["mean_episode_steps"]
    assert json.loads((tmp_path / "c.json").read_text())["success_rate"] == c["success_rate"]

    m = sim2sim(
        Sim2SimArgs(
            export=grasp_export,
            episodes=EPISODES,
            override=override,
            physics="mjx",
            format="onnx",
        )
    )
    assert m["physics"] == "mjx" and "mj_steps" not in m
    assert (grasp_export / "sim2sim_mjx.json").is_file()


def test_sim2sim_errors(grasp_export, tmp_path, capsys):
    with pytest.raises(ValueError, match="--episodes must be positive"):
        sim2sim(Sim2SimArgs(export=grasp_export, episodes=0))
    with pytest.raises(FileNotFoundError, match="rfs export"):
        sim2sim(Sim2SimArgs(export=tmp_path / "nothing"))
    with pytest.raises(ValueError, match="pass the export's own task"):
        sim2sim(Sim2SimArgs(export=grasp_export, task="pour"))
    with pytest.raises(SystemExit) as e:
        cli.main(["sim2sim", "--export", str(tmp_path), "--episodes", "2"])
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().out
