"""``rfs video``: an mp4 (and a PNG strip) of a policy acting in its task's MJX env.

The policy is a steering run (a folder written by ``rfs steer``, at its newest readable
checkpoint) or a base policy (a folder written by ``rfs base``), loaded and acting exactly as
``rfs eval`` does: the same env (the run's or base's saved config, its training overrides, then
``--override``), the same batched, auto-reset env wrapper, the same reset and policy keys
(``--seed``), so ``--episodes N --seed S`` shows the first N episodes that ``rfs eval --episodes
N --seed S`` scores, and a base and a run of the same task with the same seed show the same
objects and start poses. At the mean by default (a run's steering head at its mean, a base at
``a0 = 0``); ``--sampled`` samples them as they act while training.

Each episode is one env of the batch, run for one episode; every control step's ``mjx.Data``
qpos (and mocap poses) is recorded, with the episode's own model fields (object size, fixture
poses: the task's per-episode randomisation, ``HandEnv.model_with_object`` / ``model(info)``).
The frames are then rendered offscreen with C MuJoCo (``mujoco.Renderer``, ``MUJOCO_GL=egl``)
on the task's ``mj_model`` with those fields set, the episodes tiled side by side, each with a
caption (episode, time, ``success`` / ``fail`` from the task's success metric) and a border
(green: success, red: fail).

Frame contract: ``episode_length + 1`` frames at the control rate (``1 / ctrl_dt`` fps): frame 0
is the reset state, frame t the state after control step t. An episode that ends before the time
limit (success, or an object knocked off the table) holds its last state to the end.

Files: ``--out`` (default ``<run>/video.mp4``) and ``<out stem>_strip.png`` next to it, a grid of
a few frames per episode (one row per episode, evenly spaced up to the end of the longest
episode, at half size) for pages that cannot embed a video.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from experiments.common import console

CONFIG_FILE = "config.json"
# Model fields a task may set per episode (object size, fixture poses, colours) that change
# what is drawn; each one the task's MJX model has is copied into the rendered model.
RENDER_FIELDS = ("geom_size", "geom_pos", "geom_quat", "geom_rgba", "body_pos", "body_quat")
# A free camera looking at the workspace (the hand tasks' MJCF has no camera of its own).
CAMERA = {"lookat": (0.0, 0.0, 0.13), "distance": 0.8, "azimuth": 135.0, "elevation": -20.0}
SUCCESS_RGB = (40, 200, 70)
FAIL_RGB = (220, 50, 40)
BORDER = 3  # px, at full tile size
# Headless OpenGL on Debian (the .ci/run line): EGL (libegl1, with Mesa's vendor library),
# the GL dispatch library PyOpenGL loads (libopengl0) and Mesa's software renderer
# (libgl1-mesa-dri: llvmpipe, for a machine without a GPU).
APT_PACKAGES = ("libegl1", "libopengl0", "libgl1-mesa-dri")


@dataclasses.dataclass
class VideoArgs:
    """Render a policy's episodes to an mp4 and a PNG strip: a steering run (a folder written
    by `rfs steer`, newest checkpoint) or a base policy (a folder written by `rfs base`), acting
    as `rfs eval` does (same env, same episodes for the same --seed)."""

    run: Path = Path("runs/grasp/rfs")
    """Folder written by `rfs steer` or by `rfs base`."""
    episodes: int = 4
    """Episodes, one per parallel env, tiled side by side."""
    out: Path | None = None
    """The mp4 (default: <run>/video.mp4); the strip is <out stem>_strip.png next to it."""
    sampled: bool = False
    """Sample the policy (a run's Gaussian head, a base's a0 ~ N(0, I)) instead of its mean
    (a base at a0 = 0)."""
    override: tuple[str, ...] = ()
    """Env config overrides KEY=VALUE (dotted for nested fields), after the run's own."""
    seed: int = 0
    """Key of the episodes (as `rfs eval --seed`)."""
    seed_index: int = 0
    """Which seed of a multi-seed run (`rfs steer --seeds N`) acts."""
    width: int = 320
    """Width of one episode's tile (px, even)."""
    height: int = 240
    """Height of one episode's tile (px, even)."""
    columns: int = 4
    """Tiles per row of the video (more episodes wrap onto further rows)."""
    strip_frames: int = 5
    """Frames per episode in the PNG strip, evenly spaced up to the end of the longest
    episode."""
    strip_scale: float = 0.5
    """Size of the strip's tiles relative to the video's."""


