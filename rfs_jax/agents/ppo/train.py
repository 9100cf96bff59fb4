"""PPO training of the RFS steering policy (arXiv 2602.01789) as one compiled iteration.

One iteration is ``jit(scan(rollout) -> GAE -> scan(epochs, scan(minibatches)))``:

- rollout: ``unroll_length`` decisions per env; each normalises the observation, draws
  ``[a0, ar]`` from the steering head, denoises ``a0`` with the frozen flow sampler, adds the
  residual, and runs the resulting chunk of H_exec env steps (``rfs_jax.acting.step_chunk``:
  plain reward sum, chunk done if any step is, held after the episode ends);
- GAE per decision with ``gamma`` per decision; time-limit truncations are bootstrapped and
  their own transition masked (``rfs_jax.gae``);
- PPO epochs over shuffled minibatches, two Adam optimisers (policy and value learning rates
  differ in the paper), each behind its own gradient-norm clip; optionally the policy's
  epochs stop early once the update's KL passes ``target_kl`` (the value's go on);
- the observation normaliser is updated with the rollout's observations *after* the update,
  so a rollout and its update use the same statistics.

The frozen base params are an argument of the step, not part of ``TrainingState`` or of any
optimiser state, and the sampler stops their gradient: they cannot move. The training state's
buffers are donated to the step. ``train`` is the host loop around it: it only logs, evaluates
and checkpoints between compiled iterations.

Scale (``rfs_jax.sharding``): with a ``mesh`` the per-env leaves of the state (env state,
episode statistics) and the SGD minibatches are split over the mesh's data axis and the rest is
replicated; the step's code is unchanged, so 1 and N devices (or hosts) compute the same
numbers. Several seeds train in one compiled program by passing ``[S]`` keys: ``jax.vmap`` over
a leading seed axis of the whole state, init included (PureJaxRL), and seed ``i`` computes what
a run with key ``i`` alone computes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from brax.envs.base import Env, State
from jax.sharding import Mesh

from envs.wrappers import batch_keys, stagger, wrap
from rfs_jax import running_stats, sharding
from rfs_jax.acting import EpisodeStats, step_chunk
from rfs_jax.agents.loop import (
    Cadence,
    NonFiniteError,
    check_finite,
    run_iterations,
    split_eval_key,
)
from rfs_jax.agents.ppo.config import PPOConfig
from rfs_jax.agents.ppo.losses import Batch, compute_ppo_loss
from rfs_jax.agents.ppo.networks import PPONetworks, make_policy, make_ppo_networks
from rfs_jax.evaluation import make_evaluator
from rfs_jax.gae import compute_gae
from rfs_jax.running_stats import RunningStats
from rfs_jax.steering import Sampler, SteeringConfig, make_steering
from rfs_jax.types import Array, Metrics, Params, PRNGKey

_ADAM_EPS = 1e-5  # the usual PPO value (cleanrl, SB3); Adam's 1e-8 amplifies tiny gradients


@flax.struct.dataclass
class TrainingState:
    """Everything that changes during training (the frozen base params are not in here)."""

    steering_params: Params
    value_params: Params
    policy_opt_state: optax.OptState
    value_opt_state: optax.OptState
    obs_stats: RunningStats
    env_state: State  # batched env state, [B, ...] leaves
    episode_stats: EpisodeStats  # running return / success of each env's current episode
    key: PRNGKey
    iteration: Array  # [] int32
    env_steps: Array  # [] int32, env steps simulated so far

    @property
    def policy_params(self) -> tuple[RunningStats, Params]:
        """What ``make_policy``'s ``policy`` takes."""
        return self.obs_stats, self.steering_params


def make_networks(
    env: Env,
    sampler: Sampler,
    steering_cfg: SteeringConfig,
    ppo_cfg: PPOConfig,
    *,
    horizon: int,
    exec_horizon: int,
) -> PPONetworks:
    """The steering head and value network ``train`` builds for ``env`` (single-instance)."""
    steering = make_steering(
        steering_cfg, sampler, env.observation_size, env.action_size, horizon, exec_horizon
    )
    return make_ppo_networks(steering, ppo_cfg.value_hidden, ppo_cfg.obs_clip)


