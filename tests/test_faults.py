"""Faults and bad input through the command line, as a user meets them: one line naming the fix,
exit code 2, no traceback, and nothing already on disk damaged or half-written.

Here: bad arguments and overrides, damaged demos, a run folder that is a file, read-only, full,
locked by a running `rfs steer`, or holds a garbage config.json, all checkpoints unreadable,
``kill -9`` then ``--resume``, resuming with the lower step size a divergence asks for.
In tests/test_steer.py, next to the runs they need: SIGINT and SIGTERM save and resume, the
newest checkpoint unreadable (fallback), a base folder as ``--out``, a diverged update stops
before its checkpoint, settings that cannot resume. Runs are the probe preset's (conftest.py).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from probe_runs import (
    NUM_ITERATIONS,
    PER_ITERATION,
    TASK,
    UNREADABLE_READ,
    assert_same_rows,
    full_run_argv,
    probe_args,
)

import experiments.steer
from envs.probes import BimodalGoalEnv
from experiments import cli
from experiments.steer import steer
from rfs_jax.checkpoint import Checkpointer
from rfs_jax.demos import DemoSet, Episode, save_demos
from rfs_jax.logging import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())
    assert "Traceback" not in text
    return text


def test_unknown_command_is_refused_even_with_help(capsys):
    text = _error(capsys, ["frobnicate", "--help"])
    assert "unknown command 'frobnicate'" in text and "steer" in text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("object.mass_range=abc", "wrong type: expected a value like (0.1, 0.5)"),
        ("episode_length=2.7", "wrong type: expected a value like 100"),
        ("KEY", "must look like KEY=VALUE"),
        ("object.colour=red", "unknown config key 'object.colour'"),
        ("object.shape=cylinder", "shapes that work in this task: box, sphere, capsule"),
    ],
)
def test_bad_overrides_name_the_problem(capsys, tmp_path, override, message):
    text = _error(
        capsys,
        ["demos", "--task", "grasp", "--num", "4", "--out", str(tmp_path / "d.hdf5")]
        + ["--override", override],
    )
    assert message in text
    assert not (tmp_path / "d.hdf5").exists()


def test_zero_budgets_are_refused(capsys, tmp_path):
    assert "--episodes must be positive" in _error(
        capsys, ["eval", "--run", str(tmp_path), "--episodes", "0"]
    )
    text = _error(
        capsys,
        ["steer", "--task", "grasp", "--base", str(tmp_path), "--total-env-steps", "0"],
    )
    assert "total_env_steps must be positive" in text


# --------------------------------------------------------------------------- demos and bases


@pytest.fixture(scope="module")
def probe_demos(tmp_path_factory):
    import jax
    import numpy as np

    episodes = [
        Episode(obs, actions, np.zeros(len(actions)), np.zeros(len(actions)), True)
        for obs, actions in BimodalGoalEnv().demo_episodes(jax.random.key(0), 4)
    ]
    path = tmp_path_factory.mktemp("demos") / "probe.hdf5"
    return save_demos(path, DemoSet(TASK, {}, episodes, expert_success=0.5)) or path


def test_damaged_or_foreign_demos_are_refused(capsys, tmp_path, probe_demos):
    truncated = tmp_path / "truncated.hdf5"
    data = Path(probe_demos).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.hdf5"
    garbage.write_bytes(b"not hdf5 at all")
    for path in (truncated, garbage):
        text = _error(capsys, ["base", "--task", "grasp", "--demos", str(path)] + _out(tmp_path))
        assert "not a readable rfs demo file" in text and str(path) in text
    text = _error(capsys, ["base", "--task", "grasp", "--demos", str(probe_demos)] + _out(tmp_path))
    assert "not 'grasp'" in text
    text = _error(capsys, ["base", "--task", "grasp", "--demos", str(tmp_path / "none.hdf5")])
    assert "rfs demos" in text
    assert not (tmp_path / "base").exists()


def _out(tmp_path):
    return ["--out", str(tmp_path / "base")]


def test_a_missing_or_foreign_base_and_a_taken_out_are_refused(capsys, tmp_path, probe_base):
    text = _error(capsys, ["steer", "--base", str(tmp_path / "nope"), "--preset", "probe"])
    assert "no base policy at" in text and "rfs base" in text
    text = _error(
        capsys, ["steer", "--task", "grasp", "--base", str(probe_base), "--preset", "probe"]
    )
    assert "does not match the base policy" in text
    argv = ["steer", "--base", str(probe_base), "--preset", "probe", "--ppo.num-envs", "48"]
    assert "not divisible by minibatch_size" in _error(capsys, argv)
    assert "num_envs must be positive" in _error(capsys, argv[:-1] + ["0"])


# --------------------------------------------------------------------------- the run folder


def _copy_run(full_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(full_run, out)
    return out


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_out_naming_a_file_is_refused(capsys, tmp_path, probe_base):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    argv = ["steer", "--base", str(probe_base), "--preset", "probe", "--out", str(out)]
    assert "is a file, not a folder" in _error(capsys, argv)
    assert out.read_text() == "mine"


def _read_only_out(tmp_path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder / "run"
    return Path("/sys/kernel/rfs_jax_run")  # sysfs refuses new entries, even to root


def test_read_only_and_full_output_folders_fail_before_training(
    capsys, tmp_path, probe_base, monkeypatch
):
    argv = ["steer", "--base", str(probe_base), "--preset", "probe", "--no-progress"]
    out = _read_only_out(tmp_path)
    text = _error(capsys, argv + ["--out", str(out)])
    assert f"cannot write to --out {out}" in text and not out.exists()

    def full(path):
        return shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6)  # 1 MB free

    monkeypatch.setattr(experiments.steer.shutil, "disk_usage", full)
    out = tmp_path / "full" / "run"
    text = _error(capsys, argv + ["--out", str(out)])
    assert "MB free under" in text and "--keep-checkpoints" in text
    assert not out.exists()  # the folder it made to look is gone again


def test_a_garbage_config_json_is_named(capsys, tmp_path, probe_full_run):
    out = _copy_run(probe_full_run, tmp_path)
    (out / "config.json").write_text("{ this is not json")
    before = _tree(out)
    for argv in (["steer", "--out", str(out), "--resume"], ["eval", "--run", str(out)]):
        text = _error(capsys, argv)
        assert f"{out / 'config.json'} is not a readable run config" in text, text
    (out / "config.json").write_text('{"task": "probe_bimodal"}')
    assert "is not the config of a steering run" in _error(
        capsys, ["steer", "--out", str(out), "--resume"]
    )
    (out / "config.json").write_bytes(before["config.json"])
    assert _tree(out) == before


@UNREADABLE_READ
def test_all_checkpoints_unreadable_is_an_error_not_a_new_run(capsys, tmp_path, probe_full_run):
    out = _copy_run(probe_full_run, tmp_path)
    for f in glob.glob(str(out / "checkpoints" / "**" / "manifest.ocdbt"), recursive=True):
        Path(f).write_bytes(b"xx")
    metrics = (out / "metrics.csv").read_bytes()
    total = str((NUM_ITERATIONS + 1) * PER_ITERATION)
    text = _error(capsys, ["steer", "--out", str(out), "--resume", "--total-env-steps", total])
    assert "can be restored" in text
    assert (out / "metrics.csv").read_bytes() == metrics
    # `rfs eval` in its own process: one line, no traceback from orbax's threads at exit.
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "eval", "--run", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "can be restored" in " ".join(proc.stdout.split())
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr


def test_a_second_steer_on_a_running_out_is_refused_and_the_first_is_unharmed(
    tmp_path, probe_base, probe_full_run
):
    out = tmp_path / "runs" / "rfs"
    seen = {}

    def second_process(it, record):
        if it == 2:  # the first run is mid-way: a second one tries to start over it
            argv = full_run_argv(probe_base, out) + ["--overwrite"]
            seen["proc"] = subprocess.run(
                [sys.executable, "-m", "experiments.cli", *argv],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=300,
            )

    steer(probe_args(probe_base, out, task=TASK, mode="rfs"), on_iteration=second_process)
    proc = seen["proc"]
    text = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2 and "in use by another `rfs steer` (pid" in text, text
    assert "Traceback" not in text
    assert_same_rows(read_metrics(out), read_metrics(probe_full_run))
    assert (
        json.loads((out / "eval.json").read_text())["success_rate"]
        == json.loads((probe_full_run / "eval.json").read_text())["success_rate"]
    )


_KILL_AT_3 = """
import os, signal, sys
from pathlib import Path
from experiments.steer import SteerArgs, steer