# --------------------------------------------------------------------------- the policy


def _load_policy(run_dir: Path, sampled: bool, overrides: tuple[str, ...], seed_index: int):
    """``(task, mode, env, policy_fn, params, info)`` of a run or base folder, as ``rfs eval``
    builds them (``experiments.steer.evaluate_run``)."""
    import functools

    import jax

    from experiments.agents import agent, algo_of, is_run_config
    from experiments.base import base_policy_fn, load_base
    from experiments.steer import load_run_policy, read_run_config

    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"nothing to render at {run_dir} (missing {CONFIG_FILE}): pass a folder written by "
            f"`rfs steer` or `rfs base`"
        )
    config = read_run_config(config_path)
    deterministic = not sampled
    if not is_run_config(config):  # a base policy folder (rfs_jax.flow.save_flow)
        task, env, flow_cfg, params, _ = load_base(run_dir, overrides)
        policy = base_policy_fn(flow_cfg, env, params, deterministic)
        return task, "base", env, policy, params, {}
    base_dir = Path(config["base"])
    if not (base_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"the base policy of {run_dir} is gone from {base_dir}: restore it there (the run's "
            f"{CONFIG_FILE} names it)"
        )
    overrides = tuple(config.get("overrides", ())) + tuple(overrides)
    task, env, flow_cfg, base_params, _ = load_base(base_dir, overrides)
    state, networks, iteration = load_run_policy(run_dir, env, flow_cfg)
    make_policy = agent(algo_of(config)).module.make_policy
    policy = functools.partial(make_policy(networks, base_params), deterministic=deterministic)
    params = state.policy_params
    seeds = int(config.get("seeds", 1))
    if not 0 <= seed_index < seeds:
        raise ValueError(f"--seed-index {seed_index} is not one of the run's {seeds} seed(s)")
    if seeds > 1:
        params = jax.tree.map(lambda x: x[seed_index], params)
    return task, networks.steering.cfg.mode, env, policy, params, {"iteration": iteration}


# --------------------------------------------------------------------------- the rollout


def episode_model(env, info: dict):
    """The MJX model an episode of ``env`` steps with (``info``: its ``state.info``): the
    task's ``model(info)`` (place tasks, stack, pack, pour) or ``_model(info)`` (push to grasp),
    else the one object of ``info["obj_size"]`` (grasp), else the env's own model."""
    for name in ("model", "_model"):
        fn = getattr(env, name, None)
        if callable(fn):
            return fn(info)
    if "obj_size" in info and hasattr(env, "model_with_object"):
        return env.model_with_object(
            "object", info["obj_size"], info["obj_mass"], info["obj_friction"]
        )
    return env.mjx_model


