"""``rfs bench`` pieces on a probe env (no MJX compile): every measurement, the brax PPO
comparison through the jax compatibility shim, and the settings matched to our preset."""

from __future__ import annotations

import jax
import pytest

from envs.probes import ConstantRewardEnv
from rfs_jax import bench
from rfs_jax.agents.ppo import PPOConfig
from rfs_jax.agents.sac import SACConfig
from rfs_jax.bench import brax_jax_compat, brax_ppo_settings, run_benchmarks, summary_rows
from rfs_jax.flow import FlowConfig
from rfs_jax.steering import SteeringConfig

SMALL = {
    "flow_cfg": FlowConfig(horizon=2, exec_horizon=2, num_steps=2, hidden=(16, 16)),
    "steering_cfg": SteeringConfig(hidden=(16,)),
    "ppo_cfg": PPOConfig(unroll_length=4, num_epochs=2, minibatch_size=32, value_hidden=(16,)),
    "sac_cfg": SACConfig(
        num_envs=16,
        unroll_length=2,
        num_updates=2,
        batch_size=32,
        buffer_size=256,
        learning_starts=32,
        actor_hidden=(16,),
        critic_hidden=(16,),
        critic="aliased",
    ),
}


def test_all_measurements_on_a_probe_env():
    result = run_benchmarks(ConstantRewardEnv(3, 2), 16, steps=4, brax_iterations=3, **SMALL)
    for key in (
        "env_steps_per_s",
        "base_env_steps_per_s",
        "train_env_steps_per_s",
        "brax_ppo_env_steps_per_s",
        "ratio_train_vs_brax",
        "brax_ppo_iteration_s",
        "brax_ppo_wall_s",
        "sac_env_steps_per_s",
        "sac_vs_ppo",
    ):
        assert result[key] > 0, key
    assert result["brax_ppo_compile_s"] >= 0
    assert result["brax_ppo_iterations"] == 3
    # same env steps per iteration as ours: 16 envs x 4 decisions x H_exec 2
    assert result["brax_ppo_env_steps_per_iteration"] == result["train_env_steps_per_iteration"]
    assert [row[0] for row in summary_rows(result)] == [
        "env only (random)",
        "env + base sampler",
        "RFS-PPO iteration",
        "RFS-SAC iteration",
        "brax PPO iteration",
    ]
    assert result["sac_updates_per_iteration"] == 2.0  # the measured iteration learns
    assert not hasattr(jax, "device_put_replicated")  # the shim is gone again


def test_env_only_and_no_brax(monkeypatch):
    env = ConstantRewardEnv(3, 2)
    only = run_benchmarks(env, 16, steps=4, env_only=True, **SMALL)
    assert only["env_steps_per_s"] > 0
    assert "base_env_steps_per_s" not in only and "train_env_steps_per_s" not in only
    # --no-brax: the other measurements (stubbed here, run above) and no brax keys
    monkeypatch.setattr(bench, "bench_env", lambda *a, **k: {"env_steps_per_s": 4.0})
    monkeypatch.setattr(bench, "bench_base", lambda *a, **k: {"base_env_steps_per_s": 2.0})
    monkeypatch.setattr(bench, "bench_train", lambda *a, **k: {"train_env_steps_per_s": 1.0})
    monkeypatch.setattr(bench, "bench_train_sac", lambda *a, **k: {"sac_env_steps_per_s": 3.0})
    no_brax = run_benchmarks(env, 16, brax=False)
    assert no_brax["sac_vs_ppo"] == 3.0
    assert no_brax["base_vs_env"] == 0.5 and no_brax["train_vs_env"] == 0.25
    assert not any(k.startswith("brax") or k.endswith("brax") for k in no_brax)


def test_shim_replicates_over_local_devices():
    with brax_jax_compat():
        out = jax.device_put_replicated({"a": jax.numpy.ones(3)}, jax.local_devices()[:1])
    assert out["a"].shape == (1, 3)
    assert out["a"].addressable_shards[0].data.shape == (1, 3)


def test_brax_settings_match_the_preset():
    cfg = PPOConfig()  # 16 decisions per env, minibatch 1024 decisions, 5 epochs
    s = brax_ppo_settings(256, cfg, SteeringConfig(), exec_horizon=2)
    assert s["unroll_length"] == 32 and s["num_minibatches"] == 4 and s["batch_size"] == 64
    assert s["num_updates_per_batch"] == 5
    # one rollout of every env per iteration, split into the same number of minibatches
    assert s["batch_size"] * s["num_minibatches"] == 256
    with pytest.raises(ValueError, match="divisible"):
        brax_ppo_settings(2, PPOConfig(minibatch_size=4), SteeringConfig(), exec_horizon=2)


def test_bench_tasks_table_and_json(monkeypatch, tmp_path):
    """`rfs bench-tasks`: one row per task relative to the first, with the models' real contact
    pairs and dofs (the timing itself is stubbed: each task's MJX step takes minutes to
    compile here)."""
    import json

    from experiments.bench import BenchTasksArgs, bench_tasks

    rates = {"grasp": 1000.0, "pack": 500.0}
    monkeypatch.setattr(
        bench,
        "bench_env",
        lambda env, n, steps: {
            "device": "cpu",
            "env_steps_per_s": rates[type(env).__name__.lower()],
            "compile_s": 1.0,
        },
    )
    out = tmp_path / "tasks.json"
    results = bench_tasks(BenchTasksArgs(tasks=("grasp", "pack"), num_envs=4, json=out))
    assert [r["task"] for r in results] == ["grasp", "pack"]
    assert results[1]["vs_grasp"] == 0.5 and results[0]["vs_grasp"] == 1.0
    # pack adds a box of four walls to grasp's contacts
    assert results[1]["contact_pairs"] > results[0]["contact_pairs"] > 0
    assert json.loads(out.read_text())["tasks"][1]["dofs"] == results[1]["dofs"]
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        bench_tasks(BenchTasksArgs(tasks=("grasp", "nope")))
