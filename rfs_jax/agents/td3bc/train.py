"""Offline TD3+BC over the steering action: one compiled update, and a fit over a fixed dataset.

The dataset is a dict of decision-level arrays (``rfs_jax.agents.td3bc.DATASET_KEYS``):
``obs``, ``next_obs [N, O]``, ``base``, ``residual [N, R]`` (the executed chunk's base part
``a_b`` and ``a_r = a_exec - a_b``, flattened), ``reward``, ``termination``, ``weight [N]``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from rfs_jax import running_stats
from rfs_jax.agents.sac.train import clipped_adam
from rfs_jax.agents.td3bc import losses
from rfs_jax.agents.td3bc.networks import TD3BCNetworks
from rfs_jax.running_stats import RunningStats
from rfs_jax.types import Array, Params, PRNGKey

DATASET_KEYS = ("obs", "next_obs", "base", "residual", "reward", "termination", "weight")

Metrics = dict[str, Array]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TD3BCState:
    actor: Params
    critic: Params
    target_actor: Params
    target_critic: Params
    actor_opt: Any
    critic_opt: Any
    obs_stats: RunningStats
    step: Array  # critic updates so far
    key: PRNGKey

    @property
    def policy_params(self) -> tuple[RunningStats, Params]:
        """What ``make_policy`` takes."""
        return self.obs_stats, self.actor


def check_dataset(data: dict[str, Any], networks: TD3BCNetworks) -> None:
    """Raise a ``ValueError`` naming the first missing key or wrong shape."""
    missing = [k for k in DATASET_KEYS if k not in data]
    if missing:
        raise ValueError(f"offline dataset lacks {missing}; it needs {list(DATASET_KEYS)}")
    n = len(data["obs"])
    o, r = networks.steering.obs_size, networks.steering.residual_size
    want = {"obs": (n, o), "next_obs": (n, o), "base": (n, r), "residual": (n, r)}
    want |= {k: (n,) for k in ("reward", "termination", "weight")}
    for k, shape in want.items():
        if tuple(data[k].shape) != shape:
            raise ValueError(
                f"offline dataset field {k!r} has shape {tuple(data[k].shape)}, expected {shape} "
                f"(obs size {o}, executed chunk H_exec x A = {r} of the base policy)"
            )


def init_state(networks: TD3BCNetworks, data: dict[str, Array], key: PRNGKey) -> TD3BCState:
    """Fresh actor (the base at its mean), critics, targets; observation statistics of the
    dataset's observations."""
    cfg = networks.cfg
    key_a, key_c, key = jax.random.split(key, 3)
    actor, critic = networks.init_actor(key_a), networks.init_critic(key_c)
    stats = running_stats.update(running_stats.init(networks.steering.obs_size), data["obs"])
    return TD3BCState(
        actor=actor,
        critic=critic,
        target_actor=actor,
        target_critic=critic,
        actor_opt=clipped_adam(cfg.actor_lr, cfg.max_grad_norm).init(actor),
        critic_opt=clipped_adam(cfg.critic_lr, cfg.max_grad_norm).init(critic),
        obs_stats=stats,
        step=jnp.zeros((), jnp.int32),
        key=key,
    )


def make_update(networks: TD3BCNetworks, base_params: Params) -> Callable:
    """``update(state, batch) -> (state, metrics)``: one critic step; every ``policy_delay``
    steps also one actor step and the Polyak update of the targets (TD3's delayed updates)."""
    cfg = networks.cfg
    actor_tx = clipped_adam(cfg.actor_lr, cfg.max_grad_norm)
    critic_tx = clipped_adam(cfg.critic_lr, cfg.max_grad_norm)
    actor_apply, critic_apply = networks.actor.apply, networks.critic.apply

    def update(state: TD3BCState, batch: dict[str, Array]) -> tuple[TD3BCState, Metrics]:
        key, key_noise = jax.random.split(state.key)
        obs_n = networks.normalize(state.obs_stats, batch["obs"])
        next_n = networks.normalize(state.obs_stats, batch["next_obs"])

        # Critic: TD onto the target critics at the smoothed target action, composed at s'.
        next_act = losses.smoothed_action(
            actor_apply(state.target_actor, next_n),
            key_noise,
            cfg.policy_noise,
            cfg.policy_noise_clip,
        )
        next_base, next_res = networks.executed(base_params, batch["next_obs"], next_act)
        next_q = critic_apply(
            state.target_critic, next_n, losses.critic_action(cfg.critic, next_base, next_res)
        )
        target = losses.td_target(batch["reward"], batch["termination"], next_q, cfg.gamma)
        data_action = losses.critic_action(cfg.critic, batch["base"], batch["residual"])

        def critic_fn(p):
            q = critic_apply(p, obs_n, data_action)
            return losses.critic_loss(q, target, batch["weight"]), q

        (critic_loss, q), grads = jax.value_and_grad(critic_fn, has_aux=True)(state.critic)
        updates, critic_opt = critic_tx.update(grads, state.critic_opt, state.critic)
        critic = optax.apply_updates(state.critic, updates)

        def actor_fn(p):
            base, res = networks.executed(base_params, batch["obs"], actor_apply(p, obs_n))
            q_pi = critic_apply(critic, obs_n, losses.critic_action(cfg.critic, base, res))[0]
            loss, lam = losses.actor_loss(q_pi, res, batch["residual"], cfg.alpha, cfg.bc_coef)
            bc = jnp.mean(jnp.sum(jnp.square(res - batch["residual"]), axis=-1))
            return loss, (lam, bc, jnp.mean(q_pi))

        def actor_step(args):
            actor, actor_opt, target_actor, target_critic = args
            (loss, (lam, bc, q_pi)), grads = jax.value_and_grad(actor_fn, has_aux=True)(actor)
            updates, actor_opt = actor_tx.update(grads, actor_opt, actor)
            actor = optax.apply_updates(actor, updates)
            target_actor = optax.incremental_update(actor, target_actor, cfg.tau)
            target_critic = optax.incremental_update(critic, target_critic, cfg.tau)
            return (actor, actor_opt, target_actor, target_critic), (loss, lam, bc, q_pi)

        def skip(args):
            nan = jnp.float32(jnp.nan)
            return args, (nan, nan, nan, nan)

        args = (state.actor, state.actor_opt, state.target_actor, state.target_critic)
        (actor, actor_opt, target_actor, target_critic), (a_loss, lam, bc, q_pi) = jax.lax.cond(
            (state.step + 1) % cfg.policy_delay == 0, actor_step, skip, args
        )
        new = TD3BCState(
            actor=actor,
            critic=critic,
            target_actor=target_actor,
            target_critic=target_critic,
            actor_opt=actor_opt,
            critic_opt=critic_opt,
            obs_stats=state.obs_stats,
            step=state.step + 1,
            key=key,
        )
        metrics = {
            "td3bc/critic_loss": critic_loss,
            "td3bc/q_mean": jnp.mean(q),
            "td3bc/actor_loss": a_loss,
            "td3bc/lambda": lam,
            "td3bc/bc_mse": bc,
            "td3bc/q_pi": q_pi,
        }
        return new, metrics

    return update


