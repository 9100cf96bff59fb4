"""``rfs export``: the whole acting policy of a steering run or a base policy as one artifact,
observation in, executed action chunk out.

What is exported (the params baked in as constants):
    observation normaliser -> steering head at its mean (or sampled, ``--sampled``)
    -> the frozen base's K-step Euler sampler -> composition ``Des(s, a0)[:H_exec] + beta tanh(ar)``
    and clipping to [-1, 1]
for a run folder (written by ``rfs steer``), or the frozen sampler at ``a0 = 0`` (or
``a0 ~ N(0, I)`` with ``--sampled``) for a base folder (written by ``rfs base``). It is exactly
what ``rfs eval`` runs (the run's agent's ``make_policy`` / ``experiments.base.base_policy_fn``).

Files written to ``--out`` (default ``<run>/export``, ``<run>/export_sampled`` with ``--sampled``):
    policy.jaxexport  ``jax.export`` serialized StableHLO, symbolic batch, platforms cpu + cuda
    policy.onnx       ONNX (opset 18, dynamic batch; ``rfs_jax.onnx_export``), for onnxruntime
    policy.json       the manifest: inputs/outputs, observation and action layout, control rate,
                      chunk horizons, task, mode, versions, and the export-time check
A policy that draws random numbers (``--sampled``, or at its mean a ``residual``- or
``base``-mode run, whose latent stays N(0, I)) takes a second input ``key``: ``uint32[2]``, the
data of a threefry key, ``jax.random.PRNGKey(seed)`` (= ``[0, seed]`` for ``0 <= seed < 2**32``);
the same key gives the same action as the trainer's policy. Load it with ``rfs_jax.deploy.load``
(needs jax, not flax nor the trainer) or run the ONNX file with onnxruntime alone
(docs/deploy.md).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from experiments.agents import agent, algo_of, is_run_config
from experiments.common import console, write_json

CONFIG_FILE = "config.json"
JAX_EXPORT_FILE = "policy.jaxexport"
ONNX_FILE = "policy.onnx"
MANIFEST_FILE = "policy.json"
MANIFEST_FORMAT = "rfs_jax.policy_export"
MANIFEST_VERSION = 1
OBS_INPUT, KEY_INPUT, ACTION_OUTPUT = "obs", "key", "actions"
BATCH = "batch"
CHECK_BATCH = 7  # the export-time comparison with the in-memory policy
CHECK_ATOL = 1e-4  # a larger difference is reported as a warning


@dataclasses.dataclass
class ExportArgs:
    """Export the acting policy of a steering run (`rfs steer`) or a base policy (`rfs base`):
    observation in, executed action chunk out, params baked in. Writes policy.jaxexport
    (jax.export StableHLO), policy.onnx and the policy.json manifest."""

    run: Path = Path("runs/grasp/rfs")
    """Folder written by `rfs steer` (a run, at its newest readable checkpoint) or `rfs base`."""
    out: Path | None = None
    """Output folder (default: <run>/export, or <run>/export_sampled with --sampled)."""
    sampled: bool = False
    """Sample the steering head's Gaussian (a base: a0 ~ N(0, I)) from a uint32[2] key input,
    instead of acting at its mean (a base: a0 = 0)."""
    seed_index: int = 0
    """Which seed of a multi-seed run (`rfs steer --seeds N`) to export."""
    onnx: bool = True
    """Also write policy.onnx (needs the `export` extra: onnx, onnxruntime)."""
    platforms: tuple[str, ...] = ("cpu", "cuda")
    """Platforms the jax.export artifact is lowered for."""


# --------------------------------------------------------------------------- the policy


@dataclasses.dataclass(frozen=True)
class ActingPolicy:
    """The acting policy of a folder, as a pure function with every param closed over."""

    fn: Callable  # fn(obs [B, O]) or fn(obs [B, O], key uint32[2]) -> [B, H_exec, A]
    needs_key: bool
    task: str
    mode: str
    env: object
    flow_cfg: object
    source: dict
    extra: dict


def _read_config(run_dir: Path) -> dict:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"nothing to export at {run_dir} (no {CONFIG_FILE}): pass a folder written by "
            f"`rfs steer` (a run) or `rfs base` (a base policy) to --run"
        )
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{path} is not readable JSON ({type(e).__name__}); pass a folder written by "
            f"`rfs steer` or `rfs base` to --run"
        ) from e
    if not isinstance(config, dict) or not (is_run_config(config) or "flow" in config):
        raise ValueError(
            f"{run_dir} is neither a steering run nor a base policy (its {CONFIG_FILE} has no "
            f"'ppo', 'sac' or 'flow' section): pass a folder written by `rfs steer` or "
            f"`rfs base` to --run"
        )
    return config


def acting_policy(run_dir: Path, sampled: bool, seed_index: int = 0) -> ActingPolicy:
    """The policy ``rfs eval`` would act with, at its mean (``sampled=False``) or sampled."""
    import jax

    from experiments.base import base_policy_fn, load_base

    run_dir = Path(run_dir)
    config = _read_config(run_dir)
    if not is_run_config(config):  # a base policy folder (rfs_jax.flow.save_flow)
        task, env, flow_cfg, params, _ = load_base(run_dir)
        policy = base_policy_fn(flow_cfg, env, params, deterministic=not sampled)
        if sampled:

            def fn(obs, key):
                return policy(params, obs, key)
        else:
            zero_key = jax.random.PRNGKey(0)  # unused: a0 = 0

            def fn(obs):
                return policy(params, obs, zero_key)

        source = {"kind": "base", "path": str(run_dir.resolve())}
        return ActingPolicy(fn, sampled, task, "base", env, flow_cfg, source, {})

    from experiments.steer import load_run_policy

    make_policy = agent(algo_of(config)).module.make_policy

    base_dir = Path(config["base"])
    if not (base_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"the base policy of {run_dir} is gone from {base_dir}: restore it there (the run's "
            f"{CONFIG_FILE} names it)"
        )
    task, env, flow_cfg, base_params, _ = load_base(base_dir, tuple(config.get("overrides", ())))
    state, networks, iteration = load_run_policy(run_dir, env, flow_cfg)
    params = state.policy_params
    env_steps = np.asarray(jax.device_get(state.env_steps)).reshape(-1)
    seeds = int(config.get("seeds", 1))
    if not 0 <= seed_index < seeds:
        raise ValueError(f"--seed-index {seed_index} is not one of the run's {seeds} seed(s)")
    if seeds > 1:
        params = jax.tree.map(lambda x: x[seed_index], params)
    steering = networks.steering.cfg
    policy = make_policy(networks, base_params)
    # At its mean a mode that does not learn the latent still feeds the sampler N(0, I) noise.
    needs_key = sampled or not steering.learns_latent
    if needs_key:

        def fn(obs, key):
            return policy(params, obs, key, deterministic=not sampled)
    else:
        zero_key = jax.random.PRNGKey(0)  # multiplied by 0: the mean

        def fn(obs):
            return policy(params, obs, zero_key, deterministic=True)

    source = {
        "kind": "run",
        "path": str(run_dir.resolve()),
        "base": str(base_dir.resolve()),
        "iteration": int(iteration),
        "env_steps": int(env_steps[min(seed_index, len(env_steps) - 1)]),
        "seed": int(config["seed"]) + seed_index,
        "overrides": list(config.get("overrides", ())),
    }
    extra = {
        "steering": {
            "residual_scale": steering.residual_scale,
            "latent_bound": steering.latent_bound,
            "learns_latent": steering.learns_latent,
            "learns_residual": steering.learns_residual,
        }
    }
    return ActingPolicy(fn, needs_key, task, steering.mode, env, flow_cfg, source, extra)


def input_specs(policy: ActingPolicy):
    """``[(name, jax.ShapeDtypeStruct)]`` with a symbolic batch ``b``."""
    import jax
    import jax.numpy as jnp

    (b,) = jax.export.symbolic_shape("b")
    specs = [(OBS_INPUT, jax.ShapeDtypeStruct((b, policy.env.observation_size), jnp.float32))]
    if policy.needs_key:
        specs.append((KEY_INPUT, jax.ShapeDtypeStruct((2,), jnp.uint32)))
    return specs


# --------------------------------------------------------------------------- layouts

_HAND = [
    ("finger_qpos", 16, "finger joint angles (rad), in the order of action.finger_joints"),
    ("finger_qvel", 16, "finger joint velocities x 0.1 (rad/s), same order"),
    ("wrist_qpos", 6, "wrist x, y, z (m) and yaw, pitch, roll (rad)"),
    ("wrist_qvel", 6, "wrist velocities, same order (m/s, rad/s)"),
]


def _relative(obj: str):
    return [
        ("tips_rel_" + obj, 12, f"index, middle, ring, thumb tip positions minus the {obj}'s (m)"),
        ("grasp_rel_" + obj, 3, f"grasp point minus the {obj}'s position (m)"),
    ]


def _pose(obj: str, size: bool = True):
    parts = [
        (obj + "_pos", 3, "position (m), world frame"),
        (obj + "_quat", 4, "orientation quaternion (w, x, y, z)"),
        (obj + "_vel", 6, "linear (m/s) then angular (rad/s) velocity"),
    ]
    return parts + ([(obj + "_size", 3, "size parameters (m)")] if size else [])


_CONTACTS = ("contacts", 5, "1 where index, middle, ring, thumb, palm touch the object")
_PLACE = [
    _CONTACTS,
    ("goal", 3, "where the object's centre must come to rest (m)"),
    ("goal_minus_object", 3, "goal minus the object's position (m)"),
    ("settle_progress", 1, "steps settled at the goal / settle_steps"),
]
_HOLD = [
    ("height_above_rest", 1, "object height above its resting height (m)"),
    ("hold_progress", 1, "steps held / hold_steps"),
]


def _task_layout(task: str, env) -> tuple[list[tuple[str, int, str]], str] | None:
    """``(pieces, source)`` of the task's observation, in order, or None if unknown."""
    hand_obj = _HAND + _relative("object") + _pose("object")
    if task == "grasp":
        return hand_obj + [_CONTACTS] + _HOLD, "envs/grasp.py Grasp._obs"
    if task == "pick_place":
        return hand_obj + _PLACE, "envs/place.py PlaceEnv._obs"
    if task == "stack":
        return hand_obj + _PLACE + _pose("base"), "envs/place.py PlaceEnv._obs + Stack.scene_obs"
    if task == "pack":
        scene = [
            ("object_in_box_xy", 2, "object (x, y) in the box frame (m)"),
            ("box_yaw_cos_sin", 2, "cos, sin of the box's yaw"),
        ]
        return hand_obj + _PLACE + scene, "envs/place.py PlaceEnv._obs + Pack.scene_obs"
    if task == "push_to_grasp":
        wall = [
            ("object_in_wall_frame", 2, "object (x across the wall, y along it) (m)"),
            ("wall_yaw_cos_sin", 2, "cos, sin of the wall's yaw"),
            _CONTACTS,
            ("clearance", 1, "object centre past the nearer wall end (m)"),
        ]
        return hand_obj + wall + _HOLD, "envs/push_to_grasp.py PushToGrasp._obs"
    if task == "pour":
        n = int(env.config.balls.num)
        scene = [
            ("bowl_xy", 2, "bowl (x, y), world frame (m)"),
            ("bowl_yaw_cos_sin", 2, "cos, sin of the bowl's yaw"),
            ("balls_in_bowl_frame", 3 * n, f"{n} ball centres (x, y in the bowl frame, z) (m)"),
            ("contacts", 5, "1 where index, middle, ring, thumb, palm touch the cup"),
            ("poured_fraction", 1, "fraction of the balls in the bowl"),
        ]
        return _HAND + _relative("cup") + _pose("cup", size=False) + scene, "envs/pour.py Pour._obs"
    if task == "probe_bimodal":
        return [
            ("position", 2, "the point's (x, y)"),
            ("cue", 1, "+1 or -1: which goal is rewarded"),
        ], "envs/probes.py BimodalGoalEnv"
    return None


