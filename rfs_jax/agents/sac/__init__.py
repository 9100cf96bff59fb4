"""SAC for the RFS steering action, with a noise-aliased (DSRL-NA) or plain critic."""

from rfs_jax.agents.sac.config import CRITICS, SACConfig
from rfs_jax.agents.sac.networks import SACNetworks, make_policy, make_sac_networks
from rfs_jax.agents.sac.train import (
    SACState,
    abstract_training_state,
    init_training_state,
    make_buffer,
    make_networks,
    make_train_step,
    make_update,
    train,
)

__all__ = [
    "CRITICS",
    "SACConfig",
    "SACNetworks",
    "SACState",
    "abstract_training_state",
    "init_training_state",
    "make_buffer",
    "make_networks",
    "make_policy",
    "make_sac_networks",
    "make_train_step",
    "make_update",
    "train",
]
