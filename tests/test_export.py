"""``rfs export`` and ``rfs_jax.deploy``: the exported artifacts act as the in-memory policy.

On the bimodal probe's tiny base and run (conftest.py): the jax.export artifact (through
``rfs_jax.deploy.load``) and the ONNX file (through onnxruntime) give the trainer's actions on
the same observations, at batch sizes 1 and 7, within ``ATOL``: a run at its mean, a run sampled
with a given key (the same key gives the same action), a base at a0 = 0 and sampled. The
jax.export artifact loads in a process that never imports flax nor ``rfs_jax.agents``; a folder
that is neither a run nor a base is a one-line error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import onnxruntime as ort
import pytest

from experiments import cli
from experiments.base import base_policy_fn, load_base
from experiments.export import ExportArgs, export
from experiments.steer import load_run_policy
from rfs_jax import deploy
from rfs_jax.agents.ppo import make_policy

ROOT = Path(__file__).resolve().parents[1]
# float32 throughout; the ONNX graph recomputes the same ops (erf_inv by XLA's polynomial,
# threefry bit for bit), measured differences are below 1e-6.
ATOL = 1e-5
BATCHES = (1, 7)


def _obs(batch: int, seed: int = 0) -> np.ndarray:
    """Probe observations ``[x, y, cue]``: a start near the origin or a point anywhere in the
    box, and a cue of +-1."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-1.0, 1.0, (batch, 2)) * rng.choice([0.05, 1.0], (batch, 1))
    cue = rng.choice([-1.0, 1.0], (batch, 1))
    return np.concatenate([pos, cue], axis=1).astype(np.float32)


def _onnx(export_dir: Path):
    session = ort.InferenceSession(
        str(export_dir / "policy.onnx"), providers=["CPUExecutionProvider"]
    )

    def run(obs, key=None):
        feed = {"obs": obs}
        if key is not None:
            feed["key"] = np.asarray(key, np.uint32)
        return session.run(["actions"], feed)[0]

    return run


@pytest.fixture(scope="module")
def run_reference(probe_full_run):
    """``policy(obs, key, deterministic)`` of the run as ``rfs eval`` acts, from its checkpoint."""
    config = json.loads((probe_full_run / "config.json").read_text())
    _, env, flow_cfg, base_params, _ = load_base(Path(config["base"]), tuple(config["overrides"]))
    state, networks, _ = load_run_policy(probe_full_run, env, flow_cfg)
    policy = jax.jit(make_policy(networks, base_params), static_argnames="deterministic")

    def act(obs, key, deterministic):
        return np.asarray(policy(state.policy_params, obs, key, deterministic=deterministic))

    return act


@pytest.fixture(scope="module")
def base_reference(probe_base):
    _, env, cfg, params, _ = load_base(probe_base)
    policies = {d: jax.jit(base_policy_fn(cfg, env, params, deterministic=d)) for d in (0, 1)}

    def act(obs, key, deterministic):
        return np.asarray(policies[int(deterministic)](params, obs, key))

    return act


@pytest.fixture(scope="module")
def exports(tmp_path_factory, probe_full_run, probe_base):
    """The four exports, each written once: {(kind, sampled): (folder, manifest)}."""
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for kind, folder in (("run", probe_full_run), ("base", probe_base)):
        for sampled in (False, True):
            path = root / f"{kind}_{'sampled' if sampled else 'mean'}"
            out[kind, sampled] = path, export(ExportArgs(run=folder, out=path, sampled=sampled))
    return out


def test_the_folder_holds_both_artifacts_and_the_manifest(exports):
    path, manifest = exports["run", False]
    assert sorted(p.name for p in path.iterdir()) == [
        "policy.jaxexport",
        "policy.json",
        "policy.onnx",
    ]
    assert manifest == json.loads((path / "policy.json").read_text())
    assert manifest["task"] == "probe_bimodal" and manifest["mode"] == "rfs"
    assert not manifest["sampled"] and not manifest["needs_key"]
    assert [i["name"] for i in manifest["inputs"]] == ["obs"]
    assert manifest["inputs"][0]["shape"] == ["batch", 3]
    assert manifest["outputs"][0] == {**manifest["outputs"][0], "name": "actions"}
    assert manifest["outputs"][0]["shape"] == ["batch", 2, 2]  # H_exec = 2 actions of size 2
    assert manifest["control"]["horizon"] == 4 and manifest["control"]["exec_horizon"] == 2
    layout = manifest["observation"]["layout"]
    assert [(s["name"], s["start"], s["stop"]) for s in layout] == [
        ("position", 0, 2),
        ("cue", 2, 3),
    ]
    assert manifest["files"]["jax_export"]["platforms"] == ["cpu", "cuda"]
    assert manifest["files"]["onnx"]["opset"] == manifest["versions"]["onnx_opset"] == 18
    assert manifest["source"]["kind"] == "run" and manifest["source"]["iteration"] >= 1
    assert max(v for k, v in manifest["check"].items() if k != "batch") < ATOL
    sampled = exports["run", True][1]
    assert sampled["sampled"] and sampled["needs_key"]
    assert [i["name"] for i in sampled["inputs"]] == ["obs", "key"]


