"""``rfs steer`` and ``rfs eval``: the run layer around the compiled RFS training step.

``rfs steer`` fine-tunes a saved flow base policy with PPO in one of the steering modes of RFS
(arXiv 2602.01789): ``rfs`` (latent + residual), ``dsrl`` (latent only), ``residual``, or
``base`` (no RL). A run folder (``runs/<task>/<mode>`` by default) receives
    config.json     the resolved config (task, mode, steering, ppo, flow, base path), at start
    metrics.csv     one row per logged iteration, namespaced keys; TensorBoard events next to it
    checkpoints/    orbax saves of the whole TrainingState every ``ppo.ckpt_interval``, + final
    eval.json       the final evaluation: task, mode, episodes, success_rate, return_mean, ...
    curves.png      success vs env steps, one line per run sharing the parent folder
``--resume`` continues from the newest readable checkpoint with the same iteration counter;
Ctrl-C stops after the current iteration and saves a checkpoint first.

Scale (``rfs_jax.sharding``): the envs are split over every device JAX sees (``--num-devices``
picks fewer); ``--distributed`` joins a multi-host run through ``jax.distributed`` (the same
command on every host; process 0 writes the logs, eval.json and curves; orbax writes the
checkpoints collectively, so the run folder must be on a filesystem every host sees).
``--seeds N`` trains seeds ``--seed .. --seed + N - 1`` in one compiled program; eval.json then
holds the mean ``success_rate``, ``success_rate_std`` and ``success_rate_per_seed``.

``rfs eval`` evaluates a steering run's newest checkpoint or a saved base policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from experiments.agents import Algo, agent, algo_of, is_run_config
from experiments.common import console, write_json
from experiments.presets import PRESETS, preset
from rfs_jax.agents.ppo import PPOConfig
from rfs_jax.agents.sac import SACConfig
from rfs_jax.steering import MODES, Mode, SteeringConfig

PresetName = Literal[tuple(PRESETS)]  # the preset names, as choices for --preset

CONFIG_FILE = "config.json"
EVAL_FILE = "eval.json"
CURVES_FILE = "curves.png"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = ".lock"
FORMAT_VERSION = 1
# A resumed run may change its budget, the cadence of logs, evals and saves, and its step sizes
# (the advice after a diverged update is to resume with a lower rate; none of them is part of
# the saved state): ``experiments.agents.AgentSpec.resumable``. Everything else shapes the
# training state or the trajectory and must match the checkpoint.


def read_run_config(path: Path) -> dict:
    """A run's (or base's) config.json as a dict, or a ``ValueError`` that names the damaged file
    and what to do (a garbage or truncated file is not a traceback)."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{path} is not a readable run config ({type(e).__name__}: {e}); the folder is "
            f"damaged: start the run afresh with --overwrite, or pass another --out"
        ) from e
    if not isinstance(config, dict):
        raise ValueError(
            f"{path} is not a run config (a JSON {type(config).__name__}); start the run afresh "
            f"with --overwrite, or pass another --out"
        )
    return config


