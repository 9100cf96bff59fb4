"""The run layer of ``rfs steer`` / ``rfs eval`` on the bimodal probe with a tiny flow base:
checkpoints (round trip, resume, unreadable newest), logs, presets, errors, and a CLI smoke run.

Runs share one base and one uninterrupted run (module fixtures); every run is the ``probe``
preset (4 iterations of 64 envs), so the file stays well under two minutes on 2 cores.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tyro
from probe_runs import (
    FLOW,
    NUM_ITERATIONS,
    PER_ITERATION,
    PROBE,
    TASK,
    UNREADABLE_READ,
    assert_same_rows,
    probe_args,
)

from envs.probes import PROBES, BimodalGoalEnv
from envs.wrappers import wrap
from experiments import cli
from experiments.base import load_base
from experiments.pipeline import PipelineArgs, pipeline
from experiments.presets import PRESETS
from experiments.steer import SteerArgs, cli_default, evaluate_run, steer
from rfs_jax.agents.ppo import (
    NonFiniteError,
    abstract_training_state,
    check_finite,
    init_training_state,
    make_networks,
    make_policy,
    train,
)
from rfs_jax.checkpoint import Checkpointer, CheckpointError, NonFiniteStateError
from rfs_jax.demos import DemoSet, Episode, save_demos
from rfs_jax.flow import make_sampler
from rfs_jax.logging import MetricsLogger, plot_curves, read_metrics


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("steer")


@pytest.fixture(scope="module")
def base_dir(probe_base):
    return probe_base


@pytest.fixture(scope="module")
def full_run(probe_full_run):
    """The uninterrupted run of the probe preset, through the command line (conftest.py)."""
    return probe_full_run


_assert_same_rows = assert_same_rows


# --------------------------------------------------------------------------- CLI smoke


def test_cli_steer_writes_the_run_folder(full_run):
    config = json.loads((full_run / "config.json").read_text())
    assert config["task"] == TASK and config["mode"] == "rfs" and config["preset"] == "probe"
    assert config["ppo"]["num_envs"] == PROBE.ppo.num_envs
    assert config["flow"]["horizon"] == FLOW.horizon and config["base"].endswith("base")
    rows = read_metrics(full_run)
    assert [r["iteration"] for r in rows] == list(range(1, NUM_ITERATIONS + 1))
    assert {"ppo/clip_frac", "env/success", "perf/env_steps_per_s"} <= set(rows[0])
    assert "eval/success_rate" in rows[-1] and "eval/success_rate" not in rows[0]
    result = json.loads((full_run / "eval.json").read_text())
    assert {"task", "mode", "episodes", "success_rate", "return_mean", "env_steps"} <= set(result)
    assert result["env_steps"] == NUM_ITERATIONS * PER_ITERATION
    assert result["success_rate"] == rows[-1]["eval/success_rate"]
    assert (full_run / "curves.png").stat().st_size > 0
    assert glob.glob(str(full_run / "events.out.tfevents.*"))
    with Checkpointer(full_run / "checkpoints") as ckpt:  # every iteration, newest 3 kept
        assert ckpt.steps() == [2, 3, 4]


def test_cli_eval_of_a_run_and_of_a_base(full_run, base_dir, tmp_path):
    cli.main(["eval", "--run", str(full_run), "--json", str(tmp_path / "run.json")])
    result = json.loads((tmp_path / "run.json").read_text())
    assert result["task"] == TASK and result["mode"] == "rfs"
    assert result["iteration"] == NUM_ITERATIONS and result["episodes"] == PROBE.ppo.eval_episodes
    assert 0.0 <= result["success_rate"] <= 1.0
    base = evaluate_run(base_dir, episodes=16)
    assert base["mode"] == "base" and base["episodes"] == 16


def test_pipeline_compares_base_and_rfs_like_for_like(base_dir, workdir):
    """`rfs pipeline` on the probe, its demos and base already there (the probe has no scripted
    expert): it reuses both, trains RFS and evaluates base and RFS sampled and at the mean."""
    out = workdir / "pipeline"
    episodes = [
        Episode(obs, actions, np.zeros(len(actions)), np.zeros(len(actions)), True)
        for obs, actions in BimodalGoalEnv().demo_episodes(jax.random.key(0), 4)
    ]
    save_demos(out / "demos.hdf5", DemoSet(TASK, {}, episodes, expert_success=0.5))
    shutil.copytree(base_dir, out / "base")
    (out / "base" / "eval.json").write_text(json.dumps(evaluate_run(base_dir, episodes=32)))

    # --ppo.* / --steering.* reach the steering stage (the preset gives the rest).
    ppo = dataclasses.replace(PROBE.ppo, policy_lr=2e-4)
    steering = dataclasses.replace(PROBE.steering, residual_scale=0.15)
    args = PipelineArgs(
        task=TASK, preset="probe", out=out, eval_episodes=32, ppo=ppo, steering=steering
    )
    summary = pipeline(args)

    config = json.loads((out / "rfs" / "config.json").read_text())
    assert config["ppo"]["policy_lr"] == 2e-4 and config["steering"]["residual_scale"] == 0.15
    assert config["ppo"]["num_envs"] == PROBE.ppo.num_envs
    assert (out / "curves.png").stat().st_size > 0  # every mode's curves, one per task
    assert summary["expert_success"] == 0.5
    assert json.loads((out / "pipeline.json").read_text())["rfs"] == summary["rfs"]
    for name, deterministic in (("base", False), ("base_mean", True), ("rfs", True)):
        assert summary[name]["deterministic"] is deterministic, name
    assert summary["rfs_sampled"]["deterministic"] is False
    # The probe has no MuJoCo model to render: its videos are skipped with a warning, and the
    # results above are kept.
    assert summary["videos"] == {}
    assert summary["rfs"]["env_steps"] == NUM_ITERATIONS * PER_ITERATION
    # Same episodes as `rfs eval` of the same folders with the same seed.
    again = evaluate_run(out / "rfs", episodes=32, deterministic=False, seed=1)
    assert again["success_rate"] == summary["rfs_sampled"]["success_rate"]
    again = evaluate_run(out / "base", episodes=32, deterministic=True, seed=1)
    assert again["success_rate"] == summary["base_mean"]["success_rate"]


def test_pipeline_cli_takes_the_presets_settings_and_ppo_flags():
    from experiments.pipeline import cli_default

    argv = ["--preset", "probe", "--ppo.policy-lr", "5e-5", "--steering.latent-bound", "2.0"]
    args = tyro.cli(PipelineArgs, args=argv, default=cli_default(argv))
    assert args.ppo.policy_lr == 5e-5 and args.steering.latent_bound == 2.0
    assert args.ppo.num_envs == PROBE.ppo.num_envs  # the rest is the probe preset's
    assert PipelineArgs(preset="gpu").ppo == PRESETS["gpu"].ppo


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_gives_identical_actions(base_dir, tmp_path):
    _, env, flow_cfg, base_params, _ = load_base(base_dir)
    sampler = make_sampler(flow_cfg, env.observation_size, env.action_size)
    kw = {"horizon": flow_cfg.horizon, "exec_horizon": flow_cfg.exec_horizon}
    networks = make_networks(env, sampler, PROBE.steering, PROBE.ppo, **kw)
    key = jax.random.key(0)
    episode_length = env.config.episode_length
    state = init_training_state(wrap(env, episode_length), networks, PROBE.ppo, key)
    # Move every param off its initial value (the head's output layer starts at zero).
    leaves, treedef = jax.tree.flatten(state.steering_params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    state = state.replace(steering_params=jax.tree.unflatten(treedef, leaves))

    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(7, state, config={"note": "round trip"})
        abstract = abstract_training_state(env, episode_length, networks, PROBE.ppo, key)
        step, restored = ckpt.restore_latest(abstract)
    assert step == 7
    raw = jax.tree.map(
        lambda x: (
            jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        ),
        (state, restored),
    )
    jax.tree.map(np.testing.assert_array_equal, raw[0], raw[1])

    policy = jax.jit(make_policy(networks, base_params), static_argnames="deterministic")
    obs = jax.vmap(env.reset)(jax.random.split(jax.random.key(2), 32)).obs
    for deterministic in (False, True):
        a = policy(state.policy_params, obs, jax.random.key(3), deterministic=deterministic)
        b = policy(restored.policy_params, obs, jax.random.key(3), deterministic=deterministic)
        np.testing.assert_array_equal(a, b)
    assert float(np.abs(np.asarray(a)).max()) > 0.0


def test_non_finite_states_are_never_saved(tmp_path):
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(1, {"w": np.ones(3, np.float32)})
        with pytest.raises(NonFiniteStateError, match=r"step 2.*\['w'\]"):
            ckpt.save(2, {"w": np.array([1.0, np.nan, 0.0], np.float32)})
        assert ckpt.steps() == [1]


def test_non_finite_metrics_stop_with_a_diagnosis():
    check_finite({"ppo/loss": 1.0, "env/success": 0.5}, 3)
    with pytest.raises(NonFiniteError, match=r"ppo/loss = nan at iteration 3.*policy-lr"):
        check_finite({"ppo/loss": float("nan"), "env/success": 0.5}, 3)
    with pytest.raises(NonFiniteError, match=r"reward/lift = inf at iteration 9.*env"):
        check_finite({"ppo/loss": float("nan"), "reward/lift": float("inf")}, 9)


def test_a_diverged_update_stops_training_before_its_checkpoint(base_dir, full_run):
    """NaN value params make the losses NaN at the first iteration: train stops with the
    diagnosis before the checkpoint hook sees the state. (The probe preset's configs, so the
    compiled step is the full run's, from the persistent cache.)"""
    _, env, flow_cfg, base_params, _ = load_base(base_dir)
    sampler = make_sampler(flow_cfg, env.observation_size, env.action_size)
    kw = {"horizon": flow_cfg.horizon, "exec_horizon": flow_cfg.exec_horizon}
    networks = make_networks(env, sampler, PROBE.steering, PROBE.ppo, **kw)
    episode_length = env.config.episode_length
    state = init_training_state(wrap(env, episode_length), networks, PROBE.ppo, jax.random.key(0))
    state = state.replace(value_params=jax.tree.map(lambda x: x * np.nan, state.value_params))
    saved = []
    with pytest.raises(NonFiniteError, match=r"non-finite ppo/loss = nan at iteration 1.*lr"):
        train(
            env,
            episode_length,
            sampler,
            base_params,
            PROBE.steering,
            PROBE.ppo,
            jax.random.key(0),
            checkpoint_fn=lambda it, s: saved.append(it),
            initial_state=state,
            **kw,
        )
    assert saved == []


def test_a_run_never_writes_into_a_base_folder(base_dir, tmp_path):
    """`rfs steer --mode base` used to default to runs/<task>/base, the base's own folder, and
    replace its config.json; any --out holding a base policy is refused."""
    config = (base_dir / "config.json").read_text()
    with pytest.raises(ValueError, match="holds a base policy"):
        steer(probe_args(base_dir, base_dir, mode="base"))
    copy = tmp_path / "copy_of_base"
    shutil.copytree(base_dir, copy)
    with pytest.raises(ValueError, match="holds a base policy"):
        steer(probe_args(base_dir, copy, mode="rfs", overwrite=True))
    assert (base_dir / "config.json").read_text() == config
    assert (copy / "config.json").read_text() == config


def test_a_part_restores_whatever_shapes_the_rest_of_the_state_has(tmp_path):
    """Evaluating a policy in another env (other object shapes: other contact arrays in the env
    state) restores its params alone; the whole state would not fit."""
    saved = {"env": jnp.arange(4.0), "policy": {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}}
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(1, saved)
        abstract = jax.eval_shape(
            lambda: {"env": jnp.zeros(7), "policy": {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}}
        )
        with pytest.raises(ValueError, match="not compatible with the stored shape"):
            ckpt.restore(1, abstract)
        step, policy = ckpt.restore_latest(abstract, part=lambda s: s["policy"])
        assert step == 1
        np.testing.assert_array_equal(policy["w"], 1.0)
        bad = jax.eval_shape(
            lambda: {"env": jnp.zeros(7), "policy": {"w": jnp.zeros((3, 3)), "b": jnp.zeros(3)}}
        )
        with pytest.raises(ValueError, match="does not match"):
            ckpt.restore(1, bad, part=lambda s: s["policy"])


@UNREADABLE_READ
def test_unreadable_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    messages = []
    with Checkpointer(tmp_path / "ckpt", log=messages.append) as ckpt:
        for step in (1, 2):
            ckpt.save(step, {"w": np.full(4, float(step), np.float32)})
        newest = ckpt.path(2)
    for f in glob.glob(str(newest / "**" / "d" / "*"), recursive=True):
        with open(f, "wb") as fh:
            fh.write(b"garbage")
    abstract = {"w": jax.ShapeDtypeStruct((4,), np.float32)}
    with Checkpointer(tmp_path / "ckpt", log=messages.append) as ckpt:
        step, state = ckpt.restore_latest(abstract)
        assert step == 1 and ckpt.steps() == [1]
    np.testing.assert_array_equal(state["w"], 1.0)
    assert any(str(newest) in m and "cannot be read" in m for m in messages), messages
    assert (tmp_path / "ckpt_unreadable" / "2").is_dir()
    # No readable step at all: an error naming them, and nothing moved.
    with Checkpointer(tmp_path / "ckpt", log=messages.append) as ckpt:
        with pytest.raises(CheckpointError, match=str(ckpt.path(1))):
            ckpt.restore_latest({"w": jax.ShapeDtypeStruct((5, 2), np.float32)})
        assert ckpt.steps() == [1]


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_saves_and_resume_continues_like_an_uninterrupted_run(
    full_run, base_dir, workdir, sig
):
    """Ctrl-C, or the SIGTERM a cluster sends before it kills a job."""
    out = workdir / "runs" / f"rfs_resumed_{sig.name}"
    # Checkpoints only every 3 iterations: the one at the interrupt comes from Ctrl-C.
    args = probe_args(
        base_dir, out, mode="rfs", ppo=dataclasses.replace(PROBE.ppo, ckpt_interval=3)
    )

    def interrupt(it, record):
        if it == 2:
            signal.raise_signal(sig)

    handler = signal.getsignal(sig)
    with pytest.raises(KeyboardInterrupt):
        steer(args, on_iteration=interrupt)
    assert signal.getsignal(sig) is handler
    with Checkpointer(out / "checkpoints") as ckpt:
        assert ckpt.steps() == [2]
    assert [r["iteration"] for r in read_metrics(out)] == [1, 2]
    assert not (out / "eval.json").exists()

    result = steer(dataclasses.replace(args, resume=True))
    assert result["iteration"] == NUM_ITERATIONS
    assert result["env_steps"] == NUM_ITERATIONS * PER_ITERATION
    _assert_same_rows(read_metrics(out), read_metrics(full_run))
    expected = json.loads((full_run / "eval.json").read_text())
    np.testing.assert_allclose(result["success_rate"], expected["success_rate"])
    np.testing.assert_allclose(result["return_mean"], expected["return_mean"], rtol=1e-5)


@UNREADABLE_READ
def test_resume_past_an_unreadable_checkpoint_extends_the_run(full_run, workdir, capsys):
    out = workdir / "corrupt" / "rfs"
    shutil.copytree(full_run, out)
    newest = out / "checkpoints" / str(NUM_ITERATIONS)
    for f in glob.glob(str(newest / "**" / "manifest.ocdbt"), recursive=True):
        with open(f, "wb") as fh:
            fh.write(b"xx")
    # Resume through the command line with only what changes: a budget one iteration longer.
    total = (NUM_ITERATIONS + 1) * PER_ITERATION
    cli.main(["steer", "--out", str(out), "--resume", "--total-env-steps", str(total)])
    printed = " ".join(capsys.readouterr().out.split())
    assert str(newest) in printed and "cannot be read" in printed
    rows = read_metrics(out)
    assert [r["iteration"] for r in rows] == list(range(1, NUM_ITERATIONS + 2))
    # The iterations before the fallback point are the original run's.
    _assert_same_rows(rows[: NUM_ITERATIONS - 1], read_metrics(full_run)[: NUM_ITERATIONS - 1])
    assert json.loads((out / "eval.json").read_text())["iteration"] == NUM_ITERATIONS + 1
    assert json.loads((out / "config.json").read_text())["ppo"]["total_env_steps"] == total


def test_metrics_logger_cuts_back_to_the_resumed_iteration(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        for it in (1, 2, 3):
            log.write({"iteration": it, "env_steps": 10 * it, "env/success": 0.1 * it})
        log.write({"iteration": 4, "env_steps": 40, "eval/success_rate": 0.5})  # widens
    assert [r["iteration"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    with MetricsLogger(tmp_path, resume_iteration=2, tensorboard=False) as log:
        log.write({"iteration": 3, "env_steps": 30, "env/success": 0.9})
    rows = read_metrics(tmp_path)
    assert [r["iteration"] for r in rows] == [1, 2, 3] and rows[-1]["env/success"] == 0.9
    plot_curves([tmp_path, tmp_path / "missing"], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


# --------------------------------------------------------------------------- presets, errors


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_constructs(name):
    args = tyro.cli(SteerArgs, args=[], default=cli_default(["--preset", name]))
    assert args.preset == name and args.ppo == PRESETS[name].ppo
    assert args.ppo.num_iterations(FLOW.exec_horizon) >= 1
    changed = tyro.cli(
        SteerArgs, args=["--ppo.num-envs", "128"], default=cli_default(["--preset", name])
    )
    assert changed.ppo == dataclasses.replace(PRESETS[name].ppo, num_envs=128)
    assert changed.steering == PRESETS[name].steering


def test_presets_are_sized_for_their_machines():
    assert PRESETS["gpu"].ppo.num_envs >= 4096
    assert PRESETS["cpu"].ppo.num_envs <= 512
    assert PRESETS["probe"].ppo.total_env_steps <= 10_000


def test_bad_arguments_are_clear_errors(base_dir, full_run, tmp_path):
    with pytest.raises(ValueError, match=r"unknown steering mode 'rsf'.*rfs.*dsrl"):
        steer(probe_args(base_dir, tmp_path / "a", mode="rsf"))
    with pytest.raises(FileNotFoundError, match=r"no base policy at .*nope.*rfs base"):
        steer(probe_args(tmp_path / "nope", tmp_path / "b"))
    with pytest.raises(ValueError, match="--task grasp does not match .*probe_bimodal"):
        steer(probe_args(base_dir, tmp_path / "c", task="grasp"))
    with pytest.raises(FileNotFoundError, match=r"no run to resume at .*missing.*without --resume"):
        steer(probe_args(base_dir, tmp_path / "missing", resume=True))
    with pytest.raises(ValueError, match="already holds a run.*--resume.*--overwrite"):
        steer(probe_args(base_dir, full_run, mode="rfs"))
    bigger = dataclasses.replace(PROBE.ppo, num_envs=128)
    with pytest.raises(ValueError, match=r"cannot resume .*ppo\.num_envs"):
        steer(probe_args(base_dir, full_run, mode="rfs", ppo=bigger, resume=True))
    with pytest.raises(FileNotFoundError, match="nothing to evaluate at"):
        evaluate_run(tmp_path / "nothing")
    assert not any(tmp_path.iterdir())  # no error left a folder behind
    with pytest.raises(SystemExit) as e:  # the CLI reports the same errors, exit status 2
        cli.main(["steer", "--base", str(tmp_path / "nope"), "--preset", "probe"])
    assert e.value.code == 2
    with pytest.raises(ValueError, match="unknown task"):
        from experiments.base import make_task_env

        make_task_env("no_such_task")


def test_probe_tasks_stay_out_of_the_hand_registry():
    import envs

    assert TASK in PROBES and TASK not in envs.tasks()
