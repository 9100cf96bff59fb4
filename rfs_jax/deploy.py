"""Run a policy exported by ``rfs export`` with JAX alone: no flax, no trainer.

    from rfs_jax.deploy import load
    policy = load("runs/grasp/rfs/export")
    chunk = policy(obs)               # obs [B, O] or [O] -> [B, H_exec, A] or [H_exec, A]
    chunk = policy(obs, key=7)        # a policy that samples: a seed or uint32[2] key data

``load`` reads ``policy.json`` (the manifest: inputs, observation and action layout, control
rate) and deserializes ``policy.jaxexport`` with ``jax.export.deserialize``; the params are
constants in it. This module needs only ``jax``, ``numpy`` and the standard library (it can be
copied next to an export and used without the rest of the project); importing it through the
``rfs_jax`` package imports neither flax nor ``rfs_jax.agents``. Without JAX, run
``policy.onnx`` with onnxruntime (docs/deploy.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

JAX_EXPORT_FILE = "policy.jaxexport"
ONNX_FILE = "policy.onnx"
MANIFEST_FILE = "policy.json"
MANIFEST_FORMAT = "rfs_jax.policy_export"


def load_manifest(export_dir: str | Path) -> dict[str, Any]:
    """The ``policy.json`` of an export folder."""
    path = Path(export_dir) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no exported policy at {export_dir} (missing {MANIFEST_FILE}): write one with "
            f"`rfs export --run <run folder> --out {export_dir}`"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not an rfs_jax policy manifest (format {MANIFEST_FORMAT})")
    return manifest


def key_data(key) -> np.ndarray:
    """``uint32[2]`` threefry key data from a seed (as ``jax.random.PRNGKey(seed)``) or from key
    data already."""
    if isinstance(key, (int, np.integer)):
        seed = int(key)
        if not 0 <= seed < 2**32:
            raise ValueError(f"a seed must lie in [0, 2**32), got {seed}")
        return np.array([0, seed], np.uint32)
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    data = np.asarray(key)
    if data.shape != (2,):
        raise ValueError(f"key must be a seed or uint32[2] key data, got shape {data.shape}")
    return data.astype(np.uint32)


class ExportedPolicy:
    """``policy(obs, key=None) -> executed action chunk`` of an export folder (see ``load``)."""

    def __init__(self, export_dir: str | Path):
        self.export_dir = Path(export_dir)
        self.manifest = load_manifest(self.export_dir)
        path = self.export_dir / JAX_EXPORT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: export the policy again with `rfs export`")
        self.exported = jax.export.deserialize(bytearray(path.read_bytes()))
        self.needs_key = bool(self.manifest["needs_key"])
        self.obs_size = int(self.manifest["observation"]["size"])
        self._call = jax.jit(self.exported.call)

    @property
    def exec_horizon(self) -> int:
        return int(self.manifest["control"]["exec_horizon"])

    @property
    def ctrl_dt(self) -> float | None:
        return self.manifest["control"]["ctrl_dt"]

    def __call__(self, obs, key=None) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        single = obs.ndim == 1
        if single:
            obs = obs[None]
        if obs.ndim != 2 or obs.shape[1] != self.obs_size:
            raise ValueError(
                f"obs must be [B, {self.obs_size}] or [{self.obs_size}], got {obs.shape}"
            )
        if self.needs_key:
            if key is None:
                raise ValueError(
                    "this policy samples: pass key= (a seed or uint32[2] key data), a new one "
                    "per call"
                )
            out = self._call(obs, key_data(key))
        else:
            if key is not None:
                raise ValueError("this policy acts at its mean and takes no key")
            out = self._call(obs)
        out = np.asarray(out)
        return out[0] if single else out

    def __repr__(self) -> str:
        m = self.manifest
        what = "sampled" if m["sampled"] else "mean"
        return f"ExportedPolicy({m['task']} {m['mode']} {what}, {self.export_dir})"


def load(export_dir: str | Path) -> ExportedPolicy:
    """The policy of an ``rfs export`` folder, a callable ``policy(obs, key=None)``."""
    return ExportedPolicy(export_dir)
