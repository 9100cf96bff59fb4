"""``rfs sim2sim``: run an exported policy against C MuJoCo, the stand-in for a real robot.

The policy is the artifact ``rfs export`` wrote (``policy.jaxexport`` through
``rfs_jax.deploy``, or ``policy.onnx`` through onnxruntime), called on the host once per
decision exactly as a robot computer would call it. The world is the task's own: its MJCF, its
reset (scene and object randomisation), its control mapping, reward, success rule and
observation code all run unchanged; only the physics between two control steps moves from MJX
to C MuJoCo. The task's ``HandEnv._physics_step`` calls ``env.physics`` in place of its
``substeps`` MJX steps, and this module's ``CMuJoCo`` answers it from a ``jax.pure_callback``:
it copies the state (``qpos``, ``qvel``, ``act``, ``ctrl``, the mocap bodies, the solver's warm
start) and the episode's object (sizes, masses, inertias, frictions) into ``mujoco.MjData`` /
``MjModel``, runs ``mujoco.mj_step`` ``substeps`` times per env, and hands the new state back;
``mjx.forward`` then recomputes the positions and contacts the task's code reads.

What differs from training is what differs between the two simulators: C MuJoCo's collision
functions (MJX has its own, with a fixed number of contact points per geom pair) and float64
arithmetic against MJX's float32 on a CPU. The same
command with ``--physics mjx`` runs the same loop, the same episodes and the same artifact with
MJX physics, so the two success rates differ only by the simulator.

    rfs sim2sim --export runs/grasp/rfs/export --episodes 256
    rfs sim2sim --export runs/grasp/rfs/export --episodes 256 --physics mjx
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np

from experiments.common import console, write_json

# The mjx.Model fields a task changes per episode (the object's size, mass, inertia and
# friction, a fixture's pose): copied into the C model before each env's physics steps.
MODEL_FIELDS = (
    "geom_size",
    "geom_rbound",
    "geom_pos",
    "geom_quat",
    "geom_friction",
    "body_pos",
    "body_quat",
    "body_mass",
    "body_inertia",
    "pair_friction",
)
# The mjx.Data fields that carry the state from one control step to the next.
STATE_IN = ("qpos", "qvel", "act", "ctrl", "mocap_pos", "mocap_quat", "qacc_warmstart", "time")
STATE_OUT = ("qpos", "qvel", "act", "qacc_warmstart", "time")


@dataclasses.dataclass
class Sim2SimArgs:
    """Run an exported policy (`rfs export`) on its task in C MuJoCo (mujoco.mj_step, not MJX)
    and report its success; `--physics mjx` runs the same episodes in MJX for comparison."""

    export: Path = Path("runs/grasp/rfs/export")
    """Folder written by `rfs export` (policy.json and policy.jaxexport / policy.onnx)."""
    task: str | None = None
    """Task to run on (default: the export's own; another task must have the same
    observation and action sizes)."""
    episodes: int = 256
    """Episodes, one per parallel env, all first episodes of the same reset keys."""
    physics: Literal["mujoco", "mjx"] = "mujoco"
    """Simulator between control steps: C MuJoCo (the check) or MJX (the trainer's)."""
    format: Literal["jaxexport", "onnx"] = "jaxexport"
    """Artifact that acts: policy.jaxexport through rfs_jax.deploy, or policy.onnx through
    onnxruntime."""
    override: tuple[str, ...] = ()
    """Env config overrides KEY=VALUE, after the run's own training overrides."""
    seed: int = 0
    """Key of the episodes and, for a policy that samples, of its draws (as `rfs eval`)."""
    json: Path | None = None
    """Where to write the result (default: <export>/sim2sim_<physics>.json)."""


class CMuJoCo:
    """``physics(model, data, substeps) -> data`` for ``HandEnv.physics``: C MuJoCo steps.

    Called inside the batched (vmapped) env step; its ``jax.pure_callback`` receives the whole
    batch at once (``vmap_method="broadcast_all"``), row ``i`` being env ``i``, and keeps one
    ``MjData`` per env (a C MuJoCo data also holds the solver's scratch, reused across steps).
    The model's per-episode fields (``MODEL_FIELDS``) are written into one shared ``MjModel``
    before each env's steps."""

    def __init__(self, mj_model):
        import copy

        import mujoco

        self._mujoco = mujoco
        self.model = copy.deepcopy(mj_model)  # its fields are written per env
        self.fields = tuple(f for f in MODEL_FIELDS if getattr(self.model, f).size)
        self.datas: list = []
        self.steps = 0  # mj_step calls so far (each env's substeps count)
        self.seconds = 0.0  # host time inside mj_step

    def _host(self, substeps: int, *arrays):
        mujoco = self._mujoco
        n_in = len(STATE_IN)
        state = dict(zip(STATE_IN, arrays[:n_in], strict=True))
        fields = dict(zip(self.fields, arrays[n_in:], strict=True))
        single = state["qpos"].ndim == 1
        if single:
            state = {k: v[None] for k, v in state.items()}
            fields = {k: v[None] for k, v in fields.items()}
        batch = state["qpos"].shape[0]
        while len(self.datas) < batch:
            self.datas.append(mujoco.MjData(self.model))
        out = {k: np.empty((batch, *np.shape(state[k])[1:]), np.float32) for k in STATE_OUT}
        m = self.model
        t0 = time.perf_counter()
        for i in range(batch):
            for f in self.fields:
                getattr(m, f)[...] = fields[f][i]
            d = self.datas[i]
            for k in STATE_IN:
                if k == "time":
                    d.time = float(state[k][i])
                elif getattr(d, k).size:
                    getattr(d, k)[...] = state[k][i]
            mujoco.mj_step(m, d, nstep=substeps)
            for k in STATE_OUT:
                out[k][i] = d.time if k == "time" else getattr(d, k)
        self.seconds += time.perf_counter() - t0
        self.steps += batch * substeps
        if single:
            out = {k: v[0] for k, v in out.items()}
        return tuple(out[k] for k in STATE_OUT)

    def __call__(self, model, data, substeps: int):
        import jax
        from mujoco import mjx

        args = [getattr(data, k) for k in STATE_IN]
        args += [getattr(model, f) for f in self.fields]
        shapes = tuple(
            jax.ShapeDtypeStruct(np.shape(getattr(data, k)), np.float32) for k in STATE_OUT
        )
        new = jax.pure_callback(
            lambda *a: self._host(substeps, *a), shapes, *args, vmap_method="broadcast_all"
        )
        data = data.replace(
            **{k: v.astype(getattr(data, k).dtype) for k, v in zip(STATE_OUT, new, strict=True)}
        )
        # Positions, contacts and sensors of the new state, for the task's reward and obs.
        return mjx.forward(model, data)


class _OnnxPolicy:
    """``policy(obs, key=None)`` of ``policy.onnx`` through onnxruntime, as ``deploy.load``'s."""

    def __init__(self, export_dir: Path, manifest: dict):
        import onnxruntime as ort

        from rfs_jax.deploy import ONNX_FILE, key_data

        path = export_dir / ONNX_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: export with ONNX (`rfs export` without --no-onnx) or pass "
                f"--format jaxexport"
            )
        self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self._key_data = key_data
        self.manifest = manifest
        self.needs_key = bool(manifest["needs_key"])

    def __call__(self, obs, key=None) -> np.ndarray:
        feed = {"obs": np.asarray(obs, np.float32)}
        if self.needs_key:
            feed["key"] = self._key_data(key)
        (actions,) = self._session.run(["actions"], feed)
        return actions