def make_recorder(env, episode_length: int, policy_fn, num_episodes: int):
    """A jitted ``run(params, key) -> dict`` of ``num_episodes`` first episodes, stepped as
    ``rfs_jax.evaluation.make_evaluator`` steps them (same wrapper, reset keys, policy keys and
    chunks), recording every control step:

    ``qpos [episode_length + 1, B, nq]`` (row 0: the reset state), ``mocap_pos [T + 1, B,
    nmocap, 3]``, ``success [B]`` (any step of the episode reported success), ``steps [B]``
    (control steps the episode lasted) and ``fields``: ``RENDER_FIELDS`` of each episode's model
    ``[B, ...]``. An env's state is held once its first episode ends (the evaluator's
    auto-reset would start a new one; its actions there are not used)."""
    import jax
    import jax.numpy as jnp

    from envs.wrappers import batch_keys, hold_ended, wrap

    if num_episodes <= 0:
        raise ValueError(f"--episodes must be positive, got {num_episodes}")
    batched = wrap(env, episode_length)
    inner = batched.env  # time limit and vmap, without the auto-reset
    mjx_model = env.mjx_model
    fields = tuple(f for f in RENDER_FIELDS if hasattr(mjx_model, f))

    def run(params, key):
        key_reset, key_policy = jax.random.split(key)
        state = batched.reset(batch_keys(key_reset, num_episodes))
        per_episode = jax.vmap(
            lambda info: {f: getattr(episode_model(env, info), f) for f in fields}
        )(state.info)
        exec_horizon = jax.eval_shape(policy_fn, params, state.obs, key_policy).shape[1]
        num_chunks = math.ceil(episode_length / exec_horizon)
        zeros = jnp.zeros((num_episodes,))

        def step(carry, action):
            state, alive, success, steps = carry
            new = inner.step(state.replace(done=jnp.zeros_like(state.done)), action)
            if "success" in new.metrics:
                success = jnp.maximum(success, new.metrics["success"] * alive)
            steps = steps + alive
            state = hold_ended(alive, new, state)
            alive = alive * (1.0 - new.done)
            data = state.pipeline_state
            return (state, alive, success, steps), (data.qpos, data.mocap_pos)

        def decide(carry, key_t):
            chunk = policy_fn(params, carry[0].obs, key_t)
            return jax.lax.scan(step, carry, jnp.swapaxes(chunk, 0, 1))

        carry = (state, jnp.ones((num_episodes,)), zeros, zeros)
        keys = jax.random.split(key_policy, num_chunks)
        (_, _, success, steps), (qpos, mocap) = jax.lax.scan(decide, carry, keys)
        data = state.pipeline_state
        steps_run = num_chunks * exec_horizon  # >= episode_length; the first ones are kept
        qpos = qpos.reshape(steps_run, *qpos.shape[2:])[:episode_length]
        mocap = mocap.reshape(steps_run, *mocap.shape[2:])[:episode_length]
        return {
            "qpos": jnp.concatenate([data.qpos[None], qpos]),
            "mocap_pos": jnp.concatenate([data.mocap_pos[None], mocap]),
            "success": success,
            "steps": steps,
            "fields": per_episode,
        }

    return jax.jit(run)


# --------------------------------------------------------------------------- rendering


def _ensure_egl() -> None:
    """Headless rendering: EGL unless the user chose another backend (``MUJOCO_GL``).

    MuJoCo picks its GL backend when it is first imported (here, long before: the envs import
    it), GLFW when ``MUJOCO_GL`` is unset, which needs a display; ``mujoco.Renderer`` reads the
    chosen context class when it is made, so that class is switched to EGL here."""
    if os.environ.setdefault("MUJOCO_GL", "egl").lower().strip() != "egl":
        return
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    try:
        from mujoco.rendering.classic import gl_context
    except ImportError:  # another layout of the bindings: the import-time choice stands
        return
    if getattr(gl_context, "_MUJOCO_GL", "egl") != "egl":
        try:
            from mujoco.egl import GLContext
        except Exception as e:  # no libEGL, or PyOpenGL set to another platform
            raise OSError(
                f"cannot load MuJoCo's EGL backend ({type(e).__name__}: {e}); on Debian "
                f"install {' '.join(APT_PACKAGES)}, or set MUJOCO_GL"
            ) from e
        gl_context.GLContext = GLContext