def observation_layout(task: str, env) -> dict:
    size = int(env.observation_size)
    layout = {"size": size, "dtype": "float32", "normalised": "inside the policy (raw obs in)"}
    found = _task_layout(task, env)
    if found is None:
        return {**layout, "layout": None, "note": f"no layout recorded for task {task!r}"}
    pieces, source = found
    if sum(n for _, n, _ in pieces) != size:
        return {
            **layout,
            "layout": None,
            "note": f"the recorded layout of {task!r} does not add up to {size}: see {source}",
        }
    slices, start = [], 0
    for name, n, doc in pieces:
        slices.append({"name": name, "start": start, "stop": start + n, "doc": doc})
        start += n
    return {**layout, "layout": slices, "source": source}


def action_layout(task: str, env) -> dict:
    size = int(env.action_size)
    out = {"size": size, "dtype": "float32", "range": [-1.0, 1.0]}
    hand = getattr(getattr(env, "config", None), "hand", None)
    if hand is not None and size == 22:
        from envs.hand import constants as C
        from envs.hand.base import FINGER_HI, FINGER_LO

        out["layout"] = [
            {
                "name": "wrist_pos_delta",
                "start": 0,
                "stop": 3,
                "doc": f"wrist x, y, z setpoint increments: a * {hand.pos_delta} m per step",
            },
            {
                "name": "wrist_rot_delta",
                "start": 3,
                "stop": 6,
                "doc": f"wrist yaw, pitch, roll setpoint increments: a * {hand.rot_delta} rad",
            },
            {
                "name": "finger_targets",
                "start": 6,
                "stop": 22,
                "doc": "absolute finger joint targets, [-1, 1] mapped linearly onto each "
                "joint's range (finger_joint_ranges)",
            },
        ]
        out["finger_joints"] = list(C.FINGER_JOINT_NAMES)
        out["finger_joint_ranges"] = [
            [float(lo), float(hi)] for lo, hi in zip(FINGER_LO, FINGER_HI, strict=True)
        ]
        out["source"] = "envs/hand/base.py HandEnv._physics_step"
    elif task == "probe_bimodal":
        out["layout"] = [
            {"name": "position", "start": 0, "stop": 2, "doc": "where the point goes next"}
        ]
        out["source"] = "envs/probes.py BimodalGoalEnv.step"
    else:
        out["layout"] = None
    return out