@dataclasses.dataclass
class SteerArgs:
    """Fine-tune a saved flow base policy with PPO in one compiled step per iteration: RFS
    (latent + residual), DSRL (latent only), residual RL, or the plain base. Writes config.json,
    metrics.csv, TensorBoard events, orbax checkpoints, eval.json and curves.png to --out."""

    task: str | None = None
    """Task; must be the one the base policy was trained for (default: the base's)."""
    base: Path | None = None
    """Folder of the base policy written by `rfs base` (default: runs/<task>/base)."""
    mode: Mode | None = None
    """Steering mode (shortcut for --steering.mode): rfs, dsrl, residual or base."""
    algo: Algo = "ppo"
    """RL algorithm over the steering action: ppo (on-policy, the paper's; --ppo.*) or sac
    (off-policy, with a noise-aliased or plain critic; --sac.*)."""
    out: Path | None = None
    """Run folder (default: runs/<task>/<mode>)."""
    preset: PresetName | None = None
    """Named defaults of --ppo.* and --steering.* (experiments/presets.py); the other flags
    on the command line override them."""
    num_envs: int | None = None
    """Shortcut for --ppo.num-envs (--sac.num-envs with --algo sac)."""
    total_env_steps: int | None = None
    """Shortcut for --ppo.total-env-steps (--sac.total-env-steps with --algo sac)."""
    resume: bool = False
    """Continue the run in --out from its newest readable checkpoint: same iteration counter,
    metrics.csv continues. On the command line the run's saved config.json gives the defaults
    of every other flag, so only what changes (e.g. a larger --total-env-steps) is needed."""
    overwrite: bool = False
    """Start afresh in an --out that already holds a run (its checkpoints and logs are deleted)."""
    seed: int = 0
    """Seed of the run's PRNG key."""
    seeds: int = 1
    """Train this many seeds (--seed, --seed + 1, ...) in one compiled program (vmap over a
    seed axis); seed i gives what a run with --seed i alone gives. eval.json reports the mean
    success over seeds, its std and each seed's."""
    num_devices: int | None = None
    """Devices to split the envs over (default: all that JAX sees, every host's with
    --distributed). --ppo.num-envs and --ppo.minibatch-size must divide by it."""
    distributed: bool = False
    """Join a multi-host run (jax.distributed.initialize): start the same command on every
    host with JAX_COORDINATOR_ADDRESS=host0:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID set (or
    under SLURM / Open MPI, which JAX detects). Process 0 writes the logs; the run folder must
    be on a filesystem every host sees."""
    override: tuple[str, ...] = ()
    """Env config overrides KEY=VALUE for training (dotted for nested fields), on top of the
    base's env config, e.g. ``hand.shaping=potential``; saved in config.json, so `rfs eval`
    of the run uses them too."""
    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep."""
    progress: bool = True
    """Show a progress bar."""
    steering: SteeringConfig = SteeringConfig()
    """Steering head (mode, residual scale, latent bound, ...)."""
    ppo: PPOConfig = PPOConfig()
    """PPO, budget, evaluation and checkpoint cadence (--algo ppo)."""
    sac: SACConfig = SACConfig()
    """SAC, budget, evaluation and checkpoint cadence (--algo sac)."""

    @classmethod
    def from_preset(cls, name: str, **changes) -> SteerArgs:
        """Arguments with preset ``name``'s PPO, SAC and steering settings (Python callers)."""
        p = preset(name)
        return cls(
            **{"preset": name, "ppo": p.ppo, "sac": p.sac, "steering": p.steering, **changes}
        )

    @property
    def agent_cfg(self):
        """The chosen algorithm's config (``ppo`` or ``sac``)."""
        return getattr(self, self.algo)


@dataclasses.dataclass
class EvalArgs:
    """Evaluate a saved policy: a steering run (a folder written by `rfs steer`, at its newest
    readable checkpoint) or a base policy (a folder written by `rfs base`, a0 ~ N(0, I)),
    optionally in a changed env (--override object.shape=sphere)."""

    run: Path = Path("runs/grasp/rfs")
    """Folder written by `rfs steer` or by `rfs base`."""
    episodes: int | None = None
    """Episodes, one per parallel env (default: the run's ppo.eval_episodes; 512 for a base)."""
    deterministic: bool | None = None
    """Mean of the learned dims (default: the run's ppo.deterministic_eval); for a base policy
    folder, the latent mean a0 = 0 instead of a0 ~ N(0, I)."""
    seed: int = 0
    json: Path | None = None
    """Also write the result here as JSON."""
    override: tuple[str, ...] = ()
    """Env config overrides KEY=VALUE (dotted for nested fields), e.g. unseen objects."""


# --------------------------------------------------------------------------- command line


def _flag_value(argv: Sequence[str], name: str) -> str | None:
    value = None
    for i, item in enumerate(argv):
        if item == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif item.startswith(name + "="):
            value = item.partition("=")[2]
    return value


def cli_default(argv: Sequence[str]) -> SteerArgs:
    """The defaults that ``rfs steer ARGV`` parses against: with ``--resume --out DIR`` the
    run's saved config, else ``--preset``'s settings, else the dataclass defaults."""
    out = _flag_value(argv, "--out")
    if "--resume" in argv and out and (Path(out) / CONFIG_FILE).is_file():
        return args_from_config(read_run_config(Path(out) / CONFIG_FILE), Path(out))
    name = _flag_value(argv, "--preset")
    if name in PRESETS:
        return SteerArgs.from_preset(name)
    return SteerArgs()


def args_from_config(config: dict, out: Path) -> SteerArgs:
    """``SteerArgs`` that continue the run whose config.json is ``config``."""
    try:
        return _args_from_config(config, out)
    except (KeyError, TypeError) as e:
        raise ValueError(
            f"{out / CONFIG_FILE} is not the config of a steering run (missing or unexpected "
            f"{e}); start the run afresh with --overwrite, or pass another --out"
        ) from e


def _args_from_config(config: dict, out: Path) -> SteerArgs:
    algo = algo_of(config)
    sections = {algo: agent(algo).config_cls(**config[algo])}
    return SteerArgs(
        algo=algo,
        **sections,
        task=config["task"],
        base=Path(config["base"]),
        out=out,
        preset=config.get("preset"),
        seed=config["seed"],
        seeds=config.get("seeds", 1),
        override=tuple(config.get("overrides", ())),
        resume=True,
        steering=SteeringConfig(**config["steering"]),
    )


