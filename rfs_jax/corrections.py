"""Simulated corrections of a deployed policy: the data of offline RFS (arXiv 2602.01789, 2).

In the paper a person watches the deployed policy on the real robot and takes over when it
fails; TD3+BC then learns the steering action from those trajectories. Here the "real" robot
is the task under a deployment shift (env overrides the policy was not trained on) and the
person is a scripted corrector: the task's expert, which takes over an episode once the
policy's progress stalls or collapses and drives it to the end.

The progress signal is the task's own shaping potential, ``sum(state.info["potential"])`` (the
scaled reach / contact / lift / ... terms of this step, the same in every task). The corrector
takes over at step ``t >= earliest`` when the potential has not risen by ``min_rise`` above its
best for ``window`` steps (a stall), or has fallen ``drop`` below its best (the object slipping
out of the hand). On the takeover step the expert starts a fresh plan from wherever the hand is.

Every control step records the observation, the base action ``a_b`` the deployed policy would
have sent (its chunk, computed at each decision as in deployment), the residual ``a_r`` and the
executed action ``a_exec = a_b + a_r`` (``a_r = 0`` where the policy is in control, ``a_exec`` is
the expert's action where the corrector is), so ``a_b + a_r == a_exec`` holds exactly. Episodes
run without auto-reset (the first episode of each env, held once it ends), so the terminal
observation is kept for the last decision's next observation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import Env
from brax.envs.wrappers.training import EpisodeWrapper, VmapWrapper

from envs.wrappers import batch_keys, hold_ended
from rfs_jax.demos import DemoSet, Episode, env_config_dict
from rfs_jax.types import Array, Params, PRNGKey

# Per-step fields a corrections file holds besides obs, actions (executed), rewards and dones.
EXTRA_FIELDS = ("base_actions", "residual_actions", "corrected")


@dataclasses.dataclass(frozen=True)
class CorrectorConfig:
    """When the scripted corrector takes over (control steps and potential units)."""

    earliest: int = 20
    """No takeover before this control step of the episode."""
    window: int = 25
    """Stall: the potential has not risen by ``min_rise`` above its best for this many steps.
    Longer than a task's success hold (grasp: 20 steps), so holding still is not a stall."""
    min_rise: float = 0.05
    """A rise smaller than this is not progress."""
    drop: float = 0.5
    """Collapse: the potential is this far below its best of the episode."""

    def __post_init__(self):
        if self.earliest < 0 or self.window < 1:
            raise ValueError(
                f"corrector earliest must be >= 0 and window >= 1, got {self.earliest}, "
                f"{self.window}"
            )
        if self.min_rise < 0 or self.drop <= 0:
            raise ValueError(
                f"corrector min_rise must be >= 0 and drop > 0, got {self.min_rise}, {self.drop}"
            )


