"""The host loop every agent shares: compiled iterations, with logging, evaluation, NaN guard,
checkpoints and a graceful stop between them.

An agent (``rfs_jax.agents.ppo``, ``rfs_jax.agents.sac``) supplies one compiled training
iteration ``train_step(state, base_params) -> (state, metrics)`` and an evaluator; this loop only
decides when to evaluate, log and save. Nothing here knows which algorithm runs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from rfs_jax.types import Array, Params, PRNGKey


class NonFiniteError(FloatingPointError):
    """A training metric became NaN or infinite; training stops before anything is saved."""


@dataclasses.dataclass(frozen=True)
class Cadence:
    """When the loop evaluates, logs and saves (fields of every agent's config)."""

    num_iterations: int
    eval_interval: int
    log_interval: int
    ckpt_interval: int

    @classmethod
    def of(cls, cfg, exec_horizon: int) -> Cadence:
        return cls(
            num_iterations=cfg.num_iterations(exec_horizon),
            eval_interval=cfg.eval_interval,
            log_interval=cfg.log_interval,
            ckpt_interval=cfg.ckpt_interval,
        )


def check_finite(record: dict[str, float], iteration: int) -> None:
    """Raise ``NonFiniteError`` naming the first non-finite metric of a host record, with a
    suggestion. Env metrics come first (a NaN there is the cause, not a symptom), then losses."""
    bad = [k for k, v in record.items() if not np.isfinite(v)]
    if not bad:
        return
    bad.sort(key=lambda k: (not k.startswith(("env/", "reward/")), "loss" not in k, k))
    name = bad[0]
    if name.startswith(("env/", "reward/")):
        hint = (
            "the env produced a non-finite reward or observation: check its config (unstable "
            "physics: actuator gains, damping, dt) with `rfs bench`, or try another --seed"
        )
    else:
        hint = (
            "the update diverged: continue from the last (finite) checkpoint with a lower "
            "step size, `rfs steer --out RUN --resume --ppo.policy-lr X` (also "
            "--ppo.value-lr, --ppo.max-grad-norm; --sac.actor-lr, --sac.critic-lr for SAC), "
            "or start afresh with a reward scaling below 1"
        )
    others = f" (also {', '.join(bad[1:])})" if len(bad) > 1 else ""
    raise NonFiniteError(
        f"non-finite {name} = {record[name]} at iteration {iteration}{others}; {hint}"
    )


def host_int(x: Array) -> int:
    """A replicated counter (``[]``, or ``[S]`` equal ones under a seed axis) as a host int."""
    return int(np.asarray(jax.device_get(x)).reshape(-1)[0])


# Per-seed values are kept for these namespaces (the curves and success statistics); the
# others (losses, gradient norms, reward terms) are logged as their mean over seeds.
_PER_SEED = ("env/", "eval/")


def host_record(metrics: dict[str, np.ndarray], seeds: int | None) -> dict[str, float]:
    record = {k: float(np.mean(v)) for k, v in metrics.items()}
    if seeds is not None:
        for k, v in metrics.items():
            if k.startswith(_PER_SEED):
                record.update({f"seed_{i}/{k}": float(v[i]) for i in range(seeds)})
    return record


def run_iterations(
    train_step: Callable[[Any, Params], tuple[Any, dict[str, Array]]],
    state: Any,
    base_params: Params,
    *,
    cadence: Cadence,
    evaluate: Callable[[Any, int], dict[str, Array]],
    seeds: int | None = None,
    progress_fn: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint_fn: Callable[[int, Any], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[Any, list[dict[str, float]]]:
    """Run iterations ``state.iteration + 1 .. cadence.num_iterations``.

    ``evaluate(state, iteration)`` returns device ``eval/*`` metrics (the agent folds the
    iteration into its evaluation key, so a resumed run evaluates on the same episodes).
    ``state`` must have ``iteration`` and ``env_steps`` counters. Returns ``(state, history)``;
    see ``rfs_jax.agents.ppo.train`` for the history's keys. Raises ``NonFiniteError`` before
    the checkpoint hook of an iteration whose logged metrics are not finite.
    """
    history: list[dict[str, float]] = []
    start = host_int(state.iteration)
    t_start = time.perf_counter()
    t_last, steps_last = t_start, host_int(state.env_steps)
    num_iterations = cadence.num_iterations
    for it in range(start + 1, num_iterations + 1):
        state, metrics = train_step(state, base_params)
        last = it == num_iterations
        evaluate_now = last or (cadence.eval_interval and it % cadence.eval_interval == 0)
        if evaluate_now:
            metrics = {**metrics, **evaluate(state, it)}
        if last or evaluate_now or it % cadence.log_interval == 0:
            record = host_record(jax.device_get(metrics), seeds)
            now, env_steps = time.perf_counter(), host_int(state.env_steps)
            record["iteration"] = float(it)
            record["env_steps"] = float(env_steps)
            # Throughput of the whole program: every seed's env steps.
            record["perf/env_steps_per_s"] = (
                (env_steps - steps_last) * (seeds or 1) / max(now - t_last, 1e-9)
            )
            record["perf/wall_s"] = now - t_start
            t_last, steps_last = now, env_steps
            check_finite(record, it)
            history.append(record)
            if progress_fn is not None:
                progress_fn(it, record)
        stop = should_stop is not None and should_stop()
        if checkpoint_fn is not None and (
            last or stop or (cadence.ckpt_interval and it % cadence.ckpt_interval == 0)
        ):
            checkpoint_fn(it, state)
        if stop:
            break
    return state, history


def split_eval_key(key: PRNGKey, seeds: int | None) -> tuple[PRNGKey, PRNGKey]:
    """``(key_init, key_eval)`` of a run's key (or ``[S]`` keys)."""
    if seeds is None:
        return tuple(jax.random.split(key))
    pairs = jax.vmap(jax.random.split)(key)
    return pairs[:, 0], pairs[:, 1]
