"""Scale: the env batch split over a device mesh, two hosts through ``jax.distributed``, and
several seeds in one compiled program; each checked against plain single-device runs of the
``probe`` preset on the bimodal probe (a tiny, untrained flow base).

Device counts and distributed settings are read when JAX starts, so those runs go through
``tests/scale_worker.py`` in fresh processes (two CPU devices via
``XLA_FLAGS=--xla_force_host_platform_device_count=2``; two processes on localhost with gloo,
JAX's CPU collectives).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import rfs_jax.agents.ppo as ppo
from envs.probes import BimodalGoalConfig, BimodalGoalEnv
from experiments import cli
from experiments.presets import PRESETS
from rfs_jax import sharding
from rfs_jax.flow import FlowConfig, save_flow
from rfs_jax.flow.policy import init_flow_params
from rfs_jax.logging import read_metrics, seed_columns

TASK = "probe_bimodal"
FLOW = FlowConfig(horizon=4, exec_horizon=2, num_steps=2, hidden=(32, 32))
NUM_ITERATIONS = PRESETS["probe"].ppo.num_iterations(FLOW.exec_horizon)
WORKER = Path(__file__).with_name("scale_worker.py")
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("scale")


@pytest.fixture(scope="module")
def base_dir(workdir):
    """An untrained flow base: the comparisons need a frozen sampler, not a good one."""
    env = BimodalGoalEnv()
    params = init_flow_params(FLOW, env.observation_size, env.action_size, jax.random.key(7))
    meta = {"task": TASK, "env_config": dataclasses.asdict(BimodalGoalConfig())}
    return save_flow(workdir / "base", FLOW, params, meta=meta)


def steer_args(base_dir, out, *extra) -> list[str]:
    return ["--base", str(base_dir), "--preset", "probe", "--out", str(out), "--no-progress"] + [
        str(x) for x in extra
    ]


@contextlib.contextmanager
def capture_state():
    """Yields a dict that receives ``state`` of the next ``rfs steer`` run in this process."""
    captured, train = {}, ppo.train

    def capturing_train(*args, **kwargs):
        state, history = train(*args, **kwargs)
        captured["state"] = state
        return state, history

    ppo.train = capturing_train
    try:
        yield captured
    finally:
        ppo.train = train


def learned_params(state, seed: int | None = None) -> list[np.ndarray]:
    leaves = jax.tree.leaves((state.steering_params, state.value_params))
    return [np.asarray(x if seed is None else x[seed]) for x in leaves]


def steer_here(base_dir, out, *extra):
    """``rfs steer`` in this process: (eval.json, learned params, metrics rows)."""
    with capture_state() as captured:
        cli.main(["steer"] + steer_args(base_dir, out, *extra))
    result = json.loads((out / "eval.json").read_text())
    return result, captured["state"], read_metrics(out)


@pytest.fixture(scope="module")
def reference(base_dir, workdir):
    """Seed 0 on this process's single CPU device."""
    assert jax.device_count() == 1
    return steer_here(base_dir, workdir / "one_device")


def start_worker(params_file, argv, **env):
    environ = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    environ.update(env)
    log = open(str(params_file) + ".log", "w")  # noqa: SIM115  (closed by finish_worker)
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(params_file), *argv],
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, log


