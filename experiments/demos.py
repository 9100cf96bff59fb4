"""``rfs demos``: collect scripted-expert demonstrations in batch into an HDF5 file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from experiments.common import console, parse_overrides


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
