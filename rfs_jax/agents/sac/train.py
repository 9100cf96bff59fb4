"""Off-policy RFS: SAC over the steering action ``(a0, ar)`` as one compiled iteration.

One iteration is ``jit(scan(rollout) -> insert -> cond(ready, scan(updates)))``:

- rollout: ``unroll_length`` decisions per env with the squashed-Gaussian actor (the same
  compose as PPO: ``Des(s, a0) + beta * tanh(ar)``, chunks of H_exec env steps);
- the decisions go into a replay buffer that lives on the device inside the training state
  (brax's ``UniformSamplingQueue``: jittable, already a dependency; flashbax would add a
  package for the same uniform FIFO);
- ``num_updates`` gradient steps once the buffer holds ``learning_starts`` decisions. With the
  ``aliased`` critic each step denoises, in **one** sampler call of ``2 * batch_size``, the next
  states' actions (for the TD target of the action critic ``Q_A``) and the aliasing latents
  (for the regression of the steering critic ``Q_W`` onto ``Q_A``); the ``plain`` critic needs
  no sampler call in its updates at all.

The frozen base params are an argument of the step, as in PPO. Checkpoints hold the whole
state, the replay buffer included, so a resumed run continues exactly (at the cost of
``buffer_size`` decisions on disk per checkpoint; ``rfs steer`` checks the free space first).
SAC runs on one device and one seed per program (``rfs steer`` refuses more, with the reason).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from brax.envs.base import Env, State
from brax.training.replay_buffers import ReplayBufferState, UniformSamplingQueue

from envs.wrappers import batch_keys, stagger, wrap
from rfs_jax import running_stats
from rfs_jax.acting import EpisodeStats, step_chunk
from rfs_jax.agents.loop import Cadence, run_iterations, split_eval_key
from rfs_jax.agents.sac import losses
from rfs_jax.agents.sac.config import SACConfig
from rfs_jax.agents.sac.networks import SACNetworks, make_sac_networks
from rfs_jax.evaluation import make_evaluator
from rfs_jax.running_stats import RunningStats
from rfs_jax.steering import Sampler, SteeringConfig, make_steering
from rfs_jax.types import Array, Metrics, Params, PRNGKey


@flax.struct.dataclass
class SACState:
    """Everything that changes during SAC training (the frozen base params are not in here)."""

    steering_params: Params  # the actor
    critic_params: Params  # Q_A (aliased) or Q (plain), twin
    target_critic_params: Params
    alias_params: Params  # Q_W, twin (aliased); unused copy of the critic's shape (plain)
    log_alpha: Array  # []
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    alias_opt_state: optax.OptState
    alpha_opt_state: optax.OptState
    obs_stats: RunningStats
    buffer_state: ReplayBufferState
    env_state: State
    episode_stats: EpisodeStats
    key: PRNGKey
    iteration: Array
    env_steps: Array

    @property
    def policy_params(self) -> tuple[RunningStats, Params]:
        return self.obs_stats, self.steering_params


def make_networks(
    env: Env,
    sampler: Sampler,
    steering_cfg: SteeringConfig,
    cfg: SACConfig,
    *,
    horizon: int,
    exec_horizon: int,
) -> SACNetworks:
    steering = make_steering(
        steering_cfg, sampler, env.observation_size, env.action_size, horizon, exec_horizon
    )
    return make_sac_networks(steering, cfg)


def _transition_template(networks: SACNetworks) -> dict[str, Array]:
    s = networks.steering
    return {
        "obs": jnp.zeros((s.obs_size,)),
        "next_obs": jnp.zeros((s.obs_size,)),
        "act": jnp.zeros((s.raw_size,)),
        "exec": jnp.zeros((s.residual_size,)),
        "reward": jnp.zeros(()),
        "termination": jnp.zeros(()),
        "weight": jnp.zeros(()),
    }


def make_buffer(networks: SACNetworks) -> UniformSamplingQueue:
    cfg = networks.cfg
    return UniformSamplingQueue(cfg.buffer_size, _transition_template(networks), cfg.batch_size)


def _critic_action_size(networks: SACNetworks) -> int:
    if networks.cfg.critic == "aliased":
        return networks.action_critic_size
    return networks.steering.raw_size


def clipped_adam(lr: float, max_grad_norm: float) -> optax.GradientTransformation:
    """Adam after clipping the global gradient norm (every SAC and TD3+BC optimiser)."""
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr))


def make_optimizers(cfg: SACConfig):
    """``(actor, critic, alias, alpha)`` optimisers."""
    return (
        clipped_adam(cfg.actor_lr, cfg.max_grad_norm),
        clipped_adam(cfg.critic_lr, cfg.max_grad_norm),
        clipped_adam(cfg.alias_lr, cfg.max_grad_norm),
        optax.adam(cfg.alpha_lr),
    )


def init_training_state(env: Env, networks: SACNetworks, cfg: SACConfig, key: PRNGKey) -> SACState:
    """Fresh params, optimiser states, an empty buffer and ``cfg.num_envs`` reset envs
    (``env`` batched with ``envs.wrappers.wrap``)."""
    actor_opt, critic_opt, alias_opt, alpha_opt = make_optimizers(cfg)
    buffer = make_buffer(networks)

    def init(key):
        keys = jax.random.split(key, 7)
        actor = networks.init_actor(keys[0])
        critic = networks.init_critic(keys[1], _critic_action_size(networks))
        alias = networks.init_critic(keys[2], networks.steering.raw_size)
        log_alpha = jnp.log(jnp.asarray(cfg.init_alpha, jnp.float32))
        env_state = env.reset(batch_keys(keys[3], cfg.num_envs))
        if cfg.stagger_episodes:
            env_state = stagger(env_state, keys[4], env.episode_length)
        obs_stats = running_stats.update(
            running_stats.init(networks.steering.obs_size), env_state.obs
        )
        return SACState(
            steering_params=actor,
            critic_params=critic,
            target_critic_params=critic,
            alias_params=alias,
            log_alpha=log_alpha,
            actor_opt_state=actor_opt.init(actor),
            critic_opt_state=critic_opt.init(critic),
            alias_opt_state=alias_opt.init(alias),
            alpha_opt_state=alpha_opt.init(log_alpha),
            obs_stats=obs_stats,
            buffer_state=buffer.init(keys[5]),
            env_state=env_state,
            episode_stats=EpisodeStats.zeros(cfg.num_envs, whole=not cfg.stagger_episodes),
            key=keys[6],
            iteration=jnp.zeros((), jnp.int32),
            env_steps=jnp.zeros((), jnp.int32),
        )

    return jax.jit(init)(key)


def abstract_training_state(
    env: Env, episode_length: int, networks: SACNetworks, cfg: SACConfig, key: PRNGKey, *, mesh=None
) -> SACState:
    """Shapes and dtypes of ``train``'s state: the restore target of a checkpoint."""
    batched = wrap(env, episode_length)
    return jax.eval_shape(lambda k: init_training_state(batched, networks, cfg, k), key)