# --------------------------------------------------------------------------- steer


@dataclasses.dataclass(frozen=True)
class _Run:
    """A resolved ``rfs steer`` invocation: configs, the loaded base and the run folder."""

    task: str
    env: object
    flow_cfg: object
    base_params: object
    base_dir: Path
    out: Path
    steering: SteeringConfig
    algo: str
    cfg: PPOConfig | SACConfig  # the algorithm's config (``config[algo]``)
    config: dict

    @property
    def agent(self):
        return agent(self.algo)

    @property
    def episode_length(self) -> int:
        return self.env.config.episode_length


def _resolve(args: SteerArgs) -> _Run:
    """Validate the arguments and load the base; fails fast, before anything compiles."""
    mode = args.mode or args.steering.mode
    if mode not in MODES:
        raise ValueError(f"unknown steering mode {mode!r}; expected one of {', '.join(MODES)}")
    steering = dataclasses.replace(args.steering, mode=mode)
    spec = agent(args.algo)
    changes = {"num_envs": args.num_envs, "total_env_steps": args.total_env_steps}
    ppo = dataclasses.replace(args.agent_cfg, **{k: v for k, v in changes.items() if v is not None})
    if args.seeds > 1 and not spec.multi_seed:
        raise ValueError(f"--algo {args.algo} trains one seed per program: pass --seeds 1")
    if args.keep_checkpoints < 1:
        raise ValueError(f"keep_checkpoints must be >= 1, got {args.keep_checkpoints}")
    if args.resume and args.overwrite:
        raise ValueError("--resume continues a run and --overwrite deletes it: pass one")
    if args.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {args.seeds}")

    if args.base is None and args.task is None:
        raise ValueError("pass --base (a folder written by `rfs base`) or --task")
    base_dir = Path(args.base if args.base is not None else Path("runs") / args.task / "base")
    if not (base_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"no base policy at {base_dir} (missing config.json): train one with "
            f"`rfs base --task {args.task or '<task>'} --out {base_dir}`, or pass --base"
        )
    from experiments.base import load_base

    task, env, flow_cfg, base_params, meta = load_base(base_dir, tuple(args.override))
    if args.task is not None and args.task != task:
        raise ValueError(
            f"--task {args.task} does not match the base policy at {base_dir}, trained for "
            f"{task!r}; pass --task {task} or another --base"
        )
    # Mode "base" must not default to the base policy's own folder, runs/<task>/base.
    default_name = "base_mode" if mode == "base" else mode
    out = Path(args.out if args.out is not None else Path("runs") / task / default_name)
    _refuse_base_folder(out, base_dir)
    config = {
        "format_version": FORMAT_VERSION,
        "task": task,
        "mode": mode,
        "base": str(base_dir.expanduser().resolve()),
        "seed": args.seed,
        "seeds": args.seeds,
        "preset": args.preset,
        "algo": args.algo,
        "steering": dataclasses.asdict(steering),
        args.algo: dataclasses.asdict(ppo),
        "flow": dataclasses.asdict(flow_cfg),
        "env_config": dataclasses.asdict(env.config) if args.override else meta["env_config"],
        "overrides": list(args.override),
        "episode_length": env.config.episode_length,
        "env_steps_per_iteration": ppo.env_steps_per_iteration(flow_cfg.exec_horizon),
        "num_iterations": ppo.num_iterations(flow_cfg.exec_horizon),
    }
    return _Run(task, env, flow_cfg, base_params, base_dir, out, steering, args.algo, ppo, config)


def _refuse_base_folder(out: Path, base_dir: Path) -> None:
    """A run folder is never a base policy's folder: writing a run there would replace the
    base's config.json and lose the base."""
    config = out / CONFIG_FILE
    is_base = out.expanduser().resolve() == base_dir.expanduser().resolve()
    if not is_base and config.is_file():
        try:
            is_base = not is_run_config(read_run_config(config))
        except ValueError:
            is_base = False
    if is_base:
        raise ValueError(
            f"--out {out} holds a base policy (written by `rfs base`); a steering run there would "
            f"overwrite it: pass another --out"
        )


