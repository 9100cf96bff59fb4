"""``rfs pipeline``: demos -> flow base -> RFS (and, optionally, the baselines) -> evaluation,
then a table of base vs steered success. Stages whose outputs exist are reused, so an
interrupted pipeline picks up where it stopped (a steering run resumes from its checkpoint).

Every policy is evaluated twice on the same episodes, so that base and RFS are compared like for
like: *sampled* (the base with ``a0 ~ N(0, I)``, a steering policy sampled from its Gaussian) and
*at the mean* (the base at ``a0 = 0``, a steering policy at its mean). An untrained steering
head at its mean is exactly the base at ``a0 = 0``, so that column shows what RL added; the
sampled column is what the policy did while it trained."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from experiments.common import console, write_json
from experiments.presets import preset
from rfs_jax.agents.ppo import PPOConfig
from rfs_jax.steering import SteeringConfig


@dataclasses.dataclass
class PipelineArgs:
    """Run the whole pipeline on one task and print base vs RFS success."""

    task: str = "grasp"
    preset: str = "cpu"
    """Steering preset (experiments/presets.py)."""
    out: Path | None = None
    """Folder of the task's runs (default: runs/<task>)."""
    num_demos: int = 400
    """Expert demonstrations for the base policy."""
    demo_envs: int = 256
    """Envs collecting demonstrations in parallel."""
    flow_updates: int | None = None
    """Flow training updates (default: FlowConfig's)."""
    modes: tuple[str, ...] = ("rfs",)
    """Steering modes to run with the same budget (rfs, dsrl, residual)."""
    total_env_steps: int | None = None
    """RL budget per mode (default: the preset's)."""
    num_envs: int | None = None
    """Parallel envs for RL (default: the preset's)."""
    eval_episodes: int = 512
    """Episodes of the final evaluations of the base and of every mode."""
    seed: int = 0
    fresh: bool = False
    """Redo every stage even where its outputs exist."""
    video_episodes: int = 4
    """Episodes in the video of every policy at its end (`rfs video` at the mean, written to
    <out>/videos/<policy>.mp4 with a PNG strip); 0: no videos."""
    ppo: PPOConfig = None  # type: ignore[assignment]  # filled from --preset
    """PPO, budget, evaluation and checkpoint cadence of every steering stage (default: the
    preset's; ``--num-envs`` and ``--total-env-steps`` override these)."""
    steering: SteeringConfig = None  # type: ignore[assignment]  # filled from --preset
    """Steering head of every steering stage (default: the preset's; the mode is set per
    stage from ``--modes``)."""

    def __post_init__(self):
        p = preset(self.preset)
        if self.ppo is None:
            self.ppo = p.ppo
        if self.steering is None:
            self.steering = p.steering


def cli_default(argv) -> PipelineArgs:
    """The defaults ``rfs pipeline ARGV`` parses against: ``--preset``'s PPO and steering
    settings, so that ``--ppo.*`` / ``--steering.*`` flags override the preset's."""
    from experiments.steer import _flag_value

    name = _flag_value(argv, "--preset")
    try:
        return PipelineArgs(preset=name) if name else PipelineArgs()
    except ValueError:  # an unknown preset: tyro's own choice check reports it
        return PipelineArgs()


