"""``rfs base`` and the base-policy part of ``rfs eval``: behaviour cloning of the flow policy on
demonstrations, then its success in the batched env with ``a0 ~ N(0, I)``."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs.config import apply_overrides
from envs.probes import PROBES
from experiments.common import console, parse_overrides, write_json
from rfs_jax.demos import check_demos_match, episodes_arrays, load_demos
from rfs_jax.evaluation import make_evaluator
from rfs_jax.flow import (
    FlowConfig,
    chunks_from_episodes,
    load_flow,
    make_sampler,
    plot_loss,
    save_flow,
    train_flow,
)


@dataclasses.dataclass
class BaseArgs:
    """Train the flow-matching base policy on demonstrations, save it, plot its loss and
    evaluate it in the batched env (a0 ~ N(0, I))."""

    task: str = "grasp"
    demos: Path | None = None
    """Demonstrations from `rfs demos` (default: runs/<task>/demos.hdf5)."""
    out: Path | None = None
    """Output folder: orbax checkpoint, config.json, loss.png, eval.json (default:
    runs/<task>/base)."""
    flow: FlowConfig = FlowConfig()
    """Flow policy and training settings."""
    max_demos: int | None = None
    """Train on only the first N demonstrations of the file (fewer demos, weaker base)."""
    eval_episodes: int = 512
    """Episodes of the evaluation (0 to skip it)."""
    seed: int = 0
    override: tuple[str, ...] = ()
    """Env config overrides KEY=VALUE; they must match the demos' env config."""


def env_for_demos(task: str, demos, overrides: tuple[str, ...] = ()):
    """The env the demos were collected in (their saved config), plus any overrides; an override
    that changes the config the demos were made with is refused."""
    config = envs.config_from_dict(task, demos.env_config)
    env = envs.make(task, config, **parse_overrides(overrides))
    check_demos_match(demos, env)
    return env


def base_policy_fn(cfg: FlowConfig, env, params, deterministic: bool = False):
    """``policy(params, obs [B, O], key) -> chunk [B, H_exec, A]`` of the plain base policy;
    ``deterministic`` uses the latent's mean ``a0 = 0`` instead of ``a0 ~ N(0, I)``."""
    sample = make_sampler(cfg, env.observation_size, env.action_size)

    def policy(params, obs, key):
        a0 = jax.random.normal(key, (obs.shape[0], cfg.horizon, env.action_size))
        if deterministic:
            a0 = jnp.zeros_like(a0)
        return sample(params, obs, a0)[:, : cfg.exec_horizon]

    return policy


def evaluate_base(
    task, env, cfg, params, episodes: int, seed: int, deterministic: bool = False
) -> dict:
    policy = base_policy_fn(cfg, env, params, deterministic)
    run = make_evaluator(env, env.config.episode_length, policy, episodes)
    t0 = time.time()
    m = jax.device_get(run(params, jax.random.PRNGKey(seed)))
    return {
        "task": task,
        "mode": "base",
        "episodes": episodes,
        "deterministic": deterministic,
        "success_rate": float(m["eval/success_rate"]),
        "return_mean": float(m["eval/return_mean"]),
        "eval_seconds": time.time() - t0,
    }


def base(args: BaseArgs) -> dict:
    args = dataclasses.replace(
        args,
        demos=args.demos or Path("runs") / args.task / "demos.hdf5",
        out=args.out or Path("runs") / args.task / "base",
    )
    demos = load_demos(args.demos, task=args.task)
    env = env_for_demos(args.task, demos, args.override)
    if args.max_demos is not None:
        if args.max_demos <= 0:
            raise ValueError(f"max_demos must be positive, got {args.max_demos}")
        demos.episodes = demos.episodes[: args.max_demos]
    obs, chunks = chunks_from_episodes(episodes_arrays(demos), args.flow.horizon)
    console.print(
        f"training the flow base on {len(demos.episodes)} demos ({len(obs)} chunks of "
        f"{args.flow.horizon}x{env.action_size}) for {args.flow.num_updates} updates ..."
    )
    t0 = time.time()
    params, history = train_flow(args.flow, obs, chunks, jax.random.PRNGKey(args.seed))
    train_s = time.time() - t0
    final_loss = float(np.mean(history["loss"][-100:]))
    meta = {
        "task": args.task,
        "env_config": demos.env_config,
        "demos": str(args.demos),
        "num_demos": len(demos.episodes),
        "expert_success": demos.expert_success,
        "train_seconds": train_s,
        "final_loss": final_loss,
    }
    save_flow(args.out, args.flow, params, meta)
    plot_loss(history, args.out / "loss.png")
    console.print(f"trained in {train_s:.0f} s, final loss {final_loss:.4f} -> {args.out}")
    result = {"train_seconds": train_s, "final_loss": final_loss}
    if args.eval_episodes > 0:
        console.print(f"evaluating the base policy over {args.eval_episodes} episodes ...")
        ev = evaluate_base(args.task, env, args.flow, params, args.eval_episodes, args.seed + 1)
        write_json(args.out / "eval.json", ev)
        console.print(
            f"[bold green]base success {ev['success_rate']:.3f}[/] -> {args.out}/eval.json"
        )
        result.update(ev)
    return result


def make_task_env(task: str, env_config: dict | None = None, overrides: tuple[str, ...] = ()):
    """The single-instance env of a hand task (``envs.tasks()``) or of a probe task
    (``envs.probes.PROBES``, for tests), from a saved config dict plus KEY=VALUE overrides.
    Every such env has ``env.config.episode_length``."""
    if task in PROBES:
        env_cls, default = PROBES[task]
        config = apply_overrides(default, env_config or {})
        return env_cls(apply_overrides(config, parse_overrides(overrides)))
    if task not in envs.tasks():
        raise ValueError(
            f"unknown task {task!r}; valid tasks: {', '.join(envs.tasks())} "
            f"(probes for tests: {', '.join(PROBES)})"
        )
    config = envs.config_from_dict(task, env_config) if env_config else None
    return envs.make(task, config, **parse_overrides(overrides))


def load_base(directory: Path, overrides: tuple[str, ...] = ()):
    """(task, env, cfg, params, meta) of a saved base policy, with the env it was trained for
    (its saved config, plus ``overrides``)."""
    cfg, params, meta = load_flow(directory)
    task = meta.get("task")
    if task is None or "env_config" not in meta:
        raise ValueError(
            f"{directory}/config.json lacks the task or env config; retrain with `rfs base`"
        )
    env = make_task_env(task, meta["env_config"], overrides)
    return task, env, cfg, params, meta