def _load(args: Sim2SimArgs):
    """``(policy, manifest)`` of the export folder in the format asked for."""
    from rfs_jax.deploy import load, load_manifest

    export_dir = Path(args.export)
    manifest = load_manifest(export_dir)
    if args.format == "onnx":
        return _OnnxPolicy(export_dir, manifest), manifest
    return load(export_dir), manifest


def _env_config(manifest: dict, task: str) -> dict | None:
    """The env config the exported policy's base was trained for (its ``config.json``), when
    the base folder is still where the export says and is of ``task``; else ``None`` (the
    task's defaults)."""
    import json

    source = manifest.get("source", {})
    base = source.get("base") or source.get("path")
    path = Path(base) / "config.json" if base else None
    if path is None or not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text()).get("meta", {})
    except (OSError, ValueError):
        return None
    return meta.get("env_config") if meta.get("task") == task else None


def _make_env(args: Sim2SimArgs, manifest: dict):
    from experiments.base import make_task_env

    task = args.task or manifest["task"]
    overrides = tuple(manifest.get("source", {}).get("overrides", ())) + tuple(args.override)
    env = make_task_env(task, _env_config(manifest, task), overrides)
    if not hasattr(env, "mj_model") or not hasattr(env, "_physics_step"):
        raise ValueError(f"task {task!r} has no MuJoCo model to run in C MuJoCo (a probe task?)")
    obs_size = int(manifest["observation"]["size"])
    act_size = int(manifest["action"]["size"])
    if env.observation_size != obs_size or env.action_size != act_size:
        raise ValueError(
            f"the export acts on observations of {obs_size} and actions of {act_size}, task "
            f"{task!r} has {env.observation_size} and {env.action_size}: pass the export's own "
            f"task ({manifest['task']})"
        )
    return task, env


