"""Generalisation to objects outside the training ranges: success of several saved policies
(base folders and steering runs) under each of a list of env overrides, on the same episodes.

    python -m experiments.unseen --runs runs/grasp/base runs/grasp/rfs --episodes 256 \
        --json runs/grasp/unseen.json

Every policy is evaluated at its mean by default (``--sampled`` for the sampled policies):
a base folder at ``a0 = 0``, a steering run at its head's mean. A steering run restores only its
policy (``experiments.steer.load_run_policy``), so a run trained on boxes evaluates on spheres.
Each condition is one call of ``experiments.steer.evaluate_run`` with the condition's overrides,
with the same evaluation seed, so every policy meets the same initial states per condition.
Prints a table (rows: conditions, columns: policies) and writes JSON and a markdown table.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tyro

from experiments.common import console, write_json

# Grasp trains on boxes of half-sizes 0.02-0.035 (0.04 high), 0.1-0.5 kg, friction 0.3-1.0
# (envs/grasp.py, envs/config.py); each condition leaves that set in one direction.
CONDITIONS: dict[str, tuple[str, ...]] = {
    "training objects": (),
    "spheres": ("object.shape=sphere",),
    "capsules": ("object.shape=capsule",),
    "smaller boxes (half-size 0.014-0.02)": (
        "object.size_min=[0.014,0.014,0.014]",
        "object.size_max=[0.02,0.02,0.02]",
    ),
    "larger boxes (half-size 0.035-0.045)": (
        "object.size_min=[0.035,0.035,0.04]",
        "object.size_max=[0.045,0.045,0.05]",
    ),
    "heavier (0.5-1.0 kg)": ("object.mass_range=[0.5,1.0]",),
    "lower friction (0.15-0.3)": ("object.friction_range=[0.15,0.3]",),
}


@dataclasses.dataclass
class UnseenArgs:
    """Success of saved policies on objects outside their training ranges."""

    runs: tuple[Path, ...] = (Path("runs/grasp/base"), Path("runs/grasp/rfs"))
    """Policy folders: written by `rfs base` or by `rfs steer`."""
    episodes: int = 256
    """Episodes per policy and condition."""
    sampled: bool = False
    """Evaluate the sampled policies instead of their means."""
    conditions: tuple[str, ...] = tuple(CONDITIONS)
    """Names of the conditions to run (default: all)."""
    seed: int = 0
    json: Path | None = None
    """Write the results here (and a markdown table next to it, .md)."""


def unseen(args: UnseenArgs) -> dict:
    from rich.table import Table

    from experiments.steer import evaluate_run

    unknown = [c for c in args.conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; known: {list(CONDITIONS)}")
    results: dict[str, dict[str, dict]] = {}
    for name in args.conditions:
        overrides = CONDITIONS[name]
        results[name] = {}
        for run in args.runs:
            console.print(f"{name}: {run} ...")
            r = evaluate_run(
                run,
                episodes=args.episodes,
                deterministic=not args.sampled,
                seed=args.seed,
                overrides=overrides,
            )
            results[name][str(run)] = {
                "success_rate": r["success_rate"],
                "return_mean": r["return_mean"],
                "overrides": list(overrides),
            }
    table = Table(
        title=f"success, {args.episodes} episodes, {'sampled' if args.sampled else 'at the mean'}"
    )
    table.add_column("condition")
    for run in args.runs:
        table.add_column(str(run), justify="right")
    lines = ["| condition | " + " | ".join(str(r) for r in args.runs) + " |"]
    lines.append("|---|" + "---|" * len(args.runs))
    for name, row in results.items():
        cells = [f"{row[str(r)]['success_rate']:.3f}" for r in args.runs]
        table.add_row(name, *cells)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    console.print(table)
    summary = {
        "episodes": args.episodes,
        "sampled": args.sampled,
        "seed": args.seed,
        "runs": [str(r) for r in args.runs],
        "results": results,
    }
    if args.json:
        write_json(args.json, summary)
        args.json.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return summary


if __name__ == "__main__":
    unseen(tyro.cli(UnseenArgs))
