"""Orbax checkpoints of the frozen flow-matching base policy (RFS, arXiv 2602.01789).

Layout of a checkpoint directory:
    config.json   FlowConfig fields, obs_size, action_size, and caller metadata
    params/       orbax StandardCheckpointer save of FlowParams (as a dict)
Restoring builds the abstract target with ``jax.eval_shape`` from config.json, so shapes and
dtypes are checked against the config rather than trusted from disk. Never pickle.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from rfs_jax.flow.config import FlowConfig
from rfs_jax.flow.policy import FlowParams, init_flow_params

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
FORMAT_VERSION = 1
_RETRAIN_HINT = "retrain the base policy with `rfs base`"


class FlowCheckpointError(RuntimeError):
    """A flow checkpoint directory exists but cannot be read back."""


def _to_dict(params: FlowParams) -> dict[str, Any]:
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}


def save_flow(
    directory: str | Path, cfg: FlowConfig, params: FlowParams, meta: dict | None = None
) -> Path:
    """Write ``params`` and the resolved config to ``directory`` (overwriting). Returns the path.

    ``meta`` (JSON-serialisable: task name, data set, final loss, ...) is stored next to it.
    """
    directory = Path(directory).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "format_version": FORMAT_VERSION,
        "flow": dataclasses.asdict(cfg),
        "obs_size": int(params.obs_mean.shape[-1]),
        "action_size": int(params.act_mean.shape[-1]),
        "meta": meta or {},
    }
    # Serialise first: a non-JSON meta must fail before anything on disk is overwritten.
    text = json.dumps(config, indent=2, sort_keys=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / PARAMS_DIR, _to_dict(params), force=True)
    (directory / CONFIG_FILE).write_text(text)
    return directory


def load_flow(directory: str | Path) -> tuple[FlowConfig, FlowParams, dict]:
    """Read a checkpoint written by ``save_flow``: returns (cfg, params, meta)."""
    directory = Path(directory).expanduser().resolve()
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"no flow checkpoint at {directory} (missing {CONFIG_FILE}); {_RETRAIN_HINT} or "
            f"point to the directory that save_flow wrote"
        )
    try:
        config = json.loads(config_path.read_text())
        cfg = FlowConfig(**config["flow"])
        obs_size, action_size = int(config["obs_size"]), int(config["action_size"])
        meta = config.get("meta", {})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise FlowCheckpointError(
            f"cannot read the flow config {config_path}: {e!r}; {_RETRAIN_HINT}"
        ) from e

    abstract = jax.eval_shape(
        lambda: _to_dict(init_flow_params(cfg, obs_size, action_size, jax.random.key(0)))
    )
    # Onto this process's first device: orbax would otherwise use the saving process's device,
    # which another host of a multi-host run (rfs_jax.sharding) does not have.
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=local), abstract
    )
    try:
        with ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore(directory / PARAMS_DIR, abstract)
    except Exception as e:  # orbax raises many types (IO, tensorstore, tree mismatch)
        raise FlowCheckpointError(
            f"cannot restore the flow params from {directory / PARAMS_DIR} (missing, corrupt, or "
            f"not matching {CONFIG_FILE}): {type(e).__name__}: {e}; {_RETRAIN_HINT}"
        ) from e
    return cfg, FlowParams(**restored), meta