def num_seeds(key: PRNGKey) -> int | None:
    """``S`` when ``key`` holds one key per seed (``[S]`` typed keys or ``[S, 2]`` raw ones),
    ``None`` for a single key."""
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    single_ndim = 0 if typed else 1
    if key.ndim == single_ndim:
        return None
    if key.ndim != single_ndim + 1:
        raise ValueError(f"expected one key or a [S] batch of keys, got shape {key.shape}")
    return key.shape[0]


def training_state_shardings(state: TrainingState, mesh: Mesh) -> TrainingState:
    """Shardings of ``state`` (arrays or ``jax.ShapeDtypeStruct``): the env batch axis of the
    env state and episode statistics over the mesh's data axis (axis 1 under a leading seed
    axis), everything else replicated."""
    batch_axis = state.iteration.ndim  # 0, or 1 under a seed axis
    split = sharding.batch_sharding(mesh, batch_axis)
    shardings = jax.tree.map(lambda _: sharding.replicated(mesh), state)
    return shardings.replace(
        env_state=jax.tree.map(lambda _: split, state.env_state),
        episode_stats=jax.tree.map(lambda _: split, state.episode_stats),
    )


def abstract_training_state(
    env: Env,
    episode_length: int,
    networks: PPONetworks,
    cfg: PPOConfig,
    key: PRNGKey,
    *,
    mesh: Mesh | None = None,
) -> TrainingState:
    """Shapes and dtypes of ``train``'s state (``jax.ShapeDtypeStruct`` leaves, nothing is
    computed): the restore target of a checkpoint. ``env`` is single-instance; ``key`` only
    gives the key type (``jax.random.key`` vs a raw ``PRNGKey``) and, as ``[S]`` keys, the seed
    axis. With a ``mesh`` the leaves carry ``train``'s shardings, so a restore lands sharded."""
    batched = wrap(env, episode_length)
    abstract = jax.eval_shape(lambda k: init_training_state(batched, networks, cfg, k), key)
    if mesh is None:
        return abstract
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract,
        training_state_shardings(abstract, mesh),
    )


def make_optimizers(cfg: PPOConfig) -> tuple[optax.GradientTransformation, ...]:
    def adam(lr: float) -> optax.GradientTransformation:
        return optax.chain(
            optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(lr, eps=_ADAM_EPS)
        )

    return adam(cfg.policy_lr), adam(cfg.value_lr)


def init_training_state(
    env: Env, networks: PPONetworks, cfg: PPOConfig, key: PRNGKey, *, mesh: Mesh | None = None
) -> TrainingState:
    """Fresh params, optimiser states, and ``cfg.num_envs`` reset envs.

    ``env`` is the batched env (``envs.wrappers.wrap``). The observation normaliser starts
    from the reset observations, so the first rollout already sees sensible inputs. ``[S]``
    keys give ``S`` states stacked on a leading seed axis; a ``mesh`` places the state with
    ``training_state_shardings``.
    """
    policy_opt, value_opt = make_optimizers(cfg)

    def init(key: PRNGKey) -> TrainingState:
        key, key_env, key_steering, key_value, key_stagger = jax.random.split(key, 5)
        steering_params = networks.steering.init(key_steering)
        value_params = networks.init_value(key_value)
        env_state = env.reset(batch_keys(key_env, cfg.num_envs))
        if cfg.stagger_episodes:
            # ``episode_length`` of the EpisodeWrapper inside ``wrap`` (brax wrappers forward
            # attributes down the chain).
            env_state = stagger(env_state, key_stagger, env.episode_length)
        obs_stats = running_stats.update(
            running_stats.init(networks.steering.obs_size), env_state.obs
        )
        return TrainingState(
            steering_params=steering_params,
            value_params=value_params,
            policy_opt_state=policy_opt.init(steering_params),
            value_opt_state=value_opt.init(value_params),
            obs_stats=obs_stats,
            env_state=env_state,
            episode_stats=EpisodeStats.zeros(cfg.num_envs, whole=not cfg.stagger_episodes),
            key=key,
            iteration=jnp.zeros((), jnp.int32),
            env_steps=jnp.zeros((), jnp.int32),
        )

    if num_seeds(key) is not None:
        init = jax.vmap(init)
    if mesh is None:
        return jax.jit(init)(key)
    sharding.check_divisible(mesh.size, num_envs=cfg.num_envs, minibatch_size=cfg.minibatch_size)
    shardings = training_state_shardings(jax.eval_shape(init, key), mesh)
    key = sharding.put(key, sharding.replicated(mesh))
    return jax.jit(init, out_shardings=shardings)(key)