def make_rollout(env, episode_length: int, num_episodes: int):
    """``(reset, act)``: jitted ``reset(key) -> carry`` of ``num_episodes`` first episodes, and
    ``act(carry, chunk[B, H_exec, A]) -> carry`` running one executed chunk, one action per
    control step, as ``rfs eval`` does (``rfs_jax.evaluation``: the same wrapper and reset keys;
    an env is held once its first episode ends). ``carry = (state, alive, success, steps)``."""
    import jax
    import jax.numpy as jnp

    from envs.wrappers import batch_keys, hold_ended, wrap

    inner = wrap(env, episode_length).env  # time limit and vmap, without the auto-reset

    def reset(key):
        state = inner.reset(batch_keys(key, num_episodes))
        zeros = jnp.zeros((num_episodes,))
        return state, jnp.ones((num_episodes,)), zeros, zeros

    def step(carry, action):
        state, alive, success, steps = carry
        new = inner.step(state.replace(done=jnp.zeros_like(state.done)), action)
        success = jnp.maximum(success, new.metrics["success"] * alive)
        steps = steps + alive
        state = hold_ended(alive, new, state)
        alive = alive * (1.0 - new.done)
        return (state, alive, success, steps), None

    def act(carry, chunk):
        carry, _ = jax.lax.scan(step, carry, jnp.swapaxes(chunk, 0, 1))
        return carry

    return jax.jit(reset), jax.jit(act)


def sim2sim(args: Sim2SimArgs) -> dict:
    if args.episodes <= 0:
        raise ValueError(f"--episodes must be positive, got {args.episodes}")
    import jax

    t0 = time.time()
    policy, manifest = _load(args)
    task, env = _make_env(args, manifest)
    physics = CMuJoCo(env.mj_model) if args.physics == "mujoco" else None
    env.physics = physics
    episode_length = int(env.config.episode_length)
    exec_horizon = int(manifest["control"]["exec_horizon"])
    num_chunks = math.ceil(episode_length / exec_horizon)
    what = "sampled" if manifest["sampled"] else "at its mean"
    console.print(
        f"{task} {manifest['mode']} ({what}, {args.format}) on "
        f"{'C MuJoCo' if physics else 'MJX'}: {args.episodes} episodes of {episode_length} "
        f"steps (compiling the step takes about a minute on a CPU unless cached) ..."
    )
    reset, act = make_rollout(env, episode_length, args.episodes)
    key_reset, key_policy = jax.random.split(jax.random.key(args.seed))
    policy_keys = jax.random.split(key_policy, num_chunks)
    carry = reset(key_reset)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    policy_s = 0.0
    with Progress(
        "[bold]episodes", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task_id = bar.add_task("steps", total=num_chunks)
        for i in range(num_chunks):
            obs = np.asarray(carry[0].obs)
            t1 = time.perf_counter()
            key = jax.random.key_data(policy_keys[i]) if policy.needs_key else None
            chunk = policy(obs, key=key) if key is not None else policy(obs)
            policy_s += time.perf_counter() - t1
            carry = act(carry, np.asarray(chunk, np.float32))
            if not bool(np.asarray(carry[1]).any()):  # every first episode has ended
                bar.update(task_id, completed=num_chunks)
                break
            bar.advance(task_id)
    _, _, success, steps = jax.device_get(carry)
    success = np.asarray(success) > 0
    total_s = time.time() - t0
    result = {
        "task": task,
        "mode": manifest["mode"],
        "sampled": bool(manifest["sampled"]),
        "export": str(Path(args.export)),
        "physics": args.physics,
        "format": args.format,
        "episodes": args.episodes,
        "seed": args.seed,
        "overrides": list(args.override),
        "success_rate": float(success.mean()),
        "successes": int(success.sum()),
        "mean_episode_steps": float(np.mean(steps)),
        "seconds": round(total_s, 1),
        "policy_seconds": round(policy_s, 2),
    }
    if physics is not None:
        result["mj_steps"] = physics.steps
        result["mj_step_seconds"] = round(physics.seconds, 2)
    out = Path(args.json) if args.json else Path(args.export) / f"sim2sim_{args.physics}.json"
    write_json(out, result)
    console.print(
        f"[bold green]{task} {manifest['mode']} on {'C MuJoCo' if physics else 'MJX'}: "
        f"success {result['success_rate']:.3f} ({result['successes']}/{args.episodes})[/] in "
        f"{total_s:.0f} s -> {out}"
    )
    return result
