"""The ``rfs`` command line: ``rfs demos | base | eval | steer | bench | bench-tasks | pipeline``.

Each subcommand's ``--help`` comes from the docstrings below (tyro).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import tyro

from experiments.common import console, parse_overrides, write_json
from experiments.steer import EvalArgs, SteerArgs, evaluate, steer
from experiments.steer import cli_default as steer_cli_default


@dataclasses.dataclass
class DemosArgs:
    """Collect scripted-expert demonstrations in batch and write a robomimic-style HDF5 file."""

    task: str = "grasp"
    """Task name (see `rfs bench --help` for the list)."""
    num: int = 400
    """Number of demonstrations to keep."""
    out: Path | None = None
    """Output HDF5 file (default: runs/<task>/demos.hdf5)."""
    num_envs: int = 64
    """Envs collected in parallel."""
    keep_failures: bool = False
    """Keep failed episodes too (default: successful ones only)."""
    seed: int = 0
    override: tuple[str, ...] = ()
    """Env config overrides KEY=VALUE, dotted for nested fields (object.shape=sphere)."""


def demos(args: DemosArgs) -> dict:
    import jax

    import envs
    from envs.experts import make_expert
    from rfs_jax.demos import collect_demos, save_demos

    env = envs.make(args.task, **parse_overrides(args.override))
    expert = make_expert(args.task, env)
    out = args.out or Path("runs") / args.task / "demos.hdf5"
    console.print(f"collecting {args.num} {args.task} demos with {args.num_envs} envs ...")
    result = collect_demos(
        args.task,
        env,
        expert,
        args.num,
        jax.random.PRNGKey(args.seed),
        num_envs=args.num_envs,
        keep_failures=args.keep_failures,
    )
    save_demos(out, result)
    steps = sum(len(e.actions) for e in result.episodes)
    console.print(
        f"[bold green]expert success {result.expert_success:.3f}[/] "
        f"({len(result.episodes)} demos, {steps} steps) -> {out}"
    )
    return {"expert_success": result.expert_success, "demos": len(result.episodes)}


@dataclasses.dataclass
class BenchArgs:
    """Measure throughput at one task and batch: env-only control steps/s, env + base sampler,
    the full RFS-PPO training iteration and brax's own PPO trainer on the same env; prints a
    table and writes JSON."""

    task: str = "grasp"
    num_envs: int = 1024
    """Batch of parallel envs."""
    env_only: bool = False
    """Only the env (no base sampler, no training, no brax)."""
    brax: bool = True
    """Also run brax's PPO (brax.training.agents.ppo.train) on the same env and batch."""
    brax_iterations: int = 3
    """Training iterations of brax's PPO (the first compiles, the best other one is timed)."""
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


def _base_command():
    from experiments.base import BaseArgs, base

    return BaseArgs, base


def _pipeline_command():
    from experiments.pipeline import PipelineArgs, pipeline

    return PipelineArgs, pipeline


def _pipeline_cli_default(argv):
    from experiments.pipeline import cli_default

    return cli_default(argv)


COMMANDS = {
    "demos": (DemosArgs, demos),
    "base": _base_command(),
    "bench": (BenchArgs, bench),
    "bench-tasks": (BenchTasksArgs, bench_tasks),
    "steer": (SteerArgs, steer),
    "eval": (EvalArgs, evaluate),
    "pipeline": _pipeline_command(),
}

# Commands whose defaults depend on the command line itself (a preset, a run to resume):
# ``default(argv) -> args instance``, which the flags on the command line then override.
CLI_DEFAULTS = {"steer": steer_cli_default, "pipeline": _pipeline_cli_default}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        console.print(
            f"[bold red]error:[/] unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)} "
            f"(`rfs --help`)"
        )
        raise SystemExit(2)
    if argv and argv[0] in CLI_DEFAULTS:
        name, rest = argv[0], argv[1:]
        cls, fn = COMMANDS[name]
        args = tyro.cli(cls, args=rest, prog=f"rfs {name}", default=CLI_DEFAULTS[name](rest))
    else:
        args = tyro.extras.subcommand_cli_from_dict(
            {name: cls for name, (cls, _) in COMMANDS.items()}, args=argv, prog="rfs"
        )
        fn = next(fn for cls, fn in COMMANDS.values() if isinstance(args, cls))
    try:
        fn(args)
    except (ValueError, FileNotFoundError, ArithmeticError) as e:
        # ArithmeticError: a non-finite loss or state (NonFiniteError), with its diagnosis.
        console.print(f"[bold red]error:[/] {e}")
        raise SystemExit(2) from e
    except KeyboardInterrupt as e:  # a checkpoint was saved first (see experiments.steer)
        raise SystemExit(130) from e


if __name__ == "__main__":
    main()
