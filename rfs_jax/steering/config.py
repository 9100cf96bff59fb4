"""Configuration of the RFS modulation policy pi(a0, ar | s) (arXiv 2602.01789, section 2).

The paper publishes the head's MLP (256-128-64, ReLU) but not the residual scale, the latent
bound or the initialisation; the defaults below take the peers' values (ResiP, Policy
Decorator, DSRL) and keep the untrained policy equal to the base policy, see RFS.md.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, get_args

Mode = Literal["rfs", "dsrl", "residual", "base"]
MODES: tuple[str, ...] = get_args(Mode)


@dataclasses.dataclass(frozen=True)
class SteeringConfig:
    """Steering head over the sampler's latent noise a0 and an output residual ar."""

    mode: Mode = "rfs"
    """What RL controls. ``rfs``: latent a0 and residual ar; ``dsrl``: latent only (ar = 0);
    ``residual``: residual only, a0 ~ N(0, I) fresh each chunk (Policy Decorator, ResiP);
    ``base``: nothing (a0 ~ N(0, I), ar = 0): the frozen base policy, for evaluation and as the
    no-RL baseline. Dimensions a mode does not use are masked out of the log-probability and
    the entropy, so PPO sees exactly that mode's action space."""

    hidden: tuple[int, ...] = (256, 128, 64)
    """Hidden widths of the head's ReLU MLP (the paper's)."""

    residual_scale: float = 0.2
    """beta: the executed residual is ``beta * tanh(ar)``, so |residual| < beta per action
    dimension, in the env's normalised units. Actions span [-1, 1], so 0.2 is 0.1 of the action
    range (ResiP's 0.1; Policy Decorator uses 0.03..0.2). tanh rather than a clip keeps a
    learned mean beyond the bound from going flat."""

    latent_bound: float = 2.5
    """The sampler is fed ``clip(a0, -bound, bound)`` in the modes that learn a0. A hard clip
    (rather than DSRL's ``1.5 * tanh``) leaves N(0, I) untouched except in its tails: at 2.5 it
    moves only 1.2% of the coordinates of an untrained sample, so the initial policy is the base
    policy, while a drifting mean still cannot push the frozen flow far out of the noise
    distribution it was trained on. ``inf`` disables it."""

    init_residual_std: float = 0.2
    """Initial std of the raw residual sample ar, before tanh and ``residual_scale``; the
    untrained policy then perturbs the base by about ``0.2 * residual_scale``."""

    init_latent_std: float = 1.0
    """Initial std of the latent a0 (its mean starts at 0). At 1 the untrained latent is
    exactly the base's N(0, I), so the untrained head is the sampled base policy; below 1 it
    starts between the base sampled and the base at ``a0 = 0``, and the policy PPO trains is
    closer to the one evaluated at its mean. Also the latent std of ``kl_to_base``'s pi_0."""

    residual_sees_base_action: bool = False
    """ResiP-style: the residual's mean is a second MLP of ``[obs, base action chunk]`` (the
    latent is drawn first, the base denoises it, then the residual is drawn). Off by default:
    one MLP of obs outputs both means, as in the paper's single modulation policy."""

    min_log_std: float = -5.0
    """Lower bound of every log-std (keeps PPO's ratio finite when a dimension collapses)."""

    max_log_std: float = 1.0
    """Upper bound of every log-std."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown steering mode {self.mode!r}; expected one of {MODES}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.residual_scale <= 0:
            raise ValueError(f"residual_scale must be positive, got {self.residual_scale}")
        if self.latent_bound <= 0:
            raise ValueError(f"latent_bound must be positive, got {self.latent_bound}")
        for name in ("init_residual_std", "init_latent_std"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        init_logs = (math.log(self.init_latent_std), math.log(self.init_residual_std))
        if not self.min_log_std < min(init_logs):
            raise ValueError(
                f"min_log_std={self.min_log_std} must lie below log(init_latent_std="
                f"{self.init_latent_std}) and log(init_residual_std={self.init_residual_std})"
            )
        if not self.max_log_std > max(init_logs):
            raise ValueError(
                f"max_log_std={self.max_log_std} must lie above log(init_latent_std="
                f"{self.init_latent_std}) and log(init_residual_std={self.init_residual_std})"
            )

    @property
    def learns_latent(self) -> bool:
        return self.mode in ("rfs", "dsrl")

    @property
    def learns_residual(self) -> bool:
        return self.mode in ("rfs", "residual")