def _check_resumable(saved: dict, config: dict, path: Path) -> None:
    """Refuse to resume with settings that change the state or the trajectory."""
    diffs = []
    algo = config["algo"]
    if algo_of(saved) != algo:
        diffs.append("algo")
    for key in ("task", "mode", "seed", "flow", "env_config", "steering"):
        if saved.get(key) != json.loads(json.dumps(config[key])):
            diffs.append(key)
    if saved.get("seeds", 1) != config["seeds"]:  # runs from before --seeds had one
        diffs.append("seeds")
    saved_cfg, cfg = saved.get(algo, {}), json.loads(json.dumps(config[algo]))
    resumable = agent(algo).resumable
    diffs += [
        f"{algo}.{k}"
        for k in sorted(set(saved_cfg) | set(cfg))
        if k not in resumable and saved_cfg.get(k) != cfg.get(k)
    ]
    if diffs:
        raise ValueError(
            f"cannot resume {path.parent}: {', '.join(diffs)} differ from its {path.name}; "
            f"resume with the original settings (only the budget, the log / eval / "
            f"checkpoint cadence and the step sizes may change), or start a new run with "
            f"another --out"
        )


def _run_files(out: Path) -> list[Path]:
    names = (CHECKPOINT_DIR, CHECKPOINT_DIR + "_unreadable", "metrics.csv", EVAL_FILE, CURVES_FILE)
    files = [out / n for n in names if (out / n).exists()]
    return files + sorted(out.glob("events.out.tfevents.*"))


def _check_out_path(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: pass a folder path")


def _check_writable(out: Path, need_bytes: int, keep: int) -> None:
    """A clear error before any training when ``out`` cannot take the run: not writable (a
    read-only folder or file system) or too little free space for its checkpoints."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write_test_"):
            pass
    except OSError as e:
        raise ValueError(
            f"cannot write to --out {out} ({e.strerror or e}): pass a folder you can write to"
        ) from e
    free = shutil.disk_usage(out).free
    if free < need_bytes:
        raise ValueError(
            f"only {free / 1e6:,.0f} MB free under {out}; the run needs about "
            f"{need_bytes / 1e6:,.0f} MB ({keep} checkpoints of the training state, logs and a "
            f"margin): free some space, lower --keep-checkpoints, or pass another --out"
        )


@contextlib.contextmanager
def _run_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder for the whole run, so that a second ``rfs steer``
    on the same ``--out`` (``--resume`` or ``--overwrite`` included) is refused before it
    touches anything. ``fcntl.flock``: the OS drops it when the process ends, ``kill -9``
    included, so a dead run never leaves a stale lock."""
    import fcntl

    handle = open(out / LOCK_FILE, "a+")  # noqa: SIM115 (held until the run ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ValueError(
            f"{out} is in use by another `rfs steer` ({holder}): wait for it to end, or pass "
            f"another --out"
        ) from e
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _validate_folder(args: SteerArgs, run: _Run) -> None:
    """Every refusal that needs no write: ``--out`` a file, a base folder, nothing to resume, a
    resume with other settings, a run there already without ``--resume`` / ``--overwrite``."""
    out = run.out
    _check_out_path(out)
    if args.resume:
        path = out / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no run to resume at {out} (missing {CONFIG_FILE}); start it without --resume "
                f"or point --out at an existing run folder"
            )
        saved = read_run_config(path)
        _check_resumable(saved, run.config, path)
        algo, section = run.algo, saved.get(run.algo, {})
        changed = {
            k: (section.get(k), getattr(run.cfg, k))
            for k in run.agent.step_sizes
            if section.get(k) != getattr(run.cfg, k)
        }
        if changed:
            text = ", ".join(f"{algo}.{k} {a} -> {b}" for k, (a, b) in changed.items())
            console.print(f"resuming with changed step sizes: {text}")
            run.config["resume_changes"] = saved.get("resume_changes", []) + [
                {f"{algo}.{k}": [a, b] for k, (a, b) in changed.items()}
            ]
        elif "resume_changes" in saved:
            run.config["resume_changes"] = saved["resume_changes"]
    else:
        existing = _run_files(out)
        if existing and not args.overwrite:
            raise ValueError(
                f"{out} already holds a run ({', '.join(p.name for p in existing)}): pass "
                f"--resume to continue it, --overwrite to start it afresh, or another --out"
            )


def _prepare_folder(args: SteerArgs, run: _Run, need_bytes: int, stack: contextlib.ExitStack):
    """Validate, then (on a writable folder with room, under the run's lock, which ``stack``
    holds until the run ends) clear an overwritten run and write config.json."""
    out = run.out
    _validate_folder(args, run)
    created = not out.exists()
    try:
        _check_writable(out, need_bytes, args.keep_checkpoints)
        stack.enter_context(_run_lock(out))
    except ValueError:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # leave nothing behind for a run that never started
        raise
    if not args.resume:
        for p in _run_files(out):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    write_json(out / CONFIG_FILE, run.config)


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Turn the first Ctrl-C into a request to stop after the current iteration (the trainer
    then saves a checkpoint); a second one aborts at once. Yields ``should_stop()``."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return
    # SIGTERM too: clusters (SLURM, Kubernetes) send it before they kill a job.
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in signals}

    def handler(signum, frame):
        requested.set()
        for s in signals:
            signal.signal(s, previous[s])
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        console.print(
            f"[yellow]{name}: stopping after this iteration and saving a checkpoint "
            "(again to abort without saving)[/]"
        )

    for s in signals:
        signal.signal(s, handler)
    try:
        yield requested.is_set
    finally:
        for s in signals:
            signal.signal(s, previous[s])