def fit(
    networks: TD3BCNetworks,
    base_params: Params,
    data: dict[str, Any],
    key: PRNGKey,
    state: TD3BCState | None = None,
    progress_fn: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[TD3BCState, list[dict[str, float]]]:
    """``cfg.num_updates`` updates on uniformly drawn minibatches of ``data``, compiled in blocks
    of ``cfg.log_interval`` (one ``lax.scan`` each); returns the state and one record per block
    (the block's mean metrics, NaNs of skipped actor steps left out)."""
    cfg = networks.cfg
    check_dataset(data, networks)
    data = {k: jnp.asarray(data[k], jnp.float32) for k in DATASET_KEYS}
    n = data["obs"].shape[0]
    key_init, key = jax.random.split(key)
    state = init_state(networks, data, key_init) if state is None else state
    update = make_update(networks, base_params)

    @functools.partial(jax.jit, static_argnums=2)
    def block(state, key, length):
        def one(state, key_i):
            idx = jax.random.randint(key_i, (cfg.batch_size,), 0, n)
            return update(state, jax.tree.map(lambda x: x[idx], data))

        state, metrics = jax.lax.scan(one, state, jax.random.split(key, length))
        return state, jax.tree.map(jnp.nanmean, metrics)

    history = []
    done = 0
    while done < cfg.num_updates:
        length = min(cfg.log_interval, cfg.num_updates - done)
        key, key_b = jax.random.split(key)
        state, metrics = block(state, key_b, length)
        done += length
        record = {"updates": done, **{k: float(v) for k, v in metrics.items()}}
        history.append(record)
        if progress_fn is not None:
            progress_fn(done, record)
    return state, history


# ---- an offline run as a steering run folder (``experiments.offline``) ------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class OfflineRunState:
    """What an offline run's checkpoint holds: the fields every agent's run state has
    (``experiments.agents``), with the actor as ``steering_params`` and the critic beside it."""

    obs_stats: RunningStats
    steering_params: Params
    critic: Params
    env_steps: Array  # env steps of the correction data (decisions x H_exec)
    iteration: Array  # critic updates

    @property
    def policy_params(self) -> tuple[RunningStats, Params]:
        return self.obs_stats, self.steering_params


def run_state(state: TD3BCState, env_steps: int) -> OfflineRunState:
    return OfflineRunState(
        obs_stats=state.obs_stats,
        steering_params=state.actor,
        critic=state.critic,
        env_steps=jnp.asarray(env_steps, jnp.int32),
        iteration=state.step,
    )


def make_networks(env, sampler, steering_cfg, cfg, *, horizon: int, exec_horizon: int):
    """The networks of an offline run over ``sampler``, the agents' common signature."""
    from rfs_jax.agents.td3bc.networks import make_td3bc_networks
    from rfs_jax.steering import make_steering

    steering = make_steering(
        steering_cfg, sampler, env.observation_size, env.action_size, horizon, exec_horizon
    )
    return make_td3bc_networks(steering, cfg)


def abstract_training_state(env, episode_length, networks, cfg, key, *, mesh=None):
    """Shapes of an offline run's ``OfflineRunState`` (the restore target of its checkpoint);
    the agents' common signature (``env``, ``episode_length``, ``cfg`` and ``mesh`` unused)."""
    del env, episode_length, cfg, mesh

    def build(k):
        k_a, k_c = jax.random.split(k)
        return OfflineRunState(
            obs_stats=running_stats.init(networks.steering.obs_size),
            steering_params=networks.init_actor(k_a),
            critic=networks.init_critic(k_c),
            env_steps=jnp.zeros((), jnp.int32),
            iteration=jnp.zeros((), jnp.int32),
        )

    return jax.eval_shape(build, key)