def control_info(policy: ActingPolicy) -> dict:
    cfg = policy.flow_cfg
    hand = getattr(getattr(policy.env, "config", None), "hand", None)
    ctrl_dt = float(hand.ctrl_dt) if hand is not None else None
    return {
        "ctrl_dt": ctrl_dt,
        "rate_hz": None if ctrl_dt is None else round(1.0 / ctrl_dt, 6),
        "horizon": int(cfg.horizon),
        "exec_horizon": int(cfg.exec_horizon),
        "flow_steps": int(cfg.num_steps),
        "doc": "one call returns exec_horizon actions, run one per control step (ctrl_dt), "
        "then call again with the new observation",
    }


# --------------------------------------------------------------------------- export


def _versions(onnx_model) -> dict:
    import jax
    import jaxlib

    import rfs_jax

    versions = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "rfs_jax": rfs_jax.__version__,
    }
    if onnx_model is not None:
        import onnx

        versions["onnx"] = onnx.__version__
        versions["onnx_opset"] = int(onnx_model.opset_import[0].version)
        versions["onnx_ir"] = int(onnx_model.ir_version)
        try:
            import onnxruntime

            versions["onnxruntime"] = onnxruntime.__version__
        except ImportError:
            pass
    return versions


def _check_inputs(policy: ActingPolicy, batch: int):
    """A batch of standard-normal observations (and a key), for the export-time check."""
    rng = np.random.default_rng(0)
    size = policy.env.observation_size
    obs = rng.standard_normal((batch, size)).astype(np.float32)
    args = [obs]
    if policy.needs_key:
        args.append(np.array([0, 1234], np.uint32))
    return args


