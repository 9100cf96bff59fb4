"""Offline RFS: TD3+BC over the steering action from correction data (a critic of the
composed action, or the paper's two ablated critics)."""

from rfs_jax.agents.td3bc.config import CRITICS, TD3BCConfig
from rfs_jax.agents.td3bc.networks import TD3BCNetworks, make_policy, make_td3bc_networks
from rfs_jax.agents.td3bc.train import (
    DATASET_KEYS,
    OfflineRunState,
    TD3BCState,
    abstract_training_state,
    check_dataset,
    fit,
    init_state,
    make_networks,
    make_update,
    run_state,
)

__all__ = [
    "CRITICS",
    "DATASET_KEYS",
    "OfflineRunState",
    "TD3BCConfig",
    "TD3BCNetworks",
    "TD3BCState",
    "abstract_training_state",
    "check_dataset",
    "fit",
    "init_state",
    "make_networks",
    "make_policy",
    "make_td3bc_networks",
    "make_update",
    "run_state",
]
