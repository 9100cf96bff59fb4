"""SAC on the bimodal probe: the evaluation curve (at the mean) of one mode and critic, for
comparing critics and step sizes in seconds rather than hours.

    python -m experiments.probe_sac --mode rfs --critic aliased --lr 1e-3 --iterations 240

The base is the one tests/test_sac.py trains (a flow on 1,000 probe demos); the SAC settings
are that test's, with ``--iterations``, ``--lr`` (actor and critic), ``--alias-lr`` and
``--num-updates`` free. Prints the success at the mean every ``--eval-interval`` iterations.
"""

from __future__ import annotations

import dataclasses
import json
import time

import tyro

from rfs_jax.steering import MODES


@dataclasses.dataclass
class ProbeSACArgs:
    mode: str = "rfs"
    """Steering mode: rfs, dsrl or residual."""
    critic: str = "plain"
    """plain or aliased."""
    iterations: int = 240
    """Iterations of 256 decisions (512 env steps)."""
    lr: float = 1e-3
    """Actor and critic learning rate."""
    alias_lr: float = 1e-3
    """Learning rate of the aliased critic's steering critic."""
    num_updates: int = 4
    eval_interval: int = 20
    seed: int = 2


def probe_sac(args: ProbeSACArgs) -> list[tuple[int, float]]:
    import jax

    from envs.probes import BimodalGoalEnv
    from rfs_jax.agents.sac import SACConfig, train
    from rfs_jax.flow import FlowConfig, chunks_from_episodes, make_sampler, train_flow
    from rfs_jax.steering import SteeringConfig

    if args.mode not in MODES:
        raise ValueError(f"unknown mode {args.mode!r}; expected one of {MODES}")
    flow = FlowConfig(
        horizon=4,
        exec_horizon=2,
        num_steps=5,
        hidden=(128, 128, 128),
        num_updates=2000,
        warmup_steps=50,
        batch_size=256,
    )
    env = BimodalGoalEnv()
    obs, chunks = chunks_from_episodes(env.demo_episodes(jax.random.key(0), 1000), flow.horizon)
    params, _ = train_flow(flow, obs, chunks, jax.random.key(1), progress=False)
    sampler = make_sampler(flow, env.observation_size, env.action_size)
    cfg = SACConfig(
        critic=args.critic,
        num_envs=256,
        unroll_length=1,
        num_updates=args.num_updates,
        batch_size=256,
        buffer_size=20_000,
        learning_starts=512,
        actor_lr=args.lr,
        critic_lr=args.lr,
        alias_lr=args.alias_lr,
        actor_hidden=(64, 64),
        critic_hidden=(128, 128),
        total_env_steps=args.iterations * 256 * 2,
        eval_interval=args.eval_interval,
        eval_episodes=512,
        ckpt_interval=0,
    )
    t0 = time.time()
    _, history = train(
        env,
        4,
        sampler,
        params,
        SteeringConfig(mode=args.mode),
        cfg,
        jax.random.key(args.seed),
        horizon=flow.horizon,
        exec_horizon=flow.exec_horizon,
    )
    curve = [
        (int(h["iteration"]), round(h["eval/success_rate"], 3))
        for h in history
        if "eval/success_rate" in h
    ]
    print(json.dumps({**dataclasses.asdict(args), "seconds": round(time.time() - t0, 1)}))
    print("success at the mean (iteration, rate):", curve)
    return curve


if __name__ == "__main__":
    probe_sac(tyro.cli(ProbeSACArgs))