def _onnx_model(policy: ActingPolicy, doc: str):
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        raise ValueError(
            "the ONNX export needs the `export` extra: .venv/bin/pip install -e '.[export]' "
            "(or pass --no-onnx)"
        ) from e
    from rfs_jax.onnx_export import to_onnx

    return to_onnx(policy.fn, input_specs(policy), [ACTION_OUTPUT], dim_names={"b": BATCH}, doc=doc)


def _onnx_run(model_bytes: bytes, args) -> np.ndarray | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, args, strict=True)))[0]


def _io(policy: ActingPolicy, shape_out) -> dict:
    obs_size = int(policy.env.observation_size)
    inputs = [{"name": OBS_INPUT, "dtype": "float32", "shape": [BATCH, obs_size]}]
    if policy.needs_key:
        inputs.append(
            {
                "name": KEY_INPUT,
                "dtype": "uint32",
                "shape": [2],
                "doc": "threefry key data: jax.random.PRNGKey(seed), = [0, seed] for "
                "0 <= seed < 2**32; the same key gives the trainer's action",
            }
        )
    outputs = [
        {
            "name": ACTION_OUTPUT,
            "dtype": "float32",
            "shape": [BATCH, *shape_out],
            "doc": "the executed action chunk: exec_horizon actions, in [-1, 1]",
        }
    ]
    return {"inputs": inputs, "outputs": outputs}


