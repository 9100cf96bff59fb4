"""RFS modulation policy: latent steering a0 and residual ar of a frozen flow policy."""

from rfs_jax.steering.config import MODES, Mode, SteeringConfig
from rfs_jax.steering.policy import (
    Sampler,
    Steering,
    SteeringHead,
    SteeringSample,
    compose,
    gaussian_entropy,
    gaussian_log_prob,
    make_steering,
)

__all__ = [
    "MODES",
    "Mode",
    "Sampler",
    "Steering",
    "SteeringConfig",
    "SteeringHead",
    "SteeringSample",
    "compose",
    "gaussian_entropy",
    "gaussian_log_prob",
    "make_steering",
]