def make_train_step(
    env: Env, networks: PPONetworks, cfg: PPOConfig, *, mesh: Mesh | None = None
) -> Callable[[TrainingState, Params], tuple[TrainingState, Metrics]]:
    """``train_step(state, base_params) -> (state, metrics)``: one PPO iteration, pure.

    ``env`` is the batched env (``envs.wrappers.wrap``). Jit it with ``donate_argnums=0``
    (``train`` does). Metrics are device scalars: ``ppo/*`` averaged over all SGD steps,
    ``env/*`` over the episodes that ended during the rollout (``env/episodes`` of them),
    ``reward/*`` per env step. With a ``mesh``, jit it with ``training_state_shardings`` (``train``
    does): the env batch and every minibatch are split over the mesh, nothing else changes.
    """
    steering = networks.steering
    policy_opt, value_opt = make_optimizers(cfg)
    loss_fn = functools.partial(
        compute_ppo_loss,
        networks=networks,
        clip_eps=cfg.clip_eps,
        value_coef=cfg.value_coef,
        entropy_coef=cfg.entropy_coef,
        base_kl_coef=cfg.base_kl_coef,
        offset_kl_coef=cfg.offset_kl_coef,
        normalize_advantage=cfg.normalize_advantage,
    )
    num_minibatches, minibatch_size = cfg.num_minibatches, cfg.minibatch_size

    def rollout(state: TrainingState, base_params: Params, key: PRNGKey):
        def decision(carry, key_t):
            # Keeps the whole rollout (env, head, ODE) split by env across the data axis.
            env_state, ep_stats = sharding.constrain_batch(carry, mesh)
            obs = env_state.obs
            obs_n = networks.normalize(state.obs_stats, obs)
            sample = steering.sample(state.steering_params, base_params, obs, obs_n, key_t)
            value = networks.value.apply(state.value_params, obs_n)
            env_state, ep_stats, out = step_chunk(env, env_state, sample.chunk, ep_stats)
            transition = {
                "obs": obs,
                "raw": sample.raw,
                "base_chunk": sample.base_chunk,
                "log_prob": sample.log_prob,
                "value": value,
                "reward": out.reward * cfg.reward_scaling,
                "termination": out.done * (1.0 - out.truncation),
                "truncation": out.truncation,
            }
            return (env_state, ep_stats), (transition, out)

        keys = jax.random.split(key, cfg.unroll_length)
        carry = (state.env_state, state.episode_stats)
        (env_state, ep_stats), (traj, outs) = jax.lax.scan(decision, carry, keys)
        bootstrap = networks.value.apply(
            state.value_params, networks.normalize(state.obs_stats, env_state.obs)
        )
        return env_state, ep_stats, traj, outs, bootstrap

    def sgd_step(carry, minibatch: Batch, obs_stats: RunningStats):
        steering_params, value_params, policy_opt_state, value_opt_state, stopped = carry
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        # Collective: the loss is a mean over a minibatch split across the data axis, so its
        # gradient is each device's partial sum plus an all-reduce (the data-parallel average,
        # inserted by XLA); the advantage normalisation inside it is global the same way.
        (_, metrics), (g_steering, g_value) = grad_fn(
            (steering_params, value_params), obs_stats, minibatch
        )
        updates, new_opt_state = policy_opt.update(g_steering, policy_opt_state, steering_params)
        new_params = optax.apply_updates(steering_params, updates)
        if cfg.target_kl is not None:
            # KL early stop: the KL is measured at the params before this step, so the step
            # that would start from a policy already too far from the rollout's is skipped.
            stopped = stopped | (metrics["ppo/approx_kl"] > 1.5 * cfg.target_kl)
        # A stopped head (KL stop, or critic warm-up from the first step) keeps its params and
        # optimiser state; its gradient was computed and is dropped.
        steering_params, policy_opt_state = jax.tree.map(
            lambda new, old: jnp.where(stopped, old, new),
            (new_params, new_opt_state),
            (steering_params, policy_opt_state),
        )
        updates, value_opt_state = value_opt.update(g_value, value_opt_state, value_params)
        value_params = optax.apply_updates(value_params, updates)
        metrics["ppo/policy_grad_norm"] = optax.tree.norm(g_steering)
        metrics["ppo/value_grad_norm"] = optax.tree.norm(g_value)
        metrics["ppo/policy_steps"] = 1.0 - stopped.astype(jnp.float32)
        carry = (steering_params, value_params, policy_opt_state, value_opt_state, stopped)
        return carry, metrics

    def train_step(state: TrainingState, base_params: Params) -> tuple[TrainingState, Metrics]:
        key, key_rollout, key_sgd = jax.random.split(state.key, 3)
        env_state, ep_stats, traj, outs, bootstrap = rollout(state, base_params, key_rollout)
        advantage, target = compute_gae(
            traj["reward"],
            traj["value"],
            bootstrap,
            traj["termination"],
            traj["truncation"],
            cfg.gamma,
            cfg.gae_lambda,
        )
        batch = Batch(
            obs=traj["obs"],
            raw=traj["raw"],
            base_chunk=traj["base_chunk"],
            log_prob=traj["log_prob"],
            advantage=advantage,
            target=target,
            weight=1.0 - traj["truncation"],
        )
        batch = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)

        def epoch(carry, key_epoch):
            perm = jax.random.permutation(key_epoch, cfg.batch_size)
            shuffled = jax.tree.map(
                lambda x: x[perm].reshape((num_minibatches, minibatch_size) + x.shape[1:]), batch
            )
            # Collective: a minibatch draws decisions from every device's envs (an all-to-all),
            # then each device computes on its slice of every minibatch.
            shuffled = sharding.constrain_batch(shuffled, mesh, batch_axis=1)
            step = functools.partial(sgd_step, obs_stats=state.obs_stats)
            return jax.lax.scan(step, carry, shuffled)

        carry = (
            state.steering_params,
            state.value_params,
            state.policy_opt_state,
            state.value_opt_state,
            # The head takes no step: stopped from the start during critic warm-up (until the
            # value function has seen `critic_warmup_iterations` rollouts), later by target_kl.
            state.iteration < cfg.critic_warmup_iterations,
        )
        carry, sgd_metrics = jax.lax.scan(epoch, carry, jax.random.split(key_sgd, cfg.num_epochs))
        steering_params, value_params, policy_opt_state, value_opt_state, _ = carry

        metrics = jax.tree.map(jnp.mean, sgd_metrics)
        metrics.update(_rollout_metrics(traj, outs, batch.target, batch.weight))
        # The updated head on one minibatch of this rollout's states: its drift from the base.
        probe = jax.tree.map(lambda x: x[:minibatch_size], batch)
        mean, log_std = steering.distribution(
            steering_params, networks.normalize(state.obs_stats, probe.obs), probe.base_chunk
        )
        metrics.update(steering.drift_metrics(mean, log_std))
        new_state = state.replace(
            steering_params=steering_params,
            value_params=value_params,
            policy_opt_state=policy_opt_state,
            value_opt_state=value_opt_state,
            # Collective: the statistics are global (an all-reduce of the batch moments), so
            # every device normalises with the same numbers and replicas cannot drift apart.
            obs_stats=running_stats.update(state.obs_stats, traj["obs"]),
            env_state=env_state,
            episode_stats=ep_stats,
            key=key,
            iteration=state.iteration + 1,
            env_steps=state.env_steps + cfg.env_steps_per_iteration(steering.exec_horizon),
        )
        return new_state, metrics

    return train_step


