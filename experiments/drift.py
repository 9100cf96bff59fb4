"""Where the steering head's latent drift comes from: a policy-gradient decomposition.

``python -m experiments.drift gradient --base runs/T/base [--run runs/T/rfs] [--json F]``
``python -m experiments.drift null-run --base runs/T/base --out runs/T/rfs_null``

PPO moves the mean of the latent ``a0`` along ``E[A(s, a) * eps]`` (``eps = a0 - mu``, std 1 for
the untrained head). This script rolls out the untrained head (the base policy, sampled: latent
N(0, I), residual N(0, sigma_r^2)) for one whole episode per env and estimates that gradient
with Monte Carlo returns-to-go (gamma per decision, as PPO uses), *separately for every named
reward term* (the return is a sum of terms, so the gradient is too) and for the success
indicator. For each term it reports the gradient's norm against its noise (the norm a gradient
of pure noise would have with this many samples), and, with ``--run``, its cosine with the
trained head's state-independent latent offset ``mean_s mu(s)``: the term that pays for the
drift points the same way. It also splits the latent gradient by chunk position (the executed
steps vs the ones the env never runs) and by action group (wrist vs fingers), and measures how
strongly the executed actions depend on each latent position (Jacobian norms of the sampler).
Finally it evaluates the base fed the constant offset as its latent (``a0 = offset`` in every
state) against ``a0 = 0`` on the same episodes: what the offset alone costs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tyro

from envs.hand.constants import WRIST_JOINTS


@dataclasses.dataclass
class DriftArgs:
    base: Path
    """Base policy folder (``rfs base``)."""
    run: Path | None = None
    """A trained steering run of that base: its latent offset is compared with the gradients."""
    envs: int = 512
    """Envs (one episode each) of the gradient estimate and of the offset evaluation."""
    gamma: float = 0.99
    """Discount per decision of the returns-to-go (PPO's)."""
    seed: int = 0
    json: Path | None = None


def _returns_to_go(r: np.ndarray, alive: np.ndarray, gamma: float) -> np.ndarray:
    """``[T, B]`` discounted sum of ``r`` from each decision to the episode's end."""
    g = np.zeros_like(r)
    acc = np.zeros(r.shape[1])
    for t in range(r.shape[0] - 1, -1, -1):
        acc = (r[t] + gamma * acc) * alive[t]
        g[t] = acc
    return g


def _gradient(g: np.ndarray, eps: np.ndarray, alive: np.ndarray) -> tuple[np.ndarray, float]:
    """``E[(G - b_t) eps]`` over live decisions, ``[D]``, and the norm of its noise.

    ``b_t`` is the mean return-to-go at decision t (a baseline: ``eps`` is independent of the
    state, so it changes the variance, not the expectation). The noise norm is what the same
    estimator gives with the returns shuffled across envs (independent of ``eps``).
    """
    n = max(alive.sum(), 1.0)
    b = (g * alive).sum(1, keepdims=True) / np.maximum(alive.sum(1, keepdims=True), 1.0)
    adv = (g - b) * alive
    grad = np.einsum("tb,tbd->d", adv, eps) / n
    rng = np.random.default_rng(0)
    noise = []
    for _ in range(8):
        perm = rng.permutation(g.shape[1])
        noise.append(np.linalg.norm(np.einsum("tb,tbd->d", adv[:, perm], eps) / n))
    return grad, float(np.mean(noise))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def drift(args: DriftArgs) -> dict:
    from envs.wrappers import batch_keys, wrap
    from experiments.base import load_base
    from experiments.steer import CONFIG_FILE
    from rfs_jax.acting import EpisodeStats, step_chunk
    from rfs_jax.evaluation import make_evaluator
    from rfs_jax.flow import make_sampler
    from rfs_jax.steering import SteeringConfig, make_steering

    task, env, flow_cfg, base_params, _ = load_base(args.base)
    H, He, A = flow_cfg.horizon, flow_cfg.exec_horizon, env.action_size
    sampler = make_sampler(flow_cfg, env.observation_size, A)
    steer_cfg = SteeringConfig()
    if args.run is not None:
        steer_cfg = SteeringConfig(**json.loads((args.run / CONFIG_FILE).read_text())["steering"])
    steering = make_steering(steer_cfg, sampler, env.observation_size, A, H, He)
    untrained = steering.init(jax.random.key(0))  # exactly the base (zero output layers)
    batched = wrap(env, env.config.episode_length)
    num_chunks = math.ceil(env.config.episode_length / He)

    @jax.jit
    def rollout(key):
        key_reset, key_policy = jax.random.split(key)
        state = batched.reset(batch_keys(key_reset, args.envs))

        def body(carry, key_t):
            state, stats, alive = carry
            obs = state.obs
            s = steering.sample(untrained, base_params, obs, obs, key_t)
            state, stats, out = step_chunk(batched, state, s.chunk, stats)
            record = {
                "obs": obs,
                "raw": s.raw,
                "alive": alive,
                "terms": out.reward_terms,
                "reward": out.reward,
                "success": out.episode_success,
            }
            return (state, stats, alive * (1.0 - out.done)), record

        carry = (state, EpisodeStats.zeros(args.envs), jnp.ones((args.envs,)))
        _, rec = jax.lax.scan(body, carry, jax.random.split(key_policy, num_chunks))
        return rec

    rec = jax.device_get(rollout(jax.random.key(args.seed)))
    alive = np.asarray(rec["alive"])
    eps = np.asarray(rec["raw"])  # the untrained head: latent eps ~ N(0, 1), residual N(0, s^2)
    latent = eps[..., : steering.latent_size]
    result: dict = {
        "task": task,
        "envs": args.envs,
        "decisions": float(alive.sum()),
        "base_success": float(np.asarray(rec["success"]).sum() / args.envs),
        "gamma": args.gamma,
    }
    signals = {k.removeprefix("reward/"): np.asarray(v) for k, v in rec["terms"].items()}
    signals["total"] = np.asarray(rec["reward"])
    # Success as its own signal: 1 at the decision the episode succeeds (the "what we want").
    signals["success_event"] = np.asarray(rec["success"])
    grads = {}
    for name, r in signals.items():
        g, noise = _gradient(_returns_to_go(r, alive, args.gamma), latent, alive)
        grads[name] = g
        result[f"grad/{name}/norm"] = float(np.linalg.norm(g))
        result[f"grad/{name}/noise_norm"] = noise
    # Which latent positions / action groups carry the total-reward gradient.
    gl = grads["total"].reshape(H, A)
    nw = len(WRIST_JOINTS)
    for t in range(H):
        result[f"grad/total/position_{t}_norm"] = float(np.linalg.norm(gl[t]))
    result["grad/total/wrist_norm"] = float(np.linalg.norm(gl[:, :nw]))
    result["grad/total/fingers_norm"] = float(np.linalg.norm(gl[:, nw:]))
    result["grad/cos_total_success"] = _cos(grads["total"], grads["success_event"])

    # How much the executed actions depend on each latent position (mean Jacobian Frobenius
    # norm over 64 observations of the rollout at a0 ~ N(0, I)).
    obs64 = np.asarray(rec["obs"])[0, :64]
    a064 = latent[0, :64].reshape(64, H, A)

    def executed(a0, obs):
        return sampler(base_params, obs[None], a0[None])[0, :He]

    jac = jax.jit(jax.vmap(jax.jacfwd(executed), in_axes=(0, 0)))(a064, obs64)  # [64,He,A,H,A]
    jac = np.asarray(jac)
    for t in range(H):
        result[f"jacobian/position_{t}_norm"] = float(
            np.mean(np.linalg.norm(jac[:, :, :, t, :].reshape(64, -1), axis=1))
        )

    if args.run is not None:
        from experiments.steer import load_run_policy

        state, networks, _ = load_run_policy(args.run, env, flow_cfg)
        obs = np.asarray(rec["obs"])[alive > 0]
        obs_n = networks.normalize(state.obs_stats, jnp.asarray(obs))
        mean, _ = steering.distribution(
            state.steering_params, obs_n, jnp.zeros((obs.shape[0], He, A))
        )
        mean = np.asarray(mean)
        offset = mean[:, : steering.latent_size].mean(0)
        result["offset/rms"] = float(np.sqrt(np.mean(offset**2)))
        result["offset/latent_mean_rms"] = float(
            np.sqrt(np.mean(mean[:, : steering.latent_size] ** 2))
        )
        for name, g in grads.items():
            result[f"cos_offset/{name}"] = _cos(g, offset)
        # What the offset alone does: the base fed a0 = offset vs a0 = 0, same episodes.
        const = jnp.asarray(offset.reshape(H, A))

        def fixed_latent(a0):
            def policy(params, obs, key):
                z = jnp.broadcast_to(a0, (obs.shape[0], H, A))
                return sampler(params, obs, z)[:, :He]

            return policy

        for name, a0 in (("zero", jnp.zeros((H, A))), ("offset", const)):
            run = make_evaluator(env, env.config.episode_length, fixed_latent(a0), args.envs)
            m = jax.device_get(run(base_params, jax.random.key(args.seed + 1)))
            result[f"eval_a0_{name}/success_rate"] = float(m["eval/success_rate"])
            result[f"eval_a0_{name}/return_mean"] = float(m["eval/return_mean"])
        bias = np.asarray(
            jax.jit(lambda o: sampler(base_params, o, jnp.broadcast_to(const, (o.shape[0], H, A))))(
                obs[:512]
            )
            - jax.jit(lambda o: sampler(base_params, o, jnp.zeros((o.shape[0], H, A))))(obs[:512])
        )[:, :He]
        result["offset/executed_bias_mean"] = bias.mean((0, 1)).round(4).tolist()

    for k, v in result.items():
        print(f"{k:40s} {v}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


@dataclasses.dataclass
class TermsArgs:
    """Per-term returns of the base and of trained runs on the same episodes (first episode of
    each env), each policy at its mean (``--sampled`` for sampled): which reward terms a run
    gained and lost on the way to its success rate."""

    base: Path
    runs: tuple[Path, ...] = ()
    envs: int = 512
    seed: int = 1
    sampled: bool = False
    json: Path | None = None


def terms(args: TermsArgs) -> dict:
    from envs.wrappers import batch_keys, wrap
    from experiments.base import load_base
    from experiments.steer import load_run_policy
    from rfs_jax.acting import EpisodeStats, step_chunk
    from rfs_jax.flow import make_sampler
    from rfs_jax.steering import SteeringConfig, make_steering

    task, env, flow_cfg, base_params, _ = load_base(args.base)
    H, He, A = flow_cfg.horizon, flow_cfg.exec_horizon, env.action_size
    sampler = make_sampler(flow_cfg, env.observation_size, A)
    batched = wrap(env, env.config.episode_length)
    num_chunks = math.ceil(env.config.episode_length / He)
    steering0 = make_steering(SteeringConfig(), sampler, env.observation_size, A, H, He)
    policies = {"base": (steering0, steering0.init(jax.random.key(0)), None)}
    for run in args.runs:
        state, networks, _ = load_run_policy(run, env, flow_cfg)
        policies[str(run)] = (networks.steering, state.steering_params, (networks, state.obs_stats))
        if policies["base"][2] is None and networks.steering.cfg == steering0.cfg:
            # The untrained head of the same config is the base (its outputs do not depend on
            # the normalised obs): evaluating it through this run's networks shares one compile.
            policies["base"] = (
                networks.steering,
                networks.steering.init(jax.random.key(0)),
                (networks, state.obs_stats),
            )

    # One compiled evaluation per kind of policy (steering config, normaliser): params and
    # normaliser stats are arguments, so the base and every run of one config share it.
    compiled = {}

    def runner(steering, networks):
        kind = (steering.cfg, None if networks is None else type(networks))
        if kind in compiled:
            return compiled[kind]

        @jax.jit
        def run(params, obs_stats, key):
            key_reset, key_policy = jax.random.split(key)
            state = batched.reset(batch_keys(key_reset, args.envs))

            def body(carry, key_t):
                state, stats, alive, totals, success = carry
                obs = state.obs
                obs_n = obs if networks is None else networks.normalize(obs_stats, obs)
                s = steering.sample(
                    params, base_params, obs, obs_n, key_t, deterministic=not args.sampled
                )
                state, stats, out = step_chunk(batched, state, s.chunk, stats)
                totals = {k: totals[k] + alive * v for k, v in out.reward_terms.items()}
                success = success + alive * out.episode_success
                return (state, stats, alive * (1.0 - out.done), totals, success), None

            zeros = jnp.zeros((args.envs,))
            names = sorted(k for k in state.metrics if k.startswith("reward/"))
            carry = (
                state,
                EpisodeStats.zeros(args.envs),
                zeros + 1.0,
                dict.fromkeys(names, zeros),
                zeros,
            )
            (_, _, _, totals, success), _ = jax.lax.scan(
                body, carry, jax.random.split(key_policy, num_chunks)
            )
            return totals, success

        compiled[kind] = run
        return run

    def evaluate(steering, params, norm):
        networks, obs_stats = (None, None) if norm is None else norm
        run = runner(steering, networks)
        totals, success = jax.device_get(run(params, obs_stats, jax.random.key(args.seed)))
        row = {"success_rate": float(np.mean(success))}
        row["return"] = float(np.mean(sum(totals.values())))
        for k, v in totals.items():
            row[k] = float(np.mean(v))
        ok = np.asarray(success) > 0
        ret = np.asarray(sum(totals.values()))
        row["return_of_successes"] = float(ret[ok].mean()) if ok.any() else float("nan")
        row["return_of_failures"] = float(ret[~ok].mean()) if (~ok).any() else float("nan")
        return row

    result = {"task": task, "episodes": args.envs, "sampled": args.sampled}
    for name, (steering, params, norm) in policies.items():
        result[name] = evaluate(steering, params, norm)
        print(name, json.dumps({k: round(v, 3) for k, v in result[name].items()}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


@dataclasses.dataclass
class NullArgs:
    """A control run: ``rfs steer`` with every rollout's advantages shuffled across its
    decisions, so the policy gradient is pure noise of the same size. The steering head's
    drift under it is what noise alone (with Adam and the epochs over one rollout) produces."""

    base: Path
    out: Path
    total_env_steps: int = 300_000
    preset: str = "cpu"
    eval_interval: int = 5


def null_run(args: NullArgs) -> dict:
    import importlib

    from experiments.steer import SteerArgs, steer

    # The module, not the package's ``train`` function of the same name.
    ppo_train = importlib.import_module("rfs_jax.agents.ppo.train")

    gae = ppo_train.compute_gae

    def shuffled_gae(reward, value, bootstrap, termination, truncation, gamma, lam):
        advantage, target = gae(reward, value, bootstrap, termination, truncation, gamma, lam)
        flat = advantage.reshape(-1)
        key = jax.random.fold_in(jax.random.key(17), jnp.sum(reward).astype(jnp.int32))
        return jax.random.permutation(key, flat).reshape(advantage.shape), target

    ppo_train.compute_gae = shuffled_gae
    steer_args = SteerArgs.from_preset(
        args.preset,
        base=args.base,
        out=args.out,
        mode="rfs",
        overwrite=True,
        total_env_steps=args.total_env_steps,
        progress=False,
    )
    steer_args = dataclasses.replace(
        steer_args, ppo=dataclasses.replace(steer_args.ppo, eval_interval=args.eval_interval)
    )
    return steer(steer_args)


if __name__ == "__main__":
    commands = {
        "gradient": (DriftArgs, drift),
        "terms": (TermsArgs, terms),
        "null-run": (NullArgs, null_run),
    }
    parsed = tyro.extras.subcommand_cli_from_dict({k: c for k, (c, _) in commands.items()})
    next(fn for c, fn in commands.values() if isinstance(parsed, c))(parsed)