def make_round(
    env: Env,
    policy_fn: Callable[[Params, Array, PRNGKey], Array],
    expert,
    cfg: CorrectorConfig,
    num_envs: int,
) -> Callable[[Params, PRNGKey], dict[str, Array]]:
    """A jitted ``round(params, key)``: the first episode of ``num_envs`` envs under the policy
    ``policy_fn(params, obs [B, O], key) -> chunk [B, H_exec, A]`` and the corrector.

    Returns per-step arrays ``[T, B, ...]`` (``T`` = decisions x H_exec, at least the episode
    length): ``obs``, ``base_actions``, ``residual_actions``, ``actions``, ``rewards``,
    ``dones``, ``truncation``, ``success``, ``corrected`` and ``alive`` (1 while the step
    belongs to the episode), and ``final_obs [B, O]``, the observation after the last step."""
    length = env.config.episode_length
    benv = VmapWrapper(EpisodeWrapper(env, length, action_repeat=1))
    act = jax.vmap(expert.act)

    def potential(state) -> Array:
        return jnp.sum(state.info["potential"], axis=-1)

    def run(params: Params, key: PRNGKey) -> dict[str, Array]:
        k_reset, k_expert, k_run = jax.random.split(key, 3)
        state = benv.reset(batch_keys(k_reset, num_envs))
        carry = jax.vmap(expert.init)(jax.random.split(k_expert, num_envs))
        exec_horizon = jax.eval_shape(policy_fn, params, state.obs, k_run).shape[1]
        num_decisions = math.ceil(length / exec_horizon)
        zeros = jnp.zeros((num_envs,))
        track = {"best": potential(state), "best_t": zeros, "control": zeros.astype(bool)}

        def step(c, xs):
            state, carry, track, alive = c
            a_b, key_t = xs
            t = state.info["steps"]
            pot = potential(state)
            rise = pot > track["best"] + cfg.min_rise
            best_t = jnp.where(rise, t, track["best_t"])
            best = jnp.maximum(track["best"], pot)
            stalled = t - best_t >= cfg.window
            collapsing = best - pot > cfg.drop
            take = ~track["control"] & (t >= cfg.earliest) & (stalled | collapsing) & (alive > 0)
            control = track["control"] | take
            # The expert draws its plan at an episode's first step: on the takeover step it
            # sees one, and plans from where the hand is.
            seen = state.replace(
                info={**state.info, "steps": jnp.where(take, jnp.zeros_like(t), t)}
            )
            new_carry, a_e = act(carry, seen, jax.random.split(key_t, num_envs))
            carry = jax.tree.map(
                lambda n, o: jnp.where(control.reshape((-1,) + (1,) * (o.ndim - 1)), n, o),
                new_carry,
                carry,
            )
            a_r = jnp.where(control[:, None], a_e - a_b, 0.0)
            a_exec = a_b + a_r
            new = benv.step(state, a_exec)
            record = {
                "obs": state.obs,
                "base_actions": a_b,
                "residual_actions": a_r,
                "actions": a_exec,
                "rewards": new.reward * alive,
                "dones": new.done * alive,
                "truncation": new.info["truncation"] * alive,
                "success": new.metrics["success"] * alive,
                "corrected": control * alive,
                "alive": alive,
            }
            track = {"best": best, "best_t": best_t, "control": control}
            state = hold_ended(alive, new, state)
            alive = alive * (1.0 - new.done)
            return (state, carry, track, alive), record

        def decision(c, key_d):
            state = c[0]
            k_pol, k_steps = jax.random.split(key_d)
            chunk = policy_fn(params, state.obs, k_pol)  # [B, H_exec, A]
            xs = (jnp.swapaxes(chunk, 0, 1), jax.random.split(k_steps, exec_horizon))
            return jax.lax.scan(step, c, xs)

        c = (state, carry, track, jnp.ones((num_envs,)))
        (state, *_), records = jax.lax.scan(decision, c, jax.random.split(k_run, num_decisions))
        out = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), records)
        out["final_obs"] = state.obs
        return out

    return jax.jit(run)


def split_round(arrays: dict[str, np.ndarray], exec_horizon: int) -> list[Episode]:
    """The episodes of one round (host arrays from ``make_round``), one per env.

    ``base_actions`` is kept to the end of the last decision (a whole chunk, which the policy
    computed even where the episode ended inside it); ``final_obs`` is the terminal
    observation."""
    alive = arrays["alive"]
    episodes = []
    for b in range(alive.shape[1]):
        n = int(alive[:, b].sum())
        padded = math.ceil(n / exec_horizon) * exec_horizon
        extras = {
            "base_actions": arrays["base_actions"][:padded, b],
            "residual_actions": arrays["residual_actions"][:n, b],
            "corrected": arrays["corrected"][:n, b],
            "truncation": arrays["truncation"][:n, b],
            "final_obs": arrays["final_obs"][b],
        }
        episodes.append(
            Episode(
                obs=arrays["obs"][:n, b],
                actions=arrays["actions"][:n, b],
                rewards=arrays["rewards"][:n, b],
                dones=arrays["dones"][:n, b],
                success=bool(arrays["success"][:n, b].max() > 0),
                extras={k: np.asarray(v, np.float32) for k, v in extras.items()},
            )
        )
    return episodes


