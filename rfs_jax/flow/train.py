"""Behaviour-cloning trainer of the flow-matching base policy (RFS, arXiv 2602.01789).

Demonstrations are cut into action chunks (Zhao et al. 2023, ACT), normalised, and regressed
with the rectified-flow loss of ``policy.flow_matching_loss``. The update is jitted once over a
block of ``lax.scan``-ned SGD steps, so the host only touches the device between blocks (for the
progress bar and the finite-loss check).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from pathlib import Path

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rfs_jax.flow.config import FlowConfig
from rfs_jax.flow.policy import (
    STD_FLOOR,
    FlowParams,
    flow_matching_loss,
    init_flow_params,
    make_velocity_net,
    normalize_obs,
)
from rfs_jax.types import Array, PRNGKey


@flax.struct.dataclass
class FlowTrainState:
    params: FlowParams
    opt_state: optax.OptState
    key: PRNGKey


def chunks_from_episodes(
    episodes: Sequence[tuple[np.ndarray, np.ndarray]], horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut episodes into (observation, action chunk) pairs.

    episodes: list of (obs [T, O], actions [T, A]) -> obs [N, O], chunks [N, H, A], N = sum T.
    The chunk at step t is actions t..t+H-1. Near the end of an episode it is padded by repeating
    the last action (standard in action chunking, ACT / Diffusion Policy): the robot holds its
    final command, and every step keeps a training sample.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if len(episodes) == 0:
        raise ValueError("chunks_from_episodes got no episodes")
    all_obs, all_chunks = [], []
    for i, (obs, actions) in enumerate(episodes):
        obs, actions = np.asarray(obs), np.asarray(actions)
        if obs.ndim != 2 or actions.ndim != 2 or len(obs) != len(actions) or len(obs) == 0:
            raise ValueError(
                f"episode {i}: expected obs [T, O] and actions [T, A] with the same T >= 1, "
                f"got obs {obs.shape} and actions {actions.shape}"
            )
        steps = len(actions)
        idx = np.minimum(np.arange(steps)[:, None] + np.arange(horizon)[None, :], steps - 1)
        all_obs.append(obs)
        all_chunks.append(actions[idx])
    return (
        np.concatenate(all_obs).astype(np.float32),
        np.concatenate(all_chunks).astype(np.float32),
    )


def _normalisation(obs: np.ndarray, chunks: np.ndarray) -> dict[str, jax.Array]:
    """Per-dimension mean/std of obs [N, O] and of actions over all chunk entries [N, H, A]."""
    acts = chunks.reshape(-1, chunks.shape[-1])
    return {
        "obs_mean": jnp.asarray(obs.mean(0), jnp.float32),
        "obs_std": jnp.asarray(np.maximum(obs.std(0), STD_FLOOR), jnp.float32),
        "act_mean": jnp.asarray(acts.mean(0), jnp.float32),
        "act_std": jnp.asarray(np.maximum(acts.std(0), STD_FLOOR), jnp.float32),
    }


def _validate(cfg: FlowConfig, obs: np.ndarray, chunks: np.ndarray) -> None:
    if obs.ndim != 2 or chunks.ndim != 3:
        raise ValueError(
            f"train_flow expects obs [N, O] and chunks [N, H, A], got {obs.shape} and "
            f"{chunks.shape}"
        )
    if obs.shape[0] != chunks.shape[0]:
        raise ValueError(
            f"obs and chunks disagree on N: {obs.shape[0]} observations vs {chunks.shape[0]} chunks"
        )
    if obs.shape[0] == 0:
        raise ValueError("train_flow got an empty data set (N = 0)")
    if chunks.shape[1] != cfg.horizon:
        raise ValueError(
            f"chunk length {chunks.shape[1]} != cfg.horizon {cfg.horizon}; rebuild the chunks "
            f"with chunks_from_episodes(episodes, horizon={cfg.horizon})"
        )
    for name, x in (("obs", obs), ("chunks", chunks)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contains NaN or inf ({np.sum(~np.isfinite(x))} entries)")


def make_optimizer(cfg: FlowConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.num_updates,
        end_value=0.01 * cfg.lr,
    )
    return optax.chain(
        optax.clip_by_global_norm(cfg.max_grad_norm),
        optax.adamw(schedule, weight_decay=cfg.weight_decay),
    )


def make_train_block(cfg: FlowConfig, action_size: int, num_steps: int):
    """Jitted ``(state, obs_n [N, O], act_n [N, H, A]) -> (state, losses [num_steps])``.

    The data are arguments, not closed-over constants, so they are not baked into the executable.
    """
    net = make_velocity_net(cfg, action_size)
    optimizer = make_optimizer(cfg)

    def sgd_step(state: FlowTrainState, _, obs_n: Array, act_n: Array):
        key, key_batch, key_loss = jax.random.split(state.key, 3)
        idx = jax.random.randint(key_batch, (cfg.batch_size,), 0, obs_n.shape[0])
        loss_fn = functools.partial(flow_matching_loss, net.apply)
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params.net, obs_n[idx], act_n[idx], key_loss
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params.net)
        params = state.params.replace(net=optax.apply_updates(state.params.net, updates))
        return state.replace(params=params, opt_state=opt_state, key=key), loss

    @functools.partial(jax.jit, donate_argnums=0)
    def train_block(state: FlowTrainState, obs_n: Array, act_n: Array):
        step = functools.partial(sgd_step, obs_n=obs_n, act_n=act_n)
        return jax.lax.scan(step, state, None, length=num_steps)

    return optimizer, train_block


def train_flow(
    cfg: FlowConfig,
    obs: np.ndarray,
    chunks: np.ndarray,
    key: PRNGKey | None = None,
    *,
    progress: bool = True,
    log_every: int = 100,
) -> tuple[FlowParams, dict[str, np.ndarray]]:
    """Fit the flow-matching base policy on demonstration chunks.

    obs [N, O], chunks [N, H, A] (actions in [-1, 1]). Returns the trained ``FlowParams`` and a
    history: ``step`` [U] and ``loss`` [U] per update, ``block_step`` [U / log_every] and
    ``wall_time_s`` (cumulative seconds at each block end, compile included).
    """
    obs, chunks = np.asarray(obs, np.float32), np.asarray(chunks, np.float32)
    _validate(cfg, obs, chunks)
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    if key is None:
        key = jax.random.key(cfg.seed)
    obs_size, action_size = obs.shape[1], chunks.shape[2]

    key, key_init = jax.random.split(key)
    params = init_flow_params(cfg, obs_size, action_size, key_init).replace(
        **_normalisation(obs, chunks)
    )
    obs_n = normalize_obs(params, jnp.asarray(obs))
    act_n = (jnp.asarray(chunks) - params.act_mean) / params.act_std

    block = min(log_every, cfg.num_updates)
    optimizer, train_block = make_train_block(cfg, action_size, block)
    state = FlowTrainState(params=params, opt_state=optimizer.init(params.net), key=key)
    # Only the last block may be shorter; it gets its own (one extra) compilation.
    remainder = cfg.num_updates % block
    tail_block = make_train_block(cfg, action_size, remainder)[1] if remainder else None

    losses, block_steps, wall = [], [], []
    start = time.perf_counter()
    bar = _progress_bar(progress, cfg.num_updates)
    with bar:
        task = bar.add_task("flow BC", total=cfg.num_updates, loss=float("nan"))
        done = 0
        while done < cfg.num_updates:
            fn, n = (
                (train_block, block) if cfg.num_updates - done >= block else (tail_block, remainder)
            )
            state, block_losses = fn(state, obs_n, act_n)
            block_losses = np.asarray(block_losses)  # the one host sync per block
            if not np.all(np.isfinite(block_losses)):
                bad = done + int(np.argmax(~np.isfinite(block_losses)))
                raise FloatingPointError(
                    f"flow-matching loss became non-finite at update {bad}; lower cfg.lr "
                    f"(now {cfg.lr}) or check the demonstrations for extreme values"
                )
            done += n
            losses.append(block_losses)
            block_steps.append(done)
            wall.append(time.perf_counter() - start)
            bar.update(task, completed=done, loss=float(block_losses.mean()))

    history = {
        "step": np.arange(1, cfg.num_updates + 1),
        "loss": np.concatenate(losses),
        "block_step": np.asarray(block_steps),
        "wall_time_s": np.asarray(wall),
    }
    return state.params, history


class _NoProgress:
    """Stand-in for ``rich.progress.Progress`` when progress=False."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        pass


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def plot_loss(history: dict[str, np.ndarray], path: str | Path, smoothing: float = 0.98) -> Path:
    """Write a PNG of the per-update loss (raw, faint) and its EMA (solid), log-scale y."""
    # Figure + Agg canvas directly: no global pyplot backend switch, safe next to other plotting.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    step, loss = np.asarray(history["step"]), np.asarray(history["loss"], np.float64)
    ema = np.empty_like(loss)
    acc = loss[0] if len(loss) else 0.0
    for i, x in enumerate(loss):
        acc = smoothing * acc + (1.0 - smoothing) * x
        ema[i] = acc
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(step, loss, alpha=0.25, lw=0.8, label="per update")
    ax.plot(step, ema, lw=1.8, label=f"EMA ({smoothing})")
    ax.set_yscale("log")
    ax.set_xlabel("update")
    ax.set_ylabel("flow-matching loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
