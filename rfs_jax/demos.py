"""Demonstrations: batched collection with a scripted expert, robomimic-style HDF5 files.

File layout (robomimic convention): ``data/demo_<k>/{obs, actions, rewards, dones}`` with
``num_samples`` and ``success`` attributes per demo; ``data`` carries ``task``, ``env_config``
(the task config as JSON), ``total`` and the expert's measured ``expert_success``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import h5py
import jax
import numpy as np

from envs.wrappers import batch_keys, wrap


@dataclasses.dataclass
class Episode:
    obs: np.ndarray  # [T, O]
    actions: np.ndarray  # [T, A]
    rewards: np.ndarray  # [T]
    dones: np.ndarray  # [T]
    success: bool
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    """Further per-episode datasets (``rfs corrections``: base and residual actions, ...)."""


@dataclasses.dataclass
class DemoSet:
    task: str
    env_config: dict[str, Any]
    episodes: list[Episode]
    expert_success: float | None = None

    @property
    def obs_size(self) -> int:
        return int(self.episodes[0].obs.shape[-1])

    @property
    def action_size(self) -> int:
        return int(self.episodes[0].actions.shape[-1])


def make_batched(env, num_envs: int):
    """Jitted ``reset(key)`` and ``step(state, actions)`` of ``num_envs`` wrapped envs.

    Collection, evaluation and the tests use these same two programs, so JAX's persistent
    cache compiles each batched MJX step once per batch size."""
    benv = wrap(env, env.config.episode_length)
    reset = jax.jit(lambda key: benv.reset(batch_keys(key, num_envs)))
    return reset, jax.jit(benv.step)


def collect_demos(
    task: str,
    env,
    expert,
    num: int,
    key: jax.Array,
    *,
    num_envs: int = 64,
    keep_failures: bool = False,
    progress: bool = True,
    max_episodes: int | None = None,
) -> DemoSet:
    """Collect ``num`` episodes (successful ones only unless ``keep_failures``) in batch.

    The expert's success rate is recorded in the result, over every episode begun before the
    ``num``-th demo was kept: those still running then are stepped to their end and counted
    (not kept). Counting only the episodes finished by then would favour successes, which end
    early while failures run to the time limit (100 demos from 128 envs would all be
    successes before the first failure ended)."""
    if num <= 0:
        raise ValueError(f"num must be positive, got {num}")
    reset, step = make_batched(env, num_envs)
    act = jax.jit(jax.vmap(expert.act))
    key, k_env, k_pol = jax.random.split(key, 3)
    state = reset(k_env)
    carry = jax.vmap(expert.init)(jax.random.split(k_pol, num_envs))
    current: list[dict[str, list]] = [_empty() for _ in range(num_envs)]
    kept: list[Episode] = []
    finished = successes = 0
    max_episodes = max_episodes or 50 * num
    counting = np.ones(num_envs, bool)  # this env's running episode is still to be counted
    with _progress(progress, num) as bar:
        task_id = bar.add_task("collecting", total=num, expert="-")
        while counting.any() and finished < max_episodes:
            draining = len(kept) >= num
            key, k_act = jax.random.split(key)
            carry, action = act(carry, state, jax.random.split(k_act, num_envs))
            nxt = step(state, action)
            obs, action, reward, done, success = jax.device_get(
                (state.obs, action, nxt.reward, nxt.done, nxt.metrics["success"])
            )
            state = nxt
            for b in range(num_envs):
                ep = current[b]
                ep["obs"].append(obs[b])
                ep["actions"].append(action[b])
                ep["rewards"].append(reward[b])
                ep["dones"].append(done[b])
                if done[b] > 0:
                    ok = bool(success[b] > 0)
                    if counting[b]:
                        finished += 1
                        successes += ok
                    if (ok or keep_failures) and len(kept) < num:
                        kept.append(
                            Episode(*(np.asarray(ep[k], np.float32) for k in ep), success=ok)
                        )
                    current[b] = _empty()
                    # Once the demos are in, the episodes begun from now on are not counted.
                    counting[b] &= not (draining or len(kept) >= num)
            bar.update(
                task_id,
                completed=len(kept),
                expert=f"expert {successes}/{finished} ok" if finished else "-",
            )
    if len(kept) < num:
        raise RuntimeError(
            f"only {len(kept)} of {num} demos after {finished} episodes "
            f"(expert success {successes / max(finished, 1):.2f}); check the expert or the task"
        )
    return DemoSet(task, env_config_dict(env), kept, successes / max(finished, 1))


def _empty() -> dict[str, list]:
    return {"obs": [], "actions": [], "rewards": [], "dones": []}


def _progress(enabled: bool, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[expert]}"),
        TimeElapsedColumn(),
        disable=not enabled,
    )


def env_config_dict(env) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(env.config)))


def save_demos(path: str | Path, demos: DemoSet) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        data.attrs["task"] = demos.task
        data.attrs["env_config"] = json.dumps(demos.env_config, sort_keys=True)
        data.attrs["total"] = int(sum(len(e.actions) for e in demos.episodes))
        if demos.expert_success is not None:
            data.attrs["expert_success"] = float(demos.expert_success)
        for k, ep in enumerate(demos.episodes):
            g = data.create_group(f"demo_{k}")
            g.attrs["num_samples"] = len(ep.actions)
            g.attrs["success"] = bool(ep.success)
            for name in ("obs", "actions", "rewards", "dones"):
                g.create_dataset(name, data=getattr(ep, name), compression="gzip")
            for name, value in ep.extras.items():
                g.create_dataset(name, data=value, compression="gzip")
    tmp.replace(path)  # a crash mid-write never leaves a half-written demo file behind
    return path


_FIELDS = ("obs", "actions", "rewards", "dones")


class DemoMismatchError(ValueError):
    """A demo file does not belong to the env it is used with."""


def load_demos(path: str | Path, env=None, task: str | None = None) -> DemoSet:
    """Read a demo file; with ``env`` (and ``task``), check it was made for that env."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"demo file {path} does not exist; make one with `rfs demos`")
    try:
        with h5py.File(path, "r") as f:
            data = f["data"]
            file_task = str(data.attrs["task"])
            config = json.loads(data.attrs["env_config"])
            expert_success = data.attrs.get("expert_success")
            names = sorted(data.keys(), key=lambda n: int(n.split("_")[1]))
            episodes = [
                Episode(
                    *(np.asarray(data[n][k]) for k in _FIELDS),
                    success=bool(data[n].attrs.get("success", True)),
                    extras={k: np.asarray(v) for k, v in data[n].items() if k not in _FIELDS},
                )
                for n in names
            ]
    except (OSError, KeyError) as e:
        raise DemoMismatchError(
            f"{path} is not a readable rfs demo file ({e}); re-collect it with `rfs demos`"
        ) from e
    demos = DemoSet(file_task, config, episodes, expert_success)
    if not episodes:
        raise DemoMismatchError(f"{path} holds no demonstrations")
    if task is not None and file_task != task:
        raise DemoMismatchError(f"{path} holds demos for task {file_task!r}, not {task!r}")
    if env is not None:
        check_demos_match(demos, env, path)
    return demos


def check_demos_match(demos: DemoSet, env, path: Any = "demos") -> None:
    """Raise ``DemoMismatchError`` naming what differs between the demos and ``env``."""
    want = env_config_dict(env)
    diffs = _diff(demos.env_config, want)
    if diffs:
        shown = "; ".join(diffs[:8])
        raise DemoMismatchError(
            f"{path} was collected with a different env config ({shown}). Collect demos for "
            "this config with `rfs demos`, or use the config the demos were made with."
        )
    obs = env.observation_size
    if demos.obs_size != obs or demos.action_size != env.action_size:
        raise DemoMismatchError(
            f"{path} has obs/action sizes {demos.obs_size}/{demos.action_size}, the env "
            f"{obs}/{env.action_size}"
        )


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        a, b = list(a), list(b)
    if a != b:
        return [f"{prefix[:-1]}: file {a!r} vs env {b!r}"]
    return []


def episodes_arrays(demos: DemoSet) -> list[tuple[np.ndarray, np.ndarray]]:
    """(obs, actions) per episode, the input of ``rfs_jax.flow.chunks_from_episodes``."""
    return [(e.obs, e.actions) for e in demos.episodes]