def make_update(networks: SACNetworks, cfg: SACConfig):
    """``update(params, batch, obs_stats, base_params, key) -> (params, metrics)``: one gradient
    step of every part. ``params`` is the tuple ``(actor, critic, target, alias, log_alpha,
    opt states ...)``; ``batch`` a dict of ``[N]``-leading arrays (the buffer's layout)."""
    actor_opt, critic_opt, alias_opt, alpha_opt = make_optimizers(cfg)
    steering = networks.steering
    aliased = cfg.critic == "aliased"
    target_entropy = networks.target_entropy

    def update(params, batch, obs_stats, base_params, key, actor_on=True):
        """``actor_on`` (a traced bool): the actor and temperature step; else they keep their
        params and optimiser states (the critics still learn)."""
        (actor, critic, target, alias, log_alpha, o_actor, o_critic, o_alias, o_alpha) = params
        frozen = (actor, o_actor, log_alpha, o_alpha)
        key_next, key_alias, key_actor = jax.random.split(key, 3)
        obs, next_obs = batch["obs"], batch["next_obs"]
        obs_n = networks.normalize(obs_stats, obs)
        next_n = networks.normalize(obs_stats, next_obs)
        n = obs.shape[0]
        alpha = jnp.exp(log_alpha)
        nxt = networks.sample(actor, next_n, key_next)
        metrics = {}

        if aliased:
            alias_act, alias_raw = networks.alias_actions(key_alias, n)
            # One denoising call for the next actions and the aliasing latents.
            chunks, _ = steering.compose(
                base_params,
                jnp.concatenate([next_obs, obs]),
                jnp.concatenate([nxt.raw, alias_raw]),
            )
            chunks = chunks.reshape(2 * n, -1)
            next_exec, alias_exec = chunks[:n], chunks[n:]
            next_q = networks.critic.apply(target, next_n, next_exec)
            critic_action = batch["exec"]
        else:
            next_q = networks.critic.apply(target, next_n, nxt.act)
            critic_action = batch["act"]
        y = losses.td_target(
            batch["reward"], batch["termination"], next_q, nxt.log_prob, alpha, cfg.gamma
        )

        def critic_fn(p):
            q = networks.critic.apply(p, obs_n, critic_action)
            return losses.critic_loss(q, y, batch["weight"]), q

        (c_loss, q), g = jax.value_and_grad(critic_fn, has_aux=True)(critic)
        upd, o_critic = critic_opt.update(g, o_critic, critic)
        critic = optax.apply_updates(critic, upd)
        target = optax.incremental_update(critic, target, cfg.tau)
        metrics.update(
            {"sac/critic_loss": c_loss, "sac/q_mean": jnp.mean(q), "sac/td_target": jnp.mean(y)}
        )

        if aliased:
            # Regression points: the fresh aliasing latents at s, and, reused at no extra
            # denoising cost, the actor's own next actions at s' (already denoised for the TD
            # target), so Q_W is also exact where the actor acts.
            points_n = jnp.concatenate([obs_n, next_n])
            points_act = jax.lax.stop_gradient(jnp.concatenate([alias_act, nxt.act]))
            q_a = networks.critic.apply(critic, points_n, jnp.concatenate([alias_exec, next_exec]))

            def alias_fn(p):
                return losses.alias_loss(networks.critic.apply(p, points_n, points_act), q_a)

            a_loss, g = jax.value_and_grad(alias_fn)(alias)
            upd, o_alias = alias_opt.update(g, o_alias, alias)
            alias = optax.apply_updates(alias, upd)
            metrics["sac/alias_loss"] = a_loss
            actor_critic = alias
        else:
            actor_critic = critic

        def actor_fn(p):
            s = networks.sample(p, obs_n, key_actor)
            q_pi = networks.critic.apply(actor_critic, obs_n, s.act)
            if cfg.base_kl_coef > 0:
                kl = losses.base_kl(s.mean, s.log_std, networks.init_log_std, networks.learned)
                loss = losses.actor_loss_with_base_kl(q_pi, s.log_prob, alpha, kl, cfg.base_kl_coef)
                return loss, (s.log_prob, jnp.mean(kl))
            return losses.actor_loss(q_pi, s.log_prob, alpha), (s.log_prob, jnp.zeros(()))

        (p_loss, (log_prob, kl_base)), g = jax.value_and_grad(actor_fn, has_aux=True)(actor)
        upd, o_actor = actor_opt.update(g, o_actor, actor)
        actor = optax.apply_updates(actor, upd)

        t_loss, g = jax.value_and_grad(losses.alpha_loss)(log_alpha, log_prob, target_entropy)
        upd, o_alpha = alpha_opt.update(g, o_alpha, log_alpha)
        log_alpha = optax.apply_updates(log_alpha, upd)
        actor, o_actor, log_alpha, o_alpha = jax.tree.map(
            lambda new, old: jnp.where(actor_on, new, old),
            (actor, o_actor, log_alpha, o_alpha),
            frozen,
        )
        metrics.update(
            {
                "sac/actor_loss": p_loss,
                "sac/alpha": jnp.exp(log_alpha),
                "sac/alpha_loss": t_loss,
                "sac/entropy": -jnp.mean(log_prob),
                "sac/base_kl": kl_base,
            }
        )
        params = (actor, critic, target, alias, log_alpha, o_actor, o_critic, o_alias, o_alpha)
        return params, metrics

    return update