def _progress(enabled: bool):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} env steps"),
        TextColumn("{task.fields[rate]} steps/s"),
        TextColumn("success {task.fields[success]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
    )


def sibling_runs(out: Path) -> list[Path]:
    """Run folders (config.json and metrics.csv) next to ``out``, ``out`` included."""
    parent = out.parent
    runs = [p for p in parent.iterdir() if (p / CONFIG_FILE).is_file()] if parent.is_dir() else []
    runs = [p for p in runs if (p / "metrics.csv").is_file()]
    return sorted(set(runs) | {out})


def steer(
    args: SteerArgs, *, on_iteration: Callable[[int, dict[str, float]], None] | None = None
) -> dict:
    """Run (or resume) one steering run; returns the final evaluation (what eval.json holds).

    ``on_iteration(iteration, record)`` is called with each logged iteration's host metrics.
    Raises ``KeyboardInterrupt`` after saving a checkpoint when interrupted with Ctrl-C.
    """
    if args.distributed:  # before anything touches a device (loading the base does)
        from rfs_jax import sharding

        sharding.initialize_distributed()
    run = _resolve(args)

    import jax

    from rfs_jax import sharding
    from rfs_jax.flow import make_sampler

    env, flow_cfg, ppo, out = run.env, run.flow_cfg, run.cfg, run.out
    make_networks = run.agent.module.make_networks
    abstract_training_state = run.agent.module.abstract_training_state
    if not run.agent.multi_device and args.num_devices is None:
        args = dataclasses.replace(args, num_devices=1)
    mesh = sharding.make_mesh(args.num_devices)
    if mesh.size > 1 and not run.agent.multi_device:
        raise ValueError(f"--algo {run.algo} runs on one device: pass --num-devices 1")
    sharding.check_divisible(mesh.size, num_envs=ppo.num_envs, minibatch_size=ppo.minibatch_size)
    run.config.update(num_devices=mesh.size, num_processes=jax.process_count())
    primary = sharding.is_primary()
    if not primary:  # one process speaks and writes the logs (checkpoints: orbax, collectively)
        console.quiet = True
    _check_out_path(out)

    exec_horizon = flow_cfg.exec_horizon
    sampler = make_sampler(flow_cfg, env.observation_size, env.action_size)
    seeds = [args.seed + i for i in range(args.seeds)]
    key = _run_key(seeds)
    networks = make_networks(
        env, sampler, run.steering, ppo, horizon=flow_cfg.horizon, exec_horizon=exec_horizon
    )
    abstract = abstract_training_state(env, run.episode_length, networks, ppo, key, mesh=mesh)
    # The run's lock is held (by ``folder``) until steer returns or raises.
    folder = contextlib.ExitStack()
    with folder:
        _prepare_folder_on_primary(
            args, run, primary, _bytes_needed(abstract, args.keep_checkpoints), folder
        )
        return _steer_in_folder(
            args, run, mesh, primary, sampler, networks, abstract, seeds, key, on_iteration
        )