def finish_worker(proc, log, params_file) -> list[np.ndarray]:
    try:
        rc = proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = "timeout"
    log.close()
    output = Path(str(params_file) + ".log").read_text()
    assert rc == 0, f"worker exited with {rc}:\n{output[-4000:]}"
    with np.load(params_file) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def assert_close_params(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def assert_close_rows(rows, expected):
    assert [r["iteration"] for r in rows] == [r["iteration"] for r in expected]
    for row, ref in zip(rows, expected, strict=True):
        for k, v in ref.items():
            if not k.startswith("perf/"):
                np.testing.assert_allclose(row[k], v, rtol=1e-4, atol=1e-5, err_msg=k)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- devices


def test_two_devices_compute_what_one_device_computes(reference, base_dir, workdir):
    out = workdir / "two_devices"
    params_file = workdir / "two_devices.npz"
    proc, log = start_worker(
        params_file,
        steer_args(base_dir, out, "--num-devices", 2),
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    params = finish_worker(proc, log, params_file)
    result, state, rows = reference
    assert json.loads((out / "config.json").read_text())["num_devices"] == 2
    assert_close_params(params, learned_params(state))
    assert_close_rows(read_metrics(out), rows)
    got = json.loads((out / "eval.json").read_text())
    np.testing.assert_allclose(got["return_mean"], result["return_mean"], rtol=1e-4)


def test_the_batch_must_split_over_the_devices():
    with pytest.raises(ValueError, match=r"num_envs = 6 is not divisible by the 4 devices"):
        sharding.check_divisible(4, num_envs=6, minibatch_size=4)
    sharding.check_divisible(2, num_envs=6, minibatch_size=4)
    with pytest.raises(ValueError, match=r"num_devices = 3, but JAX sees 1 device"):
        sharding.make_mesh(3)
    assert sharding.make_mesh().shape == {sharding.DATA_AXIS: 1}


# --------------------------------------------------------------------------- hosts


def test_two_processes_end_with_the_single_process_params(reference, base_dir, workdir):
    """`rfs steer --distributed` on two localhost processes (one CPU device each): both end with
    identical params, equal to the one-device run's; process 0 alone wrote the logs."""
    out = workdir / "two_hosts"
    port = free_port()
    workers = []
    for process_id in range(2):
        params_file = workdir / f"two_hosts_{process_id}.npz"
        env = {
            "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(process_id),
        }
        argv = steer_args(base_dir, out, "--distributed")
        workers.append((*start_worker(params_file, argv, **env), params_file))
    params = [finish_worker(*w) for w in workers]
    for a, b in zip(*params, strict=True):
        np.testing.assert_array_equal(a, b)
    _, state, rows = reference
    assert_close_params(params[0], learned_params(state))
    config = json.loads((out / "config.json").read_text())
    assert config["num_processes"] == 2 and config["num_devices"] == 2
    assert_close_rows(read_metrics(out), rows)
    assert len(glob.glob(str(out / "events.out.tfevents.*"))) == 1  # one writer
    assert (out / "eval.json").is_file() and (out / "curves.png").is_file()


# --------------------------------------------------------------------------- seeds


def test_seeds_in_one_program_match_separate_runs(reference, base_dir, workdir):
    result_0, state_0, _ = reference
    result_1, state_1, _ = steer_here(base_dir, workdir / "seed_1", "--seed", 1)
    out = workdir / "seeds"
    result, state, rows = steer_here(base_dir, out, "--seeds", 2)

    for i, single in enumerate((state_0, state_1)):
        assert_close_params(learned_params(state, seed=i), learned_params(single))
    singles = [result_0["success_rate"], result_1["success_rate"]]
    np.testing.assert_allclose(result["success_rate_per_seed"], singles, atol=1e-6)
    np.testing.assert_allclose(result["success_rate"], np.mean(singles), atol=1e-6)
    np.testing.assert_allclose(result["success_rate_std"], np.std(singles), atol=1e-6)
    returns = [result_0["return_mean"], result_1["return_mean"]]
    np.testing.assert_allclose(result["return_mean_per_seed"], returns, rtol=1e-4)
    assert result["seeds"] == [0, 1] and result_1["seeds"] == [1]
    assert result_0["success_rate_per_seed"] == [result_0["success_rate"]]

    assert [r["iteration"] for r in rows] == list(range(1, NUM_ITERATIONS + 1))
    assert list(seed_columns(rows, "eval/success_rate")) == [0, 1]
    assert list(seed_columns(rows, "env/success")) == [0, 1]
    assert (out / "curves.png").stat().st_size > 0
    assert json.loads((out / "config.json").read_text())["seeds"] == 2

    # `rfs eval` of a multi-seed run evaluates every seed on the same episodes.
    evaluated = cli_eval(out, workdir / "seeds_eval.json")
    assert evaluated["seeds"] == [0, 1] and len(evaluated["success_rate_per_seed"]) == 2


def cli_eval(run, json_path):
    cli.main(["eval", "--run", str(run), "--json", str(json_path)])
    return json.loads(Path(json_path).read_text())
