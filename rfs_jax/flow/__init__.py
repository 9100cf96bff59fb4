"""Flow-matching base policy of RFS (arXiv 2602.01789): training, frozen sampler, checkpoints."""

from rfs_jax.flow.checkpoint import FlowCheckpointError, load_flow, save_flow
from rfs_jax.flow.config import FlowConfig
from rfs_jax.flow.policy import FlowParams, init_flow_params, make_sampler
from rfs_jax.flow.train import chunks_from_episodes, plot_loss, train_flow

__all__ = [
    "FlowCheckpointError",
    "FlowConfig",
    "FlowParams",
    "chunks_from_episodes",
    "init_flow_params",
    "load_flow",
    "make_sampler",
    "plot_loss",
    "save_flow",
    "train_flow",
]