def _steer_in_folder(
    args: SteerArgs, run: _Run, mesh, primary, sampler, networks, abstract, seeds, key, on_iteration
) -> dict:
    import jax

    from rfs_jax.checkpoint import Checkpointer
    from rfs_jax.logging import MetricsLogger, plot_curves

    env, flow_cfg, ppo, out = run.env, run.flow_cfg, run.cfg, run.out
    train = run.agent.module.train
    exec_horizon = flow_cfg.exec_horizon
    num_iterations = ppo.num_iterations(exec_horizon)
    per_iteration = ppo.env_steps_per_iteration(exec_horizon)
    ckpt = Checkpointer(out / CHECKPOINT_DIR, max_to_keep=args.keep_checkpoints, log=_warn)
    try:
        initial_state, start = None, 0
        if args.resume:
            restored = ckpt.restore_latest(abstract)
            if restored is None:
                _warn(f"no checkpoint in {ckpt.directory}: starting {out} from iteration 0")
            else:
                start, initial_state = restored
                console.print(
                    f"resuming {out} at iteration {start} ({start * per_iteration:,} env steps)"
                )
        if initial_state is not None and start >= num_iterations:
            console.print(f"{out} already ran {start} of {num_iterations} iterations")
            result = _final_eval(run, networks, initial_state, key, start, seeds)
            if primary:
                write_json(out / EVAL_FILE, result)
                plot_curves(sibling_runs(out), out / CURVES_FILE)
            return result

        seeds_text = f" x {args.seeds} seeds" if args.seeds > 1 else ""
        console.print(
            f"steering {run.task} ({run.steering.mode}) with {ppo.num_envs} envs{seeds_text} on "
            f"{mesh.size} device(s): {num_iterations} iterations of {per_iteration:,} env steps "
            f"-> {out}"
        )
        logger = (
            MetricsLogger(out, resume_iteration=start if args.resume else None)
            if primary
            else contextlib.nullcontext()
        )

        def checkpoint_fn(it, state):
            ckpt.save(  # every process: orbax writes each one's shards of a multi-host state
                it,
                state,
                config=run.config,
                finite=run.agent.finite_parts(state),
            )

        with (
            logger,
            _deferred_interrupt() as should_stop,
            _progress(args.progress and primary) as progress,
        ):
            bar = progress.add_task(
                run.steering.mode,
                total=num_iterations * per_iteration,
                completed=start * per_iteration,
                rate="-",
                success="-",
            )

            def progress_fn(it, record):
                if primary:
                    logger.write(record)
                success = f"{record['env/success']:.2f}"
                if "eval/success_rate" in record:
                    success += f" (eval {record['eval/success_rate']:.2f})"
                progress.update(
                    bar,
                    completed=record["env_steps"],
                    rate=f"{record['perf/env_steps_per_s']:,.0f}",
                    success=success,
                )
                if on_iteration is not None:
                    on_iteration(it, record)

            state, history = train(
                env,
                run.episode_length,
                sampler,
                run.base_params,
                run.steering,
                ppo,
                key,
                horizon=flow_cfg.horizon,
                exec_horizon=exec_horizon,
                progress_fn=progress_fn,
                checkpoint_fn=checkpoint_fn,
                initial_state=initial_state,
                should_stop=_on_every_process(should_stop),
                mesh=mesh,
            )
            iteration = int(np.asarray(jax.device_get(state.iteration)).reshape(-1)[0])
        if iteration < num_iterations:
            console.print(
                f"[yellow]stopped at iteration {iteration} of {num_iterations}; checkpoint "
                f"saved in {ckpt.directory}. Continue with `rfs steer --out {out} --resume`[/]",
                soft_wrap=True,
            )
            raise KeyboardInterrupt
    finally:
        ckpt.close()

    final = history[-1]
    result = {
        "task": run.task,
        "mode": run.steering.mode,
        "episodes": ppo.eval_episodes,
        **_seed_summary(
            final["eval/success_rate"],
            final["eval/return_mean"],
            [final.get(f"seed_{i}/eval/success_rate") for i in range(len(seeds))],
            [final.get(f"seed_{i}/eval/return_mean") for i in range(len(seeds))],
            seeds,
        ),
        "env_steps": int(final["env_steps"]),
        "iteration": iteration,
        "deterministic": ppo.deterministic_eval,
        "run": str(out),
    }
    if primary:
        write_json(out / EVAL_FILE, result)
        plot_curves(sibling_runs(out), out / CURVES_FILE)
    spread = (
        f" +- {result['success_rate_std']:.3f} over {len(seeds)} seeds" if len(seeds) > 1 else ""
    )
    console.print(
        f"[bold green]{run.steering.mode} success {result['success_rate']:.3f}{spread}[/] "
        f"(return {result['return_mean']:.3f}, {result['env_steps']:,} env steps) -> {out}"
    )
    return result


def _run_key(seeds: Sequence[int]):
    """The run's key: ``jax.random.key(seed)`` for one seed, else ``[S]`` keys, each the key a
    single-seed run with that seed uses (so seed i of a multi-seed run reproduces it)."""
    import jax
    import jax.numpy as jnp

    if len(seeds) == 1:
        return jax.random.key(seeds[0])
    return jnp.stack([jax.random.key(s) for s in seeds])


def _on_every_process(should_stop: Callable[[], bool]) -> Callable[[], bool]:
    """In a multi-host run, stop every process when any of them was interrupted (one tiny
    collective per iteration), else the others would wait for it at the next one."""
    import jax

    if jax.process_count() == 1:
        return should_stop
    from jax.experimental import multihost_utils

    def any_process() -> bool:
        flags = multihost_utils.process_allgather(np.int32(should_stop()))
        return bool(np.max(flags))

    return any_process