def render_episodes(mj_model, record: dict, width: int, height: int, progress=None) -> np.ndarray:
    """``frames [T + 1, B, height, width, 3]`` uint8 of a ``make_recorder`` record, each
    episode rendered on a copy of ``mj_model`` with its own ``fields``."""
    _ensure_egl()
    import mujoco

    qpos, mocap = np.asarray(record["qpos"]), np.asarray(record["mocap_pos"])
    num_frames, num_episodes = qpos.shape[:2]
    model = copy.deepcopy(mj_model)
    model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
    model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
    data = mujoco.MjData(model)
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    camera.lookat[:] = CAMERA["lookat"]
    camera.distance, camera.azimuth = CAMERA["distance"], CAMERA["azimuth"]
    camera.elevation = CAMERA["elevation"]
    frames = np.zeros((num_frames, num_episodes, height, width, 3), np.uint8)
    try:
        renderer = mujoco.Renderer(model, height, width)
    except Exception as e:  # no GL: say what to install, in one line
        raise OSError(
            f"cannot open an offscreen MuJoCo renderer (MUJOCO_GL={os.environ.get('MUJOCO_GL')}"
            f": {type(e).__name__}: {e}); on Debian install {' '.join(APT_PACKAGES)}"
        ) from e
    with renderer:
        for i in range(num_episodes):
            for name, values in record["fields"].items():
                getattr(model, name)[:] = np.asarray(values[i])
            for t in range(num_frames):
                data.qpos[:] = qpos[t, i]
                if model.nmocap:
                    data.mocap_pos[:] = mocap[t, i]
                mujoco.mj_forward(model, data)
                renderer.update_scene(data, camera=camera)
                frames[t, i] = renderer.render()
                if progress is not None:
                    progress()
    return frames


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def annotate(tile: np.ndarray, lines: list[str], rgb: tuple[int, int, int]) -> np.ndarray:
    """The tile with a ``rgb`` border and ``lines`` of text on a dark band at its top left."""
    from PIL import Image, ImageDraw

    h, w = tile.shape[:2]
    border = max(1, round(BORDER * w / 320))
    image = Image.fromarray(tile)
    draw = ImageDraw.Draw(image)
    font = _font(max(8, round(13 * w / 320)))
    pad = max(2, border + 1)
    y = pad
    for k, line in enumerate(lines):
        box = draw.textbbox((pad, y), line, font=font)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
        colour = rgb if k == len(lines) - 1 else (255, 255, 255)  # the outcome in its colour
        draw.text((pad, y), line, fill=colour, font=font)
        y = box[3] + 3
    out = np.asarray(image).copy()
    out[:border], out[-border:], out[:, :border], out[:, -border:] = rgb, rgb, rgb, rgb
    return out


def _captions(t: int, i: int, success: np.ndarray, steps: np.ndarray, dt: float):
    ended = t >= steps[i]
    clock = f"t = {min(t, steps[i]) * dt:.2f} s" + (" (ended)" if ended and t > steps[i] else "")
    outcome = "success" if success[i] > 0 else "fail"
    return [f"episode {i}  {clock}", outcome], SUCCESS_RGB if success[i] > 0 else FAIL_RGB


def grid(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    """Tiles ``[h, w, 3]`` (all one size) in rows of ``columns``, black where a row is short."""
    h, w = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / columns)
    out = np.zeros((rows * h, columns * w, 3), np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        out[r * h : (r + 1) * h, c * w : (c + 1) * w] = tile
    return out


def use_ffmpeg() -> None:
    """Point mediapy at an ffmpeg: the system's, else the one imageio-ffmpeg ships."""
    import mediapy

    if shutil.which("ffmpeg") is None:
        import imageio_ffmpeg

        mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())


# --------------------------------------------------------------------------- the command


def _check(args: VideoArgs) -> None:
    if args.episodes <= 0:
        raise ValueError(f"--episodes must be positive, got {args.episodes}")
    for name in ("width", "height"):
        v = getattr(args, name)
        if v < 16 or v % 2:
            raise ValueError(f"--{name} must be an even number of pixels >= 16, got {v}")
    if args.columns <= 0:
        raise ValueError(f"--columns must be positive, got {args.columns}")
    if args.strip_frames <= 0:
        raise ValueError(f"--strip-frames must be positive, got {args.strip_frames}")
    if not 0 < args.strip_scale <= 1:
        raise ValueError(f"--strip-scale must be in (0, 1], got {args.strip_scale}")


