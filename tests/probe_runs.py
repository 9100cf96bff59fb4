"""The probe runs that several test modules share: a tiny flow base on the bimodal probe's demos
and one uninterrupted ``probe``-preset run through the command line (session fixtures in
conftest.py, so a worker builds them once), and helpers to compare runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest

from envs.probes import BimodalGoalConfig, BimodalGoalEnv
from experiments.presets import PRESETS
from experiments.steer import SteerArgs
from rfs_jax.flow import FlowConfig, chunks_from_episodes, save_flow, train_flow

TASK = "probe_bimodal"
FLOW = FlowConfig(
    horizon=4,
    exec_horizon=2,
    num_steps=2,
    hidden=(32, 32),
    num_updates=100,
    warmup_steps=10,
    batch_size=64,
)
PROBE = PRESETS["probe"]
NUM_ITERATIONS = PROBE.ppo.num_iterations(FLOW.exec_horizon)
PER_ITERATION = PROBE.ppo.env_steps_per_iteration(FLOW.exec_horizon)

# A failed orbax read can leave a tensorstore callback aimed at orbax's closed event loop; it is
# reported as an "unraisable" RuntimeError after the test and is harmless.
UNREADABLE_READ = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def make_base(directory: Path) -> Path:
    """A flow base trained briefly on the probe's demos, saved like `rfs base` does."""
    env = BimodalGoalEnv()
    obs, chunks = chunks_from_episodes(env.demo_episodes(jax.random.key(0), 64), FLOW.horizon)
    params, _ = train_flow(FLOW, obs, chunks, jax.random.key(1), progress=False)
    meta = {"task": TASK, "env_config": dataclasses.asdict(BimodalGoalConfig())}
    return save_flow(directory, FLOW, params, meta=meta)


def full_run_argv(base_dir: Path, out: Path) -> list[str]:
    """The command line of the shared uninterrupted run (``rfs`` omitted)."""
    return ["steer", "--task", TASK, "--base", str(base_dir), "--mode", "rfs"] + [
        "--preset",
        "probe",
        "--out",
        str(out),
        "--no-progress",
    ]


def probe_args(base_dir, out, **changes) -> SteerArgs:
    return SteerArgs.from_preset("probe", base=base_dir, out=out, progress=False, **changes)


def _comparable(rows):
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def assert_same_rows(rows, expected):
    assert [r["iteration"] for r in rows] == [r["iteration"] for r in expected]
    for row, ref in zip(_comparable(rows), _comparable(expected), strict=True):
        assert set(row) == set(ref), (sorted(row), sorted(ref))
        for k in ref:
            np.testing.assert_allclose(row[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