def export(args: ExportArgs) -> dict:
    """Write policy.jaxexport, policy.onnx and policy.json; returns the manifest."""
    import jax

    run_dir = Path(args.run)
    out = (
        Path(args.out)
        if args.out is not None
        else run_dir / ("export_sampled" if args.sampled else "export")
    )
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: pass a folder path")
    bad = [p for p in args.platforms if p not in ("cpu", "cuda", "rocm", "tpu")]
    if bad or not args.platforms:
        raise ValueError(f"--platforms must be some of cpu, cuda, rocm, tpu; got {bad or '()'}")
    t0 = time.time()
    policy = acting_policy(run_dir, args.sampled, args.seed_index)
    load_s = time.time() - t0
    specs = input_specs(policy)
    what = "sampled" if args.sampled else "at its mean"
    console.print(
        f"exporting the {policy.task} {policy.mode} policy {what} from {run_dir} "
        f"(inputs: {', '.join(n for n, _ in specs)}) ..."
    )

    t0 = time.time()
    exported = jax.export.export(jax.jit(policy.fn), platforms=tuple(args.platforms))(
        *(s for _, s in specs)
    )
    blob = exported.serialize()
    jax_export_s = time.time() - t0
    doc = f"rfs_jax {policy.task} {policy.mode} policy ({what}) from {run_dir}"
    onnx_model, onnx_s = None, None
    if args.onnx:
        t0 = time.time()
        onnx_model = _onnx_model(policy, doc)
        onnx_s = time.time() - t0

    # The check: the artifacts against the in-memory policy on the same inputs.
    check_args = _check_inputs(policy, CHECK_BATCH)
    reference = np.asarray(jax.jit(policy.fn)(*check_args))
    restored = jax.export.deserialize(bytearray(blob))
    check = {
        "batch": CHECK_BATCH,
        "jax_export_max_abs_diff": float(
            np.max(np.abs(np.asarray(restored.call(*check_args)) - reference))
        ),
    }
    onnx_bytes = onnx_model.SerializeToString() if onnx_model is not None else None
    if onnx_bytes is not None:
        got = _onnx_run(onnx_bytes, check_args)
        if got is not None:
            check["onnx_max_abs_diff"] = float(np.max(np.abs(got - reference)))

    out.mkdir(parents=True, exist_ok=True)
    (out / JAX_EXPORT_FILE).write_bytes(blob)
    files = {
        "jax_export": {
            "file": JAX_EXPORT_FILE,
            "bytes": len(blob),
            "platforms": list(exported.platforms),
            "calling_convention_version": int(exported.calling_convention_version),
            "seconds": round(jax_export_s, 3),
        }
    }
    if onnx_bytes is not None:
        (out / ONNX_FILE).write_bytes(onnx_bytes)
        files["onnx"] = {
            "file": ONNX_FILE,
            "bytes": len(onnx_bytes),
            "opset": int(onnx_model.opset_import[0].version),
            "nodes": len(onnx_model.graph.node),
            "seconds": round(onnx_s, 3),
        }
    elif (out / ONNX_FILE).exists():
        (out / ONNX_FILE).unlink()  # never leave an ONNX file of another export next to this one

    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "task": policy.task,
        "mode": policy.mode,
        "sampled": bool(args.sampled),
        "needs_key": bool(policy.needs_key),
        "source": policy.source,
        **_io(policy, reference.shape[1:]),
        "observation": observation_layout(policy.task, policy.env),
        "action": action_layout(policy.task, policy.env),
        "control": control_info(policy),
        **policy.extra,
        "files": files,
        "check": check,
        "versions": _versions(onnx_model),
        "load_seconds": round(load_s, 3),
        "args": {
            "run": str(run_dir),
            "out": str(out),
            "sampled": bool(args.sampled),
            "seed_index": int(args.seed_index),
            "platforms": list(args.platforms),
        },
    }
    write_json(out / MANIFEST_FILE, manifest)
    worst = max(v for k, v in check.items() if k != "batch")
    if worst > CHECK_ATOL:
        console.print(
            f"[bold yellow]warning:[/] an exported artifact differs from the in-memory policy by "
            f"{worst:.1e} (> {CHECK_ATOL:g}) on the check batch: see {out / MANIFEST_FILE}"
        )
    sizes = ", ".join(f"{v['file']} {v['bytes'] / 1e3:,.0f} kB" for v in files.values())
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in check.items() if k != "batch")
    console.print(f"[bold green]exported[/] -> {out}: {sizes}, {MANIFEST_FILE}; check {diffs}")
    return manifest