def pipeline(args: PipelineArgs) -> dict:
    from experiments.base import BaseArgs, base
    from experiments.demos import DemosArgs, demos
    from experiments.steer import SteerArgs, evaluate_run, steer
    from rfs_jax.flow import FlowConfig

    out = args.out or Path("runs") / args.task
    t0 = time.time()
    summary: dict = {"task": args.task, "preset": args.preset, "stages": {}}

    demos_path = out / "demos.hdf5"
    if args.fresh or not demos_path.exists():
        d = demos(
            DemosArgs(
                task=args.task,
                num=args.num_demos,
                out=demos_path,
                num_envs=args.demo_envs,
                seed=args.seed,
            )
        )
        summary["expert_success"] = d["expert_success"]
    else:
        console.print(f"reusing {demos_path}")
        from rfs_jax.demos import load_demos

        summary["expert_success"] = load_demos(demos_path).expert_success
    summary["stages"]["demos_s"] = time.time() - t0

    base_dir = out / "base"
    base_eval = base_dir / "eval.json"
    base_trained = args.fresh or not base_eval.exists()
    if base_trained:
        flow = FlowConfig()
        if args.flow_updates:
            flow = dataclasses.replace(flow, num_updates=args.flow_updates)
        base(
            BaseArgs(
                task=args.task,
                demos=demos_path,
                out=base_dir,
                flow=flow,
                eval_episodes=args.eval_episodes,
                seed=args.seed,
            )
        )
    else:
        console.print(f"reusing {base_dir}")
    summary["base"] = json.loads(base_eval.read_text())
    summary["base_mean"] = _evaluation(
        base_dir / "eval_mean.json",
        base_trained,
        lambda: evaluate_run(
            base_dir, episodes=args.eval_episodes, deterministic=True, seed=args.seed + 1
        ),
    )
    summary["stages"]["base_s"] = time.time() - t0

    for mode in args.modes:
        run_dir = out / mode
        changes = {"task": args.task, "base": base_dir, "mode": mode, "out": run_dir}
        changes["seed"] = args.seed
        if args.num_envs:
            changes["num_envs"] = args.num_envs
        if args.total_env_steps:
            changes["total_env_steps"] = args.total_env_steps
        resume = (run_dir / "config.json").exists() and not args.fresh
        steer(
            SteerArgs(
                preset=args.preset,
                ppo=args.ppo,
                steering=args.steering,
                resume=resume,
                overwrite=args.fresh,
                **changes,
            )
        )
        # Always redone: the run may have trained on since the last evaluation.
        for name, file, deterministic in (
            (mode, "eval_final.json", True),
            (f"{mode}_sampled", "eval_final_sampled.json", False),
        ):
            summary[name] = evaluate_run(
                run_dir,
                episodes=args.eval_episodes,
                deterministic=deterministic,
                seed=args.seed + 1,
            )
            write_json(run_dir / file, summary[name])
        summary["stages"][f"{mode}_s"] = time.time() - t0

    summary["wall_s"] = time.time() - t0
    if args.modes:
        from rfs_jax.logging import plot_curves

        summary["curves"] = str(plot_curves([out / m for m in args.modes], out / "curves.png"))
    write_json(out / "pipeline.json", summary)
    _print_table(summary, args.modes)
    if args.video_episodes > 0:
        summary["videos"] = _videos(out, base_dir, args)
        write_json(out / "pipeline.json", summary)
    return summary


def _videos(out: Path, base_dir: Path, args: PipelineArgs) -> dict:
    """``rfs video`` of the base and of every mode at its mean (the deployed form), on the same
    episodes; a failure (no EGL on the machine, say) is reported and skips that video only: the
    results above are written already."""
    from experiments.video import VideoArgs, video

    videos = {}
    for name, folder in (("base", base_dir), *((m, out / m) for m in args.modes)):
        target = out / "videos" / f"{name}.mp4"
        try:
            result = video(
                VideoArgs(run=folder, episodes=args.video_episodes, out=target, seed=args.seed)
            )
        except Exception as e:  # noqa: BLE001 - a video must not cost the pipeline its results
            console.print(f"[bold yellow]warning:[/] no video of {name}: {e}")
            continue
        videos[name] = {"mp4": result["video"], "strip": result["strip"]}
    return videos


def _evaluation(path: Path, fresh: bool, run) -> dict:
    """The evaluation stored at ``path``, or ``run()``'s, written there."""
    if path.exists() and not fresh:
        return json.loads(path.read_text())
    result = run()
    write_json(path, result)
    return result


def _print_table(summary: dict, modes) -> None:
    from rich.table import Table

    table = Table(
        title=f"{summary['task']}: success over {summary['base']['episodes']} episodes",
        caption="sampled: base a0 ~ N(0, I), steering policy sampled; "
        "at the mean: base a0 = 0, steering policy at its mean",
    )
    for column in ("policy", "sampled", "at the mean", "env steps of RL"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    if summary.get("expert_success") is not None:
        table.add_row("scripted expert", f"{summary['expert_success']:.3f}", "-", "-")
    table.add_row(
        "flow base",
        f"{summary['base']['success_rate']:.3f}",
        f"{summary['base_mean']['success_rate']:.3f}",
        "0",
    )
    for mode in modes:
        mean, sampled = summary[mode], summary[f"{mode}_sampled"]
        table.add_row(
            mode,
            f"{sampled['success_rate']:.3f}",
            f"{mean['success_rate']:.3f}",
            f"{mean['env_steps']:,}",
        )
    console.print(table)
    console.print(f"pipeline wall time {summary['wall_s'] / 60:.1f} min")