base, out = Path(sys.argv[1]), Path(sys.argv[2])
args = SteerArgs.from_preset(
    "probe", task="probe_bimodal", base=base, mode="rfs", out=out, progress=False
)

def kill(it, record):
    if it == 3:  # after iteration 3's metrics, before its checkpoint
        os.kill(os.getpid(), signal.SIGKILL)

steer(args, on_iteration=kill)
"""


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, probe_base, probe_full_run):
    out = tmp_path / "runs" / "rfs"
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_AT_3, str(probe_base), str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stdout + proc.stderr
    with Checkpointer(out / "checkpoints") as ckpt:
        assert ckpt.steps() == [1, 2]
    assert [r["iteration"] for r in read_metrics(out)] == [1, 2, 3]
    assert not (out / "eval.json").exists()

    cli.main(["steer", "--out", str(out), "--resume", "--no-progress"])
    assert_same_rows(read_metrics(out), read_metrics(probe_full_run))
    ours, reference = (json.loads((d / "eval.json").read_text()) for d in (out, probe_full_run))
    assert ours["success_rate"] == reference["success_rate"]
    assert ours["iteration"] == NUM_ITERATIONS


def test_resume_with_a_lower_step_size_as_the_divergence_advice_says(tmp_path, probe_full_run):
    out = _copy_run(probe_full_run, tmp_path)
    total = str((NUM_ITERATIONS + 1) * PER_ITERATION)
    cli.main(
        ["steer", "--out", str(out), "--resume", "--no-progress", "--total-env-steps", total]
        + ["--ppo.policy-lr", "1e-4"]
    )
    config = json.loads((out / "config.json").read_text())
    assert config["ppo"]["policy_lr"] == 1e-4
    saved = json.loads((probe_full_run / "config.json").read_text())["ppo"]["policy_lr"]
    assert config["resume_changes"] == [{"ppo.policy_lr": [saved, 1e-4]}]
    assert [r["iteration"] for r in read_metrics(out)] == list(range(1, NUM_ITERATIONS + 2))
