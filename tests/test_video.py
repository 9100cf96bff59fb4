"""``rfs video``: a policy's episodes rendered offscreen (C MuJoCo, EGL) to an mp4 and a strip.

On the grasp task with a tiny freshly initialised flow base (the probe tasks have no MuJoCo
model), two episodes of 6 control steps at a small resolution: the mp4 decodes with
``episode_length + 1`` frames, two tiles wide, and the PNG strip holds one row per episode. The
rendered model takes each episode's own object (its randomised size). Bad folders and episode
counts are one-line errors before anything compiles.
"""

from __future__ import annotations

import dataclasses

import imageio_ffmpeg
import jax
import numpy as np
import pytest
from PIL import Image

import envs
from experiments import cli
from experiments.base import load_base
from experiments.video import VideoArgs, episode_model, strip_path, video
from rfs_jax.flow import FlowConfig, init_flow_params, save_flow

EPISODE_LENGTH = 6
WIDTH, HEIGHT = 96, 64


def _decode(path):
    """``(frames [N, H, W, 3], meta)`` of an mp4, decoded by imageio-ffmpeg's own ffmpeg
    (mediapy.read_video passes ``-vsync``, which the ffmpeg 9 that imageio-ffmpeg 0.8 ships no
    longer accepts: google/mediapy#88; its writer is unaffected)."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]
    return np.stack(frames), meta


@pytest.fixture(scope="module")
def grasp_base(tmp_path_factory):
    """A tiny untrained flow base for grasp (what `rfs base` writes, minus the training)."""
    directory = tmp_path_factory.mktemp("video") / "base"
    env = envs.make("grasp")
    cfg = FlowConfig(hidden=(32,), time_embed_dim=8, num_steps=2)
    params = init_flow_params(cfg, env.observation_size, env.action_size, jax.random.PRNGKey(0))
    meta = {"task": "grasp", "env_config": dataclasses.asdict(envs.default_config("grasp"))}
    save_flow(directory, cfg, params, meta)
    return directory


def test_video_of_a_base(grasp_base, tmp_path):
    out = tmp_path / "clip.mp4"
    args = VideoArgs(
        run=grasp_base,
        episodes=2,
        out=out,
        override=(f"episode_length={EPISODE_LENGTH}",),
        width=WIDTH,
        height=HEIGHT,
        strip_frames=3,
    )
    result = video(args)
    assert result["task"] == "grasp" and result["mode"] == "base"
    assert result["frames"] == EPISODE_LENGTH + 1
    assert len(result["success"]) == 2
    assert all(1 <= s <= EPISODE_LENGTH for s in result["episode_steps"])

    frames, meta = _decode(out)
    assert frames.shape == (EPISODE_LENGTH + 1, HEIGHT, 2 * WIDTH, 3)
    assert frames.std() > 5  # a scene, not a blank frame
    assert meta["fps"] == pytest.approx(20.0)  # the control rate, 1 / ctrl_dt

    strip = strip_path(out)
    assert strip == tmp_path / "clip_strip.png"
    with Image.open(strip) as image:  # 3 frames per row, one row per episode, at half size
        assert image.size == (3 * WIDTH // 2, 2 * HEIGHT // 2)


def test_rendered_model_takes_each_episodes_object(grasp_base):
    _, env, *_ = load_base(grasp_base)
    reset = jax.jit(env.reset)
    states = [reset(jax.random.PRNGKey(k)) for k in (1, 2)]
    geom = env._obj["object"]["geom"]
    size_of = jax.jit(lambda info: episode_model(env, info).geom_size[geom])
    sizes = [np.asarray(size_of(s.info)) for s in states]
    for s, size in zip(states, sizes, strict=True):
        np.testing.assert_allclose(size, s.info["obj_size"])
    assert not np.allclose(sizes[0], sizes[1])


def test_video_errors(grasp_base, tmp_path, capsys):
    with pytest.raises(ValueError, match="--episodes must be positive"):
        video(VideoArgs(run=grasp_base, episodes=0))
    with pytest.raises(FileNotFoundError, match="rfs steer` or `rfs base"):
        video(VideoArgs(run=tmp_path / "nothing"))
    with pytest.raises(SystemExit) as e:
        cli.main(["video", "--run", str(tmp_path), "--episodes", "2"])
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().out