@pytest.mark.parametrize("batch", BATCHES)
def test_a_run_at_its_mean_acts_as_in_memory(exports, run_reference, batch):
    path, _ = exports["run", False]
    obs = _obs(batch)
    expected = run_reference(obs, jax.random.PRNGKey(0), True)
    assert expected.shape == (batch, 2, 2)
    np.testing.assert_allclose(deploy.load(path)(obs), expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(_onnx(path)(obs), expected, rtol=0, atol=ATOL)
    # The mean does not depend on the key the trainer's policy is given.
    np.testing.assert_allclose(run_reference(obs, jax.random.PRNGKey(9), True), expected)


@pytest.mark.parametrize("batch", BATCHES)
def test_a_sampled_run_gives_the_same_action_for_the_same_key(exports, run_reference, batch):
    path, _ = exports["run", True]
    policy, onnx_policy = deploy.load(path), _onnx(path)
    obs = _obs(batch, seed=1)
    actions = []
    for seed in (3, 11):
        key = jax.random.PRNGKey(seed)
        expected = run_reference(obs, key, False)
        np.testing.assert_allclose(policy(obs, key=seed), expected, rtol=0, atol=ATOL)
        np.testing.assert_allclose(policy(obs, key=np.asarray(key)), expected, rtol=0, atol=ATOL)
        np.testing.assert_allclose(onnx_policy(obs, key), expected, rtol=0, atol=ATOL)
        actions.append(expected)
    assert np.abs(actions[0] - actions[1]).max() > 1e-3  # the key matters


@pytest.mark.parametrize("batch", BATCHES)
def test_a_base_folder_acts_as_the_frozen_sampler(exports, base_reference, batch):
    obs = _obs(batch, seed=2)
    mean_path, manifest = exports["base", False]
    assert manifest["mode"] == "base" and not manifest["needs_key"]
    expected = base_reference(obs, jax.random.PRNGKey(0), True)
    np.testing.assert_allclose(deploy.load(mean_path)(obs), expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(_onnx(mean_path)(obs), expected, rtol=0, atol=ATOL)
    sampled_path, _ = exports["base", True]
    key = jax.random.PRNGKey(5)
    expected = base_reference(obs, key, False)
    np.testing.assert_allclose(deploy.load(sampled_path)(obs, key=5), expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(_onnx(sampled_path)(obs, key), expected, rtol=0, atol=ATOL)


def test_the_loader_needs_neither_flax_nor_the_trainer(exports, run_reference, tmp_path):
    """A fresh process: rfs_jax/deploy.py copied alone (no rfs_jax package), then the package's
    ``rfs_jax.deploy``; neither imports flax or rfs_jax.agents."""
    path, _ = exports["run", True]
    shutil.copy(ROOT / "rfs_jax" / "deploy.py", tmp_path / "standalone_deploy.py")
    obs = _obs(7, seed=3)
    np.save(tmp_path / "obs.npy", obs)
    code = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        sys.path.insert(0, {str(tmp_path)!r})
        import standalone_deploy
        obs = np.load({str(tmp_path / "obs.npy")!r})
        a = standalone_deploy.load({str(path)!r})(obs, key=4)
        assert "rfs_jax" not in sys.modules, "the copied loader imported rfs_jax"
        from rfs_jax.deploy import load
        b = load({str(path)!r})(obs, key=4)
        assert "flax" not in sys.modules, "flax was imported"
        assert not [m for m in sys.modules if m.startswith("rfs_jax.agents")]
        print(json.dumps([a.tolist(), b.tolist()]))
        """
    )
    env = {"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin", "RFS_JAX_CACHE_DIR": "off"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = (np.asarray(x) for x in json.loads(result.stdout.strip().splitlines()[-1]))
    expected = run_reference(obs, jax.random.PRNGKey(4), False)
    np.testing.assert_allclose(a, expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(b, expected, rtol=0, atol=ATOL)


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())
    assert "Traceback" not in text
    return text


def test_a_folder_that_is_neither_a_run_nor_a_base_is_a_one_line_error(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    text = _error(capsys, ["export", "--run", str(empty)])
    assert "nothing to export" in text and "rfs steer" in text and "rfs base" in text
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"hello": 1}))
    text = _error(capsys, ["export", "--run", str(other)])
    assert "neither a steering run nor a base policy" in text and "rfs steer" in text
    assert not (empty / "export").exists() and not (other / "export").exists()
