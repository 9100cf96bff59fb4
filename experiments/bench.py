"""``rfs bench`` and ``rfs bench-tasks``: throughput of the env, the sampler and the training
iteration (tables printed, JSON written)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from experiments.common import console, parse_overrides, write_json
from experiments.presets import preset


@dataclasses.dataclass
class BenchArgs:
    """Measure throughput at one task and batch: env-only control steps/s, env + base sampler,
    the full RFS-PPO and RFS-SAC training iterations and brax's own PPO trainer on the same env;
    prints a table and writes JSON."""

    task: str = "grasp"
    num_envs: int = 1024
    """Batch of parallel envs."""
    env_only: bool = False
    """Only the env (no base sampler, no training, no brax)."""
    brax: bool = True
    """Also run brax's PPO (brax.training.agents.ppo.train) on the same env and batch."""
    brax_iterations: int = 3
    """Training iterations of brax's PPO (the first compiles, the best other one is timed)."""
    sac: bool = True
    """Also time the RFS-SAC iteration (the cpu preset's SAC settings at this batch)."""
    sac_critic: str = "plain"
    """Critic of the timed SAC iteration: plain or aliased."""
    steps: int = 20
    """Control steps per timed call."""
    json: Path | None = None
    """Write the results here as JSON."""
    override: tuple[str, ...] = ()
    """Env config overrides KEY=VALUE."""


def bench(args: BenchArgs) -> dict:
    from rich.table import Table

    import envs
    from rfs_jax.bench import run_benchmarks, summary_rows

    env = envs.make(args.task, **parse_overrides(args.override))
    result = run_benchmarks(
        env,
        args.num_envs,
        steps=args.steps,
        env_only=args.env_only,
        brax=args.brax,
        brax_iterations=args.brax_iterations,
        sac=args.sac,
        sac_cfg=dataclasses.replace(preset("cpu").sac, critic=args.sac_critic),
    )
    result = {"task": args.task, **result}
    brax = result.get("brax_ppo_env_steps_per_s")
    table = Table(
        title=f"{args.task} @ {args.num_envs} envs on {result['device']}",
        caption=f"physics steps/s (env only): {result['physics_steps_per_s']:,.0f}",
    )
    columns = ["measure", "env steps/s", "vs env-only"] + (["vs brax PPO"] if brax else [])
    for column in columns + ["compile s"]:
        table.add_column(column, justify="left" if column == "measure" else "right")
    for label, sps, ratio, compile_s in summary_rows(result):
        vs_brax = [f"{sps / brax:.2f}"] if brax else []
        table.add_row(label, f"{sps:,.1f}", f"{ratio:.2f}", *vs_brax, f"{compile_s:,.1f}")
    console.print(table)
    if args.json:
        write_json(args.json, result)
    return result


@dataclasses.dataclass
class BenchTasksArgs:
    """Env-only control steps/s of several tasks in one process (so their ratios share one
    machine state), with each task's contact pairs and degrees of freedom; prints a table
    relative to the first task and writes JSON."""

    tasks: tuple[str, ...] = ()
    """Tasks to measure (default: grasp first, then every other registered task)."""
    num_envs: int = 1024
    """Batch of parallel envs."""
    steps: int = 20
    """Control steps per timed call."""
    json: Path | None = None
    """Write the results here as JSON (``num_envs`` and ``tasks``, one entry per task)."""


def bench_tasks(args: BenchTasksArgs) -> list[dict]:
    from rich.table import Table

    import envs
    from rfs_jax.bench import bench_env

    names = args.tasks or ("grasp", *(t for t in envs.tasks() if t != "grasp"))
    for name in names:
        envs.default_config(name)  # an unknown name fails here, before anything compiles
    results = []
    for name in names:
        console.print(f"{name}: compiling and timing {args.num_envs} envs ...")
        env = envs.make(name)
        m = env.mj_model
        r = {"task": name, "contact_pairs": int(m.npair), "dofs": int(m.nv)}
        results.append({**r, **bench_env(env, args.num_envs, steps=args.steps)})
    ref = results[0]
    table = Table(title=f"env-only control steps/s @ {args.num_envs} envs on {ref['device']}")
    for column in ("task", "env steps/s", f"vs {ref['task']}", "pairs", "dofs", "compile s"):
        table.add_column(column, justify="left" if column == "task" else "right")
    vs = f"vs_{ref['task']}"
    for r in results:
        r[vs] = r["env_steps_per_s"] / ref["env_steps_per_s"]
        table.add_row(
            r["task"],
            f"{r['env_steps_per_s']:,.0f}",
            f"{r[vs]:.2f}",
            str(r["contact_pairs"]),
            str(r["dofs"]),
            f"{r['compile_s']:.0f}",
        )
    console.print(table)
    if args.json:
        write_json(args.json, {"num_envs": args.num_envs, "tasks": results})
    return results