def _prepare_folder_on_primary(
    args: SteerArgs, run: _Run, primary: bool, need_bytes: int, stack: contextlib.ExitStack
) -> None:
    """``_prepare_folder`` on process 0 only; in a multi-host run the others learn whether it
    refused the folder (and then fail too, instead of waiting for it at the first collective)."""
    import jax

    error = None
    if primary:
        try:
            _prepare_folder(args, run, need_bytes, stack)
        except (ValueError, FileNotFoundError) as e:
            error = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
        if failed and error is None:
            raise ValueError(f"process 0 refused the run folder {run.out}: see its output")
    if error is not None:
        raise error


def _bytes_needed(abstract, keep: int) -> int:
    """Disk a run needs: ``keep`` checkpoints of the training state plus one being written, and
    64 MB for config, logs, TensorBoard events and curves."""
    import jax

    def nbytes(a) -> int:
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            return 8 * int(np.prod(a.shape))  # saved as its uint32 key data
        return int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize

    state = sum(nbytes(a) for a in jax.tree.leaves(abstract))
    return (keep + 1) * state + 64 * 2**20


def _seed_summary(
    success: float,
    ret: float,
    success_per_seed: Sequence[float | None],
    return_per_seed: Sequence[float | None],
    seeds: Sequence[int],
) -> dict:
    """``success_rate`` / ``return_mean`` (means over seeds), their per-seed values and the
    success rate's standard deviation across seeds (population std; 0 for one seed)."""
    if len(seeds) == 1:
        success_per_seed, return_per_seed = [success], [ret]
    return {
        "success_rate": success,
        "return_mean": ret,
        "success_rate_std": float(np.std(success_per_seed)),
        "success_rate_per_seed": [float(x) for x in success_per_seed],
        "return_mean_per_seed": [float(x) for x in return_per_seed],
        "seeds": list(seeds),
    }


def _warn(message: str) -> None:
    # soft_wrap: no line breaks inserted into the paths, so they can be copied.
    console.print(f"[yellow]{message}[/]", soft_wrap=True)


def _final_eval(run: _Run, networks, state, key, iteration: int, seeds: list[int]) -> dict:
    """The evaluation ``train`` runs at iteration ``iteration`` (same key, per seed), for a
    finished run."""
    import jax

    def eval_key(k):
        return jax.random.fold_in(jax.random.split(k)[1], iteration)

    metrics = _evaluate_state(
        run.env,
        run.episode_length,
        networks,
        run.base_params,
        state,
        run.cfg.eval_episodes,
        run.cfg.deterministic_eval,
        eval_key(key) if len(seeds) == 1 else jax.vmap(eval_key)(key),
        seeds,
    )
    return {
        "task": run.task,
        "mode": run.steering.mode,
        "episodes": run.cfg.eval_episodes,
        **metrics,
        "env_steps": int(np.asarray(jax.device_get(state.env_steps)).reshape(-1)[0]),
        "iteration": iteration,
        "deterministic": run.cfg.deterministic_eval,
        "run": str(run.out),
    }


def _evaluate_state(
    env, episode_length, networks, base_params, state, episodes, deterministic, key, seeds
) -> dict:
    """Success of ``state`` (with a leading seed axis when ``len(seeds) > 1``; ``key`` is then
    one key for all seeds or ``[S]`` keys, one each)."""
    import functools

    import jax

    from rfs_jax.agents.ppo import num_seeds
    from rfs_jax.agents.sac import SACNetworks
    from rfs_jax.agents.td3bc import TD3BCNetworks
    from rfs_jax.evaluation import make_evaluator

    algo = "ppo"
    if isinstance(networks, SACNetworks):
        algo = "sac"
    elif isinstance(networks, TD3BCNetworks):
        algo = "td3bc"
    make_policy = agent(algo).module.make_policy
    policy = functools.partial(make_policy(networks, base_params), deterministic=deterministic)
    run = make_evaluator(env, episode_length, policy, episodes)
    if len(seeds) > 1:
        run = jax.vmap(run, in_axes=(0, None if num_seeds(key) is None else 0))
    m = jax.device_get(run(state.policy_params, key))
    success = np.atleast_1d(m["eval/success_rate"]).astype(float)
    ret = np.atleast_1d(m["eval/return_mean"]).astype(float)
    return _seed_summary(
        float(np.mean(success)), float(np.mean(ret)), list(success), list(ret), seeds
    )


# --------------------------------------------------------------------------- eval


class PolicyState(NamedTuple):
    """What acting needs of a training state (``TrainingState``'s fields of the same names)."""

    obs_stats: object
    steering_params: object
    env_steps: object

    @property
    def policy_params(self):
        return self.obs_stats, self.steering_params