_UPDATE_METRICS = (
    "sac/critic_loss",
    "sac/q_mean",
    "sac/td_target",
    "sac/actor_loss",
    "sac/alpha",
    "sac/alpha_loss",
    "sac/entropy",
    "sac/base_kl",
)


def make_train_step(env: Env, networks: SACNetworks, cfg: SACConfig):
    """``train_step(state, base_params) -> (state, metrics)``: collect, insert, update (pure;
    jit with ``donate_argnums=0``). ``env`` is batched (``envs.wrappers.wrap``)."""
    buffer = make_buffer(networks)
    update = make_update(networks, cfg)
    names = _UPDATE_METRICS + (("sac/alias_loss",) if cfg.critic == "aliased" else ())

    def rollout(state: SACState, base_params: Params, key: PRNGKey):
        def decision(carry, key_t):
            env_state, ep_stats = carry
            obs = env_state.obs
            obs_n = networks.normalize(state.obs_stats, obs)
            sample = networks.sample(state.steering_params, obs_n, key_t)
            chunk, _ = networks.steering.compose(base_params, obs, sample.raw)
            env_state, ep_stats, out = step_chunk(env, env_state, chunk, ep_stats)
            transition = {
                "obs": obs,
                "next_obs": env_state.obs,
                "act": sample.act,
                "exec": chunk.reshape(chunk.shape[0], -1),
                "reward": out.reward * cfg.reward_scaling,
                "termination": out.done * (1.0 - out.truncation),
                "weight": 1.0 - out.truncation,
            }
            return (env_state, ep_stats), (transition, out)

        keys = jax.random.split(key, cfg.unroll_length)
        carry = (state.env_state, state.episode_stats)
        (env_state, ep_stats), (traj, outs) = jax.lax.scan(decision, carry, keys)
        return env_state, ep_stats, traj, outs

    def train_step(state: SACState, base_params: Params) -> tuple[SACState, Metrics]:
        key, key_rollout, key_update = jax.random.split(state.key, 3)
        env_state, ep_stats, traj, outs = rollout(state, base_params, key_rollout)
        flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), traj)
        buffer_state = buffer.insert_internal(state.buffer_state, flat)
        obs_stats = running_stats.update(state.obs_stats, traj["obs"])
        size = buffer.size(buffer_state)
        params = (
            state.steering_params,
            state.critic_params,
            state.target_critic_params,
            state.alias_params,
            state.log_alpha,
            state.actor_opt_state,
            state.critic_opt_state,
            state.alias_opt_state,
            state.alpha_opt_state,
        )

        def learn(args):
            params, buffer_state = args

            def one(carry, key_i):
                params, buffer_state = carry
                buffer_state, batch = buffer.sample_internal(buffer_state)
                params, m = update(params, batch, obs_stats, base_params, key_i, actor_on)
                return (params, buffer_state), m

            keys = jax.random.split(key_update, cfg.num_updates)
            (params, buffer_state), m = jax.lax.scan(one, (params, buffer_state), keys)
            return params, buffer_state, {k: jnp.mean(m[k]) for k in names}

        def wait(args):
            params, buffer_state = args
            return params, buffer_state, {k: jnp.zeros(()) for k in names}

        ready = size >= cfg.learning_starts
        actor_on = size >= max(cfg.learning_starts, cfg.actor_starts)
        params, buffer_state, metrics = jax.lax.cond(ready, learn, wait, (params, buffer_state))
        (actor, critic, target, alias, log_alpha, o_actor, o_critic, o_alias, o_alpha) = params
        metrics = dict(metrics)
        metrics["sac/updates"] = ready.astype(jnp.float32) * cfg.num_updates
        metrics["sac/actor_updates"] = (ready & actor_on).astype(jnp.float32) * cfg.num_updates
        metrics["sac/buffer_size"] = size.astype(jnp.float32)
        metrics["sac/replay_ratio"] = jnp.asarray(cfg.replay_ratio, jnp.float32)
        metrics.update(_rollout_metrics(outs))
        probe = networks.normalize(obs_stats, traj["obs"][0])
        metrics.update(networks.drift_metrics(actor, probe))
        new_state = state.replace(
            steering_params=actor,
            critic_params=critic,
            target_critic_params=target,
            alias_params=alias,
            log_alpha=log_alpha,
            actor_opt_state=o_actor,
            critic_opt_state=o_critic,
            alias_opt_state=o_alias,
            alpha_opt_state=o_alpha,
            obs_stats=obs_stats,
            buffer_state=buffer_state,
            env_state=env_state,
            episode_stats=ep_stats,
            key=key,
            iteration=state.iteration + 1,
            env_steps=state.env_steps + cfg.env_steps_per_iteration(networks.steering.exec_horizon),
        )
        return new_state, metrics

    return train_step


