"""PPO for the RFS steering policy (arXiv 2602.01789): networks, losses, compiled trainer."""

from rfs_jax.agents.ppo.config import PPOConfig
from rfs_jax.agents.ppo.losses import Batch, clipped_policy_loss, compute_ppo_loss
from rfs_jax.agents.ppo.networks import PPONetworks, ValueNet, make_policy, make_ppo_networks
from rfs_jax.agents.ppo.train import (
    NonFiniteError,
    TrainingState,
    abstract_training_state,
    check_finite,
    history_arrays,
    init_training_state,
    make_networks,
    make_optimizers,
    make_train_step,
    num_seeds,
    train,
    training_state_shardings,
)

__all__ = [
    "Batch",
    "NonFiniteError",
    "PPOConfig",
    "PPONetworks",
    "TrainingState",
    "ValueNet",
    "abstract_training_state",
    "check_finite",
    "clipped_policy_loss",
    "compute_ppo_loss",
    "history_arrays",
    "init_training_state",
    "make_networks",
    "make_optimizers",
    "make_policy",
    "make_ppo_networks",
    "make_train_step",
    "num_seeds",
    "train",
    "training_state_shardings",
]