def load_run_policy(run_dir: Path, env, flow_cfg):
    """``(policy state, networks, iteration)`` of a steering run's newest readable checkpoint,
    on one device whatever the devices (or hosts) it trained on. ``env`` and ``flow_cfg`` are its
    base's; ``env`` may differ from the training env (other object shapes or sizes): only the
    policy's params and normaliser are restored (``PolicyState``), not the env state."""
    from rfs_jax.checkpoint import Checkpointer
    from rfs_jax.flow import make_sampler
    from rfs_jax.sharding import make_mesh

    config = read_run_config(run_dir / CONFIG_FILE)
    spec = agent(algo_of(config))
    make_networks = spec.module.make_networks
    abstract_training_state = spec.module.abstract_training_state
    steering = SteeringConfig(**config["steering"])
    ppo = spec.config_cls(**config[spec.name])
    sampler = make_sampler(flow_cfg, env.observation_size, env.action_size)
    networks = make_networks(
        env, sampler, steering, ppo, horizon=flow_cfg.horizon, exec_horizon=flow_cfg.exec_horizon
    )
    seeds = [config["seed"] + i for i in range(config.get("seeds", 1))]
    abstract = abstract_training_state(
        env, env.config.episode_length, networks, ppo, _run_key(seeds), mesh=make_mesh(1)
    )
    with Checkpointer(run_dir / CHECKPOINT_DIR, log=_warn) as ckpt:
        if not ckpt.steps():
            raise FileNotFoundError(
                f"no checkpoint in {ckpt.directory}: the run saved none yet (resume it with "
                f"`rfs steer --out {run_dir} --resume`)"
            )
        iteration, parts = ckpt.restore_latest(
            abstract, part=lambda s: (s.obs_stats, s.steering_params, s.env_steps)
        )
    return PolicyState(*parts), networks, iteration


def evaluate_run(
    run_dir: Path,
    *,
    episodes: int | None = None,
    deterministic: bool | None = None,
    seed: int = 0,
    overrides: tuple[str, ...] = (),
) -> dict:
    """Success of a saved steering run (newest readable checkpoint) or base policy folder."""
    if episodes is not None and episodes <= 0:
        raise ValueError(f"--episodes must be positive, got {episodes}")
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"nothing to evaluate at {run_dir} (missing {CONFIG_FILE}): pass a folder written by "
            f"`rfs steer` or `rfs base`"
        )
    config = read_run_config(config_path)
    from experiments.base import evaluate_base, load_base

    if not is_run_config(config):  # a base policy folder (rfs_jax.flow.save_flow)
        task, env, flow_cfg, params, _ = load_base(run_dir, overrides)
        result = evaluate_base(
            task,
            env,
            flow_cfg,
            params,
            512 if episodes is None else episodes,
            seed,
            bool(deterministic),
        )
        return {**result, "run": str(run_dir), "overrides": list(overrides)}

    import jax

    base_dir = Path(config["base"])
    if not (base_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"the base policy of {run_dir} is gone from {base_dir}: restore it there (the run's "
            f"{CONFIG_FILE} names it)"
        )
    # The run's own training overrides first, then the evaluation's.
    overrides = tuple(config.get("overrides", ())) + tuple(overrides)
    task, env, flow_cfg, base_params, _ = load_base(base_dir, overrides)
    state, networks, iteration = load_run_policy(run_dir, env, flow_cfg)
    spec = agent(algo_of(config))
    steering, ppo = networks.steering.cfg, spec.config_cls(**config[spec.name])
    seeds = [config["seed"] + i for i in range(config.get("seeds", 1))]
    episodes = ppo.eval_episodes if episodes is None else episodes
    deterministic = ppo.deterministic_eval if deterministic is None else deterministic
    metrics = _evaluate_state(
        env,
        env.config.episode_length,
        networks,
        base_params,
        state,
        episodes,
        deterministic,
        jax.random.key(seed),  # the same episodes for every seed of a multi-seed run
        seeds,
    )
    return {
        "task": task,
        "mode": steering.mode,
        "episodes": episodes,
        **metrics,
        "env_steps": int(np.asarray(state.env_steps).reshape(-1)[0]),
        "iteration": iteration,
        "deterministic": deterministic,
        "run": str(run_dir),
        "overrides": list(overrides),
    }


def evaluate(args: EvalArgs) -> dict:
    result = evaluate_run(
        args.run,
        episodes=args.episodes,
        deterministic=args.deterministic,
        seed=args.seed,
        overrides=args.override,
    )
    where = f" at iteration {result['iteration']}" if "iteration" in result else ""
    console.print(
        f"[bold green]{result['task']} {result['mode']}{where}: success "
        f"{result['success_rate']:.3f}[/] (return {result['return_mean']:.3f}, "
        f"{result['episodes']} episodes)"
    )
    if args.json:
        write_json(args.json, result)
    return result