def _rollout_metrics(outs) -> Metrics:
    whole = outs.episode_whole
    episodes = jnp.sum(whole)
    per_episode = jnp.maximum(episodes, 1.0)
    live_steps = jnp.maximum(jnp.sum(outs.env_steps), 1.0)
    metrics = {
        "env/episodes": episodes,
        "env/episode_return": jnp.sum(whole * outs.episode_return) / per_episode,
        "env/success": jnp.sum(whole * outs.episode_success) / per_episode,
        "env/truncated": jnp.sum(whole * outs.truncation) / per_episode,
    }
    for name, total in outs.reward_terms.items():
        metrics[name] = jnp.sum(total) / live_steps
    return metrics


def train(
    env: Env,
    episode_length: int,
    sampler: Sampler,
    base_params: Params,
    steering_cfg: SteeringConfig,
    sac_cfg: SACConfig,
    key: PRNGKey,
    *,
    horizon: int,
    exec_horizon: int,
    progress_fn: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint_fn: Callable[[int, SACState], None] | None = None,
    initial_state: SACState | None = None,
    should_stop: Callable[[], bool] | None = None,
    mesh=None,
) -> tuple[SACState, list[dict[str, float]]]:
    """Fine-tune a frozen flow policy with SAC over the steering action; the arguments and the
    history are those of ``rfs_jax.agents.ppo.train`` (one key: SAC trains one seed; ``mesh``
    must be ``None`` or one device)."""
    if mesh is not None and mesh.size > 1:
        raise ValueError(f"SAC runs on one device; got a mesh of {mesh.size}: pass --num-devices 1")
    if key.ndim > (0 if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else 1):
        raise ValueError("SAC trains one seed per program: pass --seeds 1")
    batched = wrap(env, episode_length)
    networks = make_networks(
        env, sampler, steering_cfg, sac_cfg, horizon=horizon, exec_horizon=exec_horizon
    )
    key_init, key_eval = split_eval_key(key, None)
    state = (
        initial_state
        if initial_state is not None
        else init_training_state(batched, networks, sac_cfg, key_init)
    )
    train_step = jax.jit(make_train_step(batched, networks, sac_cfg), donate_argnums=0)

    def eval_policy(params, obs, key):
        obs_stats, actor, base = params
        obs_n = networks.normalize(obs_stats, obs)
        sample = networks.sample(actor, obs_n, key, deterministic=sac_cfg.deterministic_eval)
        chunk, _ = networks.steering.compose(base, obs, sample.raw)
        return chunk

    evaluator = make_evaluator(env, episode_length, eval_policy, sac_cfg.eval_episodes)

    def evaluate(state, it):
        params = (state.obs_stats, state.steering_params, base_params)
        return evaluator(params, jax.random.fold_in(key_eval, it))

    return run_iterations(
        train_step,
        state,
        base_params,
        cadence=Cadence.of(sac_cfg, exec_horizon),
        evaluate=evaluate,
        progress_fn=progress_fn,
        checkpoint_fn=checkpoint_fn,
        should_stop=should_stop,
    )


__all__ = [
    "SACState",
    "abstract_training_state",
    "init_training_state",
    "make_buffer",
    "make_networks",
    "make_train_step",
    "make_update",
    "train",
]
