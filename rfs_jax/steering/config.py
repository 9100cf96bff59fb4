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
    untrained policy then perturbs the base by about ``0.2 * residual_scale``. The latent std
    starts at 1 and its mean at 0, so the untrained latent is exactly N(0, I)."""

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
        if self.init_residual_std <= 0:
            raise ValueError(f"init_residual_std must be positive, got {self.init_residual_std}")
        if not self.min_log_std < min(0.0, math.log(self.init_residual_std)):
            raise ValueError(
                f"min_log_std={self.min_log_std} must lie below log 1 and below "
                f"log(init_residual_std={self.init_residual_std})"
            )
        if not self.max_log_std > max(0.0, math.log(self.init_residual_std)):
            raise ValueError(
                f"max_log_std={self.max_log_std} must lie above log 1 and above "
                f"log(init_residual_std={self.init_residual_std})"
            )

    @property
    def learns_latent(self) -> bool:
        return self.mode in ("rfs", "dsrl")

    @property
    def learns_residual(self) -> bool:
        return self.mode in ("rfs", "residual")