def collect_corrections(
    task: str,
    env: Env,
    policy_fn: Callable[[Params, Array, PRNGKey], Array],
    params: Params,
    expert,
    num: int,
    key: PRNGKey,
    *,
    cfg: CorrectorConfig = CorrectorConfig(),
    num_envs: int = 64,
    max_rounds: int = 50,
    progress: Callable[[int, dict], None] | None = None,
) -> tuple[DemoSet, dict]:
    """``num`` corrected episodes (those where the corrector took over), and the statistics of
    every episode run: how often the policy alone succeeded, how often it needed the corrector,
    and how often a corrected episode then succeeded."""
    if num <= 0:
        raise ValueError(f"num must be positive, got {num}")
    round_fn = make_round(env, policy_fn, expert, cfg, num_envs)
    obs = jnp.zeros((1, env.observation_size))
    exec_horizon = jax.eval_shape(policy_fn, params, obs, key).shape[1]
    kept: list[Episode] = []
    stats = {"episodes": 0, "corrected": 0, "policy_success": 0, "corrected_success": 0}
    for r in range(max_rounds):
        key, k = jax.random.split(key)
        arrays = jax.device_get(round_fn(params, k))
        for ep in split_round(arrays, exec_horizon):
            stats["episodes"] += 1
            if ep.extras["corrected"].any():
                stats["corrected"] += 1
                stats["corrected_success"] += ep.success
                if len(kept) < num:
                    kept.append(ep)
            else:
                stats["policy_success"] += ep.success
        if progress is not None:
            progress(r, {**stats, "kept": len(kept)})
        if len(kept) >= num:
            break
    else:
        raise RuntimeError(
            f"only {len(kept)} of {num} corrected episodes in {max_rounds} rounds of {num_envs} "
            f"envs: the policy rarely needs the corrector under these conditions"
        )
    n = max(stats["episodes"], 1)
    summary = {
        "episodes": stats["episodes"],
        "policy_alone_success": stats["policy_success"] / n,
        "corrected_fraction": stats["corrected"] / n,
        "corrected_success": stats["corrected_success"] / max(stats["corrected"], 1),
    }
    demos = DemoSet(task, env_config_dict(env), kept, expert_success=None)
    return demos, summary


def decision_dataset(demos: DemoSet, exec_horizon: int) -> dict[str, np.ndarray]:
    """The decision-level dataset of ``rfs_jax.agents.td3bc`` from corrected episodes.

    Decision ``k`` of an episode covers steps ``k H .. k H + H - 1``: its ``obs`` is the first
    step's, ``base`` the policy's chunk there ``[H * A]``, ``residual`` the recorded ``a_r``
    (0 on the steps after the episode's end), ``reward`` the chunk's sum, ``termination`` 1
    where the episode ended inside it other than by the time limit, ``next_obs`` the next
    decision's observation (the terminal one after the last)."""
    out: dict[str, list] = {k: [] for k in ("obs", "next_obs", "base", "residual", "reward")}
    out |= {"termination": [], "weight": []}
    for ep in demos.episodes:
        missing = [k for k in (*EXTRA_FIELDS, "final_obs", "truncation") if k not in ep.extras]
        if missing:
            raise ValueError(
                f"episode lacks the correction fields {missing}: not a file written by "
                f"`rfs corrections`"
            )
        n, a = ep.actions.shape
        d = math.ceil(n / exec_horizon)
        pad = d * exec_horizon - n
        base = ep.extras["base_actions"][: d * exec_horizon]
        if len(base) != d * exec_horizon:
            raise ValueError(
                f"base_actions has {len(base)} steps, expected {d * exec_horizon}: the file's "
                f"exec horizon differs from the base policy's ({exec_horizon})"
            )
        residual = np.concatenate([ep.extras["residual_actions"], np.zeros((pad, a))])
        rewards = np.concatenate([ep.rewards, np.zeros(pad)]).reshape(d, exec_horizon)
        starts = ep.obs[::exec_horizon]
        out["obs"].append(starts)
        out["next_obs"].append(np.concatenate([starts[1:], ep.extras["final_obs"][None]]))
        out["base"].append(base.reshape(d, exec_horizon * a))
        out["residual"].append(residual.reshape(d, exec_horizon * a))
        out["reward"].append(rewards.sum(axis=1))
        term = np.zeros(d)
        ended = ep.dones[-1] > 0 and ep.extras["truncation"][-1] == 0
        term[-1] = float(ended)
        out["termination"].append(term)
        out["weight"].append(np.ones(d))
    return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}
