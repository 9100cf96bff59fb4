"""The ``rfs`` command line: ``rfs demos | base | eval | steer | bench | bench-tasks | pipeline |
export | sim2sim | video | corrections | offline``.

Each subcommand is a stage module of its own (``experiments.demos``, ``.base``, ``.steer``,
``.bench``, ``.pipeline``); its ``--help`` comes from that module's args dataclass (tyro).
"""

from __future__ import annotations

import sys

import tyro

from experiments.base import BaseArgs, base
from experiments.bench import BenchArgs, BenchTasksArgs, bench, bench_tasks
from experiments.common import console
from experiments.demos import DemosArgs, demos
from experiments.export import ExportArgs, export
from experiments.offline import CorrectionsArgs, OfflineArgs, corrections, offline
from experiments.pipeline import PipelineArgs, pipeline
from experiments.pipeline import cli_default as pipeline_cli_default
from experiments.sim2sim import Sim2SimArgs, sim2sim
from experiments.steer import EvalArgs, SteerArgs, evaluate, steer
from experiments.steer import cli_default as steer_cli_default
from experiments.video import VideoArgs, video
from rfs_jax.checkpoint import CheckpointError
from rfs_jax.flow.checkpoint import FlowCheckpointError

# What a user's input or files can cause, reported as one line (exit status 2): bad values,
# missing or damaged files (OSError: unreadable, read-only, full), unreadable checkpoints, and a
# non-finite loss or state (ArithmeticError: NonFiniteError, with its diagnosis).
USER_ERRORS = (ValueError, OSError, ArithmeticError, CheckpointError, FlowCheckpointError)

COMMANDS = {
    "demos": (DemosArgs, demos),
    "base": (BaseArgs, base),
    "bench": (BenchArgs, bench),
    "bench-tasks": (BenchTasksArgs, bench_tasks),
    "steer": (SteerArgs, steer),
    "eval": (EvalArgs, evaluate),
    "pipeline": (PipelineArgs, pipeline),
    "export": (ExportArgs, export),
    "sim2sim": (Sim2SimArgs, sim2sim),
    "video": (VideoArgs, video),
    "corrections": (CorrectionsArgs, corrections),
    "offline": (OfflineArgs, offline),
}

# Commands whose defaults depend on the command line itself (a preset, a run to resume):
# ``default(argv) -> args instance``, which the flags on the command line then override.
CLI_DEFAULTS = {"steer": steer_cli_default, "pipeline": pipeline_cli_default}


def _parse(argv: list[str]):
    """``(args, fn)`` of a command line. The defaults of some commands come from files (a run's
    config.json with ``--resume``), so a damaged file is a user error here too."""
    if argv and argv[0] in CLI_DEFAULTS:
        name, rest = argv[0], argv[1:]
        cls, fn = COMMANDS[name]
        return tyro.cli(cls, args=rest, prog=f"rfs {name}", default=CLI_DEFAULTS[name](rest)), fn
    args = tyro.extras.subcommand_cli_from_dict(
        {name: cls for name, (cls, _) in COMMANDS.items()}, args=argv, prog="rfs"
    )
    return args, next(fn for cls, fn in COMMANDS.values() if isinstance(args, cls))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        console.print(
            f"[bold red]error:[/] unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)} "
            f"(`rfs --help`)"
        )
        raise SystemExit(2)
    try:
        args, fn = _parse(argv)
        fn(args)
    except USER_ERRORS as e:
        console.print(f"[bold red]error:[/] {e}", soft_wrap=True)  # one line: paths stay whole
        raise SystemExit(2) from e
    except KeyboardInterrupt as e:  # a checkpoint was saved first (see experiments.steer)
        raise SystemExit(130) from e


if __name__ == "__main__":
    main()