def _rollout_metrics(traj, outs, target: Array, weight: Array) -> Metrics:
    # Whole episodes only: a staggered first episode, cut short, would read as a failure.
    whole = outs.episode_whole
    episodes = jnp.sum(whole)
    per_episode = jnp.maximum(episodes, 1.0)
    live_steps = jnp.maximum(jnp.sum(outs.env_steps), 1.0)
    value = traj["value"].reshape(-1)
    residual = target - value
    w_sum = jnp.maximum(jnp.sum(weight), 1.0)
    target_var = jnp.sum(weight * jnp.square(target - jnp.sum(weight * target) / w_sum)) / w_sum
    residual_var = jnp.sum(weight * jnp.square(residual)) / w_sum
    metrics = {
        "env/episodes": episodes,
        "env/episode_return": jnp.sum(whole * outs.episode_return) / per_episode,
        "env/success": jnp.sum(whole * outs.episode_success) / per_episode,
        "env/truncated": jnp.sum(whole * outs.truncation) / per_episode,
        "ppo/value_mean": jnp.mean(value),
        "ppo/explained_variance": 1.0 - residual_var / jnp.maximum(target_var, 1e-8),
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
    ppo_cfg: PPOConfig,
    key: PRNGKey,
    *,
    horizon: int,
    exec_horizon: int,
    progress_fn: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint_fn: Callable[[int, TrainingState], None] | None = None,
    initial_state: TrainingState | None = None,
    should_stop: Callable[[], bool] | None = None,
    mesh: Mesh | None = None,
) -> tuple[TrainingState, list[dict[str, float]]]:
    """Fine-tune a frozen flow policy with RFS (or DSRL / residual / base, per ``mode``).

    Args:
      env: a single-instance env; batched here with ``envs.wrappers.wrap``.
      episode_length: time limit in env steps.
      sampler: the frozen base ``sample(base_params, obs [B, O], a0 [B, H, A]) -> [B, H, A]``.
      base_params: its params (never updated).
      steering_cfg, ppo_cfg: configs.
      key: PRNG key; or ``[S]`` keys, one per seed: the ``S`` runs then share one compiled
        program (``jax.vmap`` over a leading seed axis of the state), and run ``i`` computes
        what ``train`` with ``key[i]`` alone computes.
      horizon, exec_horizon: H and H_exec of the base policy (``FlowConfig``).
      progress_fn: ``progress_fn(iteration, metrics)`` after each logged iteration (host
        floats, including ``eval/*`` when an evaluation ran).
      checkpoint_fn: ``checkpoint_fn(iteration, state)`` every ``ckpt_interval`` iterations and
        at the end. The next iteration donates ``state``'s buffers: save (or copy) what you
        need inside the hook, do not keep references to it.
      initial_state: continue from this state (a restored checkpoint) instead of a fresh one;
        iterations go on from its ``iteration`` up to the budget's total. With the same
        ``key``, an interrupted and resumed run computes the same iterations as one without
        the interruption (evaluation keys depend only on ``key`` and the iteration).
      should_stop: polled after each iteration; when it returns True the loop saves a
        checkpoint through ``checkpoint_fn`` and returns early (a graceful interrupt).
      mesh: shard the envs, the rollout and the minibatches over this mesh's data axis
        (``rfs_jax.sharding.make_mesh``; every host's devices in a multi-host run, where every
        process calls ``train`` alike). ``ppo_cfg.num_envs`` and ``minibatch_size`` must divide
        by its size. None: no sharding annotations at all (one device).

    Raises:
      NonFiniteError: a logged metric is NaN or infinite (before that iteration's checkpoint
        hook, so a diverged state is not saved).

    Returns:
      ``(final state, history)``; history holds one dict of host floats per logged iteration
      with ``iteration``, ``env_steps``, ``ppo/*``, ``env/*``, ``reward/*``, ``perf/*`` and
      ``eval/*`` (on evaluation iterations; the last entry always has them). With ``S`` seeds
      each metric is the mean over seeds, and ``seed_<i>/env/*``, ``seed_<i>/eval/*`` hold
      seed ``i``'s own values.
    """
    batched = wrap(env, episode_length)
    networks = make_networks(
        env, sampler, steering_cfg, ppo_cfg, horizon=horizon, exec_horizon=exec_horizon
    )
    steering = networks.steering
    seeds = num_seeds(key)
    key_init, key_eval = split_eval_key(key, seeds)
    if initial_state is None:
        state = init_training_state(batched, networks, ppo_cfg, key_init, mesh=mesh)
    else:
        state = initial_state
    step_fn = make_train_step(batched, networks, ppo_cfg, mesh=mesh)
    if seeds is not None:
        step_fn = jax.vmap(step_fn, in_axes=(0, None))
    jit_kwargs = {}
    if mesh is not None:
        sharding.check_divisible(
            mesh.size, num_envs=ppo_cfg.num_envs, minibatch_size=ppo_cfg.minibatch_size
        )
        shardings = training_state_shardings(state, mesh)
        replicated = sharding.replicated(mesh)
        state = sharding.put(state, shardings)  # no-op unless a restored state lies elsewhere
        base_params = sharding.put(base_params, replicated)
        key_eval = sharding.put(key_eval, replicated)
        io = (shardings, replicated)
        jit_kwargs = {"in_shardings": io, "out_shardings": io}
    train_step = jax.jit(step_fn, donate_argnums=0, **jit_kwargs)

    def eval_policy(params, obs, key):
        obs_stats, steering_params, base = params
        obs_n = networks.normalize(obs_stats, obs)
        sample = steering.sample(
            steering_params, base, obs, obs_n, key, deterministic=ppo_cfg.deterministic_eval
        )
        return sample.chunk

    evaluator = make_evaluator(env, episode_length, eval_policy, ppo_cfg.eval_episodes, mesh=mesh)
    fold_in = jax.random.fold_in
    if seeds is not None:
        evaluator = jax.vmap(evaluator, in_axes=((0, 0, None), 0))
        fold_in = jax.vmap(fold_in, in_axes=(0, None))

    def evaluate(state, it):
        params = (state.obs_stats, state.steering_params, base_params)
        return evaluator(params, fold_in(key_eval, it))

    return run_iterations(
        train_step,
        state,
        base_params,
        cadence=Cadence.of(ppo_cfg, exec_horizon),
        evaluate=evaluate,
        seeds=seeds,
        progress_fn=progress_fn,
        checkpoint_fn=checkpoint_fn,
        should_stop=should_stop,
    )


def history_arrays(history: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """Column view of ``train``'s history (NaN where an entry lacks a key, e.g. ``eval/*``)."""
    keys = sorted({k for record in history for k in record})
    return {k: np.array([r.get(k, np.nan) for r in history]) for k in keys}


__all__ = [
    "NonFiniteError",
    "TrainingState",
    "abstract_training_state",
    "check_finite",
    "history_arrays",
    "init_training_state",
    "make_networks",
    "make_optimizers",
    "make_policy",
    "make_train_step",
    "num_seeds",
    "train",
    "training_state_shardings",
]