def strip_path(out: Path) -> Path:
    return out.with_name(out.stem + "_strip.png")


def video(args: VideoArgs) -> dict:
    _check(args)
    _ensure_egl()
    run_dir = Path(args.run)
    out = Path(args.out) if args.out is not None else run_dir / "video.mp4"
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out must be an .mp4 file, got {out}")

    import jax

    t0 = time.time()
    console.print(f"loading the policy at {run_dir} ...")
    task, mode, env, policy, params, extra = _load_policy(
        run_dir, args.sampled, tuple(args.override), args.seed_index
    )
    if not hasattr(env, "mj_model"):
        raise ValueError(f"task {task!r} has no MuJoCo model to render (a probe task?)")
    episode_length = env.config.episode_length
    dt = float(env.dt)
    console.print(
        f"rolling out {args.episodes} {task} episode(s) of {episode_length} steps "
        f"({mode}, {'sampled' if args.sampled else 'at the mean'}; compiling the MJX step "
        f"takes about a minute on a CPU unless cached) ..."
    )
    record = make_recorder(env, episode_length, policy, args.episodes)
    record = jax.device_get(record(params, jax.random.key(args.seed)))
    rollout_s = time.time() - t0
    success, steps = np.asarray(record["success"]), np.asarray(record["steps"])
    console.print(f"rolled out in {rollout_s:.0f} s: success {int(success.sum())}/{args.episodes}")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    num_frames = episode_length + 1
    t1 = time.time()
    with Progress(
        "[bold]rendering", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task_id = bar.add_task("render", total=num_frames * args.episodes)
        frames = render_episodes(
            env.mj_model,
            record,
            args.width,
            args.height,
            progress=lambda: bar.advance(task_id),
        )
    columns = min(args.columns, args.episodes)
    video_frames = np.stack(
        [
            grid(
                [
                    annotate(frames[t, i], *_captions(t, i, success, steps, dt))
                    for i in range(args.episodes)
                ],
                columns,
            )
            for t in range(num_frames)
        ]
    )
    render_s = time.time() - t1

    import mediapy
    from PIL import Image

    use_ffmpeg()
    out.parent.mkdir(parents=True, exist_ok=True)
    fps = 1.0 / dt
    mediapy.write_video(out, video_frames, fps=fps)
    strip = strip_path(out)
    # Evenly spaced up to the end of the longest episode (held frames after it add nothing).
    last = int(steps.max())
    picks = np.unique(np.linspace(0, last, args.strip_frames).round().astype(int))
    sw = 2 * round(args.width * args.strip_scale / 2)
    sh = 2 * round(args.height * args.strip_scale / 2)
    tiles = []
    for i in range(args.episodes):
        for t in picks:
            small = np.asarray(Image.fromarray(frames[t, i]).resize((sw, sh), Image.LANCZOS))
            tiles.append(annotate(small, *_captions(int(t), i, success, steps, dt)))
    Image.fromarray(grid(tiles, len(picks))).save(strip, optimize=True)
    total_s = time.time() - t0
    console.print(
        f"[bold green]{task} {mode}: success {int(success.sum())}/{args.episodes}[/] -> {out} "
        f"({num_frames} frames at {fps:g} fps, {video_frames.shape[2]}x{video_frames.shape[1]}) "
        f"and {strip}; rollout {rollout_s:.0f} s, rendering {render_s:.0f} s"
    )
    return {
        "task": task,
        "mode": mode,
        "run": str(run_dir),
        "episodes": args.episodes,
        "sampled": args.sampled,
        "seed": args.seed,
        "success": [bool(s) for s in success],
        "success_rate": float(success.mean()),
        "episode_steps": [int(s) for s in steps],
        "frames": num_frames,
        "fps": fps,
        "video": str(out),
        "strip": str(strip),
        "size": [int(video_frames.shape[2]), int(video_frames.shape[1])],
        "rollout_seconds": rollout_s,
        "render_seconds": render_s,
        "seconds": total_s,
        **extra,
    }
