"""TD3+BC settings for offline RFS from correction data (arXiv 2602.01789, section 2).

The paper's real-world stage: the deployed policy is corrected by a person, and TD3+BC (Fujimoto
& Gu 2021) learns the steering action ``(a0, ar)`` offline from those trajectories. The critic
sees the executed, composed action ``a_b + a_r``; the actor maximises
``Q(o, Des(s, a0) + a_r) - lambda_BC ||a_r_hat - a_r||^2``. The paper publishes neither the
hyper-parameters nor the network sizes: the defaults are TD3+BC's own (alpha 2.5, policy noise
0.2 clipped at 0.5, delay 2, tau 0.005, Adam 3e-4, batch 256, 256-256 MLPs).

Units: a transition is a *decision* (one chunk of H_exec env steps), as in PPO and SAC here.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

Critic = Literal["composed", "residual", "concat"]
CRITICS: tuple[str, ...] = get_args(Critic)


@dataclasses.dataclass(frozen=True)
class TD3BCConfig:
    """Offline TD3+BC over the steering action."""

    critic: Critic = "composed"
    """What the critic sees besides the observation. ``composed``: the executed chunk
    ``a_b + a_r`` (the paper's; the only one its ablation found to work); ``residual``: ``a_r``
    alone; ``concat``: ``[a_r, a_b]``. The two others are the paper's ablations."""

    alpha: float = 2.5
    """TD3+BC's alpha: the actor's Q term is ``alpha / mean|Q|`` times Q (the normalisation
    makes the trade-off against the BC term independent of the reward's scale)."""

    bc_coef: float = 1.0
    """lambda_BC: weight of ``||a_r_hat - a_r||^2`` (mean over the residual dims, in the env's
    normalised action units)."""

    gamma: float = 0.99
    """Discount per decision."""

    tau: float = 0.005
    """Polyak rate of the target actor and critics."""

    policy_noise: float = 0.2
    policy_noise_clip: float = 0.5
    """Target policy smoothing: ``N(0, policy_noise^2)`` clipped to ``+-policy_noise_clip`` is
    added to the target actor's action (in the actor's ``[-1, 1]`` units) before the TD target
    is taken."""

    policy_delay: int = 2
    """The actor and the targets move once every ``policy_delay`` critic updates."""

    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    max_grad_norm: float = 10.0

    batch_size: int = 256
    num_updates: int = 20_000
    """Gradient steps of the critic (the actor takes ``num_updates / policy_delay``)."""

    latent_bound: float = 1.5
    """The actor's latent is ``latent_bound * tanh(.)`` (DSRL's ``action_magnitude``): the
    sampler never sees noise beyond the range it was trained on."""

    actor_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)

    obs_clip: float = 10.0
    """Normalised observations (mean / std of the dataset) are clipped to +-obs_clip."""

    log_interval: int = 500

    eval_episodes: int = 512
    """Episodes of the evaluation after the fit (and of `rfs eval` on the run by default)."""
    deterministic_eval: bool = True
    """The actor is deterministic; kept for the run layer's common evaluation."""

    def __post_init__(self):
        if self.critic not in CRITICS:
            raise ValueError(f"unknown critic {self.critic!r}; expected one of {CRITICS}")
        for name in ("alpha", "tau", "latent_bound", "actor_lr", "critic_lr", "max_grad_norm"):
            if getattr(self, name) <= 0:
                raise ValueError(f"td3bc.{name} must be positive, got {getattr(self, name)}")
        if self.bc_coef < 0 or self.policy_noise < 0 or self.policy_noise_clip < 0:
            raise ValueError("td3bc.bc_coef, policy_noise and policy_noise_clip must be >= 0")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"td3bc.gamma must lie in (0, 1], got {self.gamma}")
        for name in ("policy_delay", "batch_size", "num_updates", "log_interval", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"td3bc.{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "actor_hidden", tuple(int(h) for h in self.actor_hidden))
        object.__setattr__(self, "critic_hidden", tuple(int(h) for h in self.critic_hidden))
