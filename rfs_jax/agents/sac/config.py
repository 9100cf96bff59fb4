"""SAC settings for off-policy RFS: soft actor-critic over the steering action ``(a0, ar)``.

The paper trains RFS with PPO only. The off-policy relative it cites, DSRL (Wagenmaker et al.
2025), runs SAC on the latent noise, and its noise-aliased form (DSRL-NA) learns about 2x
faster than SAC on the latent directly (RFS.md, section 2). Massively parallel off-policy
learning (FastTD3 / FastSAC) uses many envs, large batches and several updates per env step.
The defaults below follow those peers where they publish a value and are our choice elsewhere.

Units: a *decision* executes one chunk of H_exec env steps; ``gamma`` discounts per decision,
``unroll_length`` counts decisions per env per iteration, and the buffer holds decisions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, get_args

Critic = Literal["aliased", "plain"]
CRITICS: tuple[str, ...] = get_args(Critic)


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """Soft actor-critic over the steering action, with a noise-aliased or a plain critic."""

    critic: Critic = "plain"
    """``aliased`` (DSRL-NA): an action critic ``Q_A(s, a_exec)`` trained by TD on the executed,
    composed chunk, and a steering critic ``Q_W(s, a0, ar)`` regressed onto
    ``Q_A(s, Des(s, a0) + ar)`` at fresh ``a0 ~ N(0, I)`` (clipped to the latent bound) and
    ``ar ~ U(-1, 1)``, and at the actor's own next actions (denoised for the TD target anyway);
    the actor maximises ``Q_W``. In ``residual`` mode (``a0`` is not learned) ``Q_W(s, ar)`` is
    the same regression averaged over the sampler's noise. ``plain``: one twin critic on the
    steering action ``(a0, ar)`` directly, trained by TD (DSRL's plain SAC).

    Default ``plain``, measured (``python -m experiments.probe_sac``, 240 iterations of 256
    decisions on the bimodal probe, success at the mean every 20 iterations; docs/results.md,
    2026-12-03): the plain critic reached 0.99 at iteration 80 and held 1.00 to the end; the
    aliased one wandered between 0.48 and 0.93 after iteration 60 (LR 3e-4: 0.00-0.89; its
    steering critic at LR 3e-3: 0.16-1.00), at 4x the time per iteration."""

    gamma: float = 0.99
    """Discount per decision."""

    tau: float = 0.005
    """Polyak rate of the TD critic's target networks (SAC's)."""

    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    """Adam learning rates (SAC's usual values)."""

    alias_lr: float = 1e-3
    """Adam learning rate of the steering critic ``Q_W`` (aliased critic): a regression onto
    the action critic that the actor follows, so it must keep up with ``Q_A``."""

    init_alpha: float = 0.01
    """Initial entropy temperature. Small: the untrained actor already explores with the
    base's noise, and the critic's scale is that of the task's return."""

    target_entropy_per_dim: float = -1.0
    """Target entropy per learned dimension (SAC's ``-dim(A)`` rule, per dimension)."""

    latent_bound: float = 1.5
    """The actor's latent is ``bound * tanh(u)`` (DSRL's ``action_magnitude`` 1.5), so the
    sampler never sees noise beyond the range it was trained on."""

    init_latent_std: float = 0.67
    """Initial std of the pre-tanh latent ``u``: ``1.5 * tanh(u)`` with ``u ~ N(0, 0.67^2)`` is
    close to the base's ``N(0, I)`` inside the bound (std 0.85), so the untrained actor acts
    about like the base policy."""

    init_residual_std: float = 0.2
    """Initial std of the pre-tanh residual (as the PPO head's ``init_residual_std``)."""

    actor_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256, 256)
    """MLP widths (ReLU); critics use LayerNorm after each hidden layer (FastTD3 / BRO)."""

    num_envs: int = 256
    """Parallel envs."""

    unroll_length: int = 4
    """Decisions per env per iteration (collected, then the updates run)."""

    num_updates: int = 8
    """Gradient steps per iteration; the update-to-data ratio is ``num_updates * batch_size /
    (num_envs * unroll_length)`` (logged as ``sac/replay_ratio``)."""

    batch_size: int = 1024
    """Transitions per gradient step."""

    buffer_size: int = 200_000
    """Replay capacity in decisions (on the device, inside the compiled step)."""

    learning_starts: int = 4096
    """Decisions collected before the first gradient step."""

    actor_starts: int = 0
    """Decisions collected before the actor (and the temperature) take their first step; the
    critics learn from ``learning_starts``. An actor that follows an untrained critic leaves the
    base policy at once: on grasp (cpu preset, no wait) the sampled success fell from the
    base's 0.4-0.5 to 0.0-0.08 within 15 iterations while the latent mean moved to rms 0.6
    (docs/results.md, 2026-12-03). A PPO critic warm-up and Policy Decorator's frozen-policy
    phase do the same. 0: the actor starts with the critics."""

    base_kl_coef: float = 0.0
    """Weight of the KL from the actor's pre-tanh Gaussian to the untrained actor's (mean 0,
    the initial stds: about the base policy) in the actor loss, times the batch's mean |Q| so
    that it is unitless (``losses.actor_loss_with_base_kl``); SAC's counterpart of PPO's
    ``base_kl_coef``. 0: none."""

    max_grad_norm: float = 10.0
    """Global gradient-norm clip of each optimiser."""

    reward_scaling: float = 1.0
    """Rewards are multiplied by this before the TD target."""

    obs_clip: float = 10.0
    """Normalised observations are clipped to +-this."""

    stagger_episodes: bool = True
    """Start each env at a random step of its first episode (as PPO's)."""

    total_env_steps: int = 1_000_000
    eval_interval: int = 10
    eval_episodes: int = 256
    deterministic_eval: bool = True
    """Evaluate the actor at its mean (``tanh`` of the mean)."""
    log_interval: int = 1
    ckpt_interval: int = 50

    def __post_init__(self):
        if self.critic not in CRITICS:
            raise ValueError(f"unknown SAC critic {self.critic!r}; expected one of {CRITICS}")
        for name in ("actor_hidden", "critic_hidden"):
            object.__setattr__(self, name, tuple(int(h) for h in getattr(self, name)))
        for name in ("num_envs", "unroll_length", "num_updates", "batch_size", "buffer_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"sac.{name} must be positive, got {getattr(self, name)}")
        if self.buffer_size < self.num_envs * self.unroll_length:
            raise ValueError(
                f"sac.buffer_size {self.buffer_size} cannot hold one iteration's "
                f"{self.num_envs * self.unroll_length} decisions"
            )
        if self.base_kl_coef < 0:
            raise ValueError(f"sac.base_kl_coef must be >= 0, got {self.base_kl_coef}")
        if self.actor_starts < 0:
            raise ValueError(f"sac.actor_starts must be >= 0, got {self.actor_starts}")
        if self.learning_starts < self.batch_size:
            raise ValueError(
                f"sac.learning_starts {self.learning_starts} must be at least the batch size "
                f"{self.batch_size}"
            )
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError(f"need 0 <= gamma <= 1 and 0 < tau <= 1, got {self.gamma}, {self.tau}")
        for name in ("latent_bound", "init_latent_std", "init_residual_std", "init_alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sac.{name} must be positive, got {getattr(self, name)}")
        if self.total_env_steps <= 0:
            raise ValueError(f"total_env_steps must be positive, got {self.total_env_steps}")
        for name in ("eval_interval", "ckpt_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.log_interval <= 0:
            raise ValueError(f"log_interval must be positive, got {self.log_interval}")

    @property
    def decisions_per_iteration(self) -> int:
        return self.num_envs * self.unroll_length

    @property
    def replay_ratio(self) -> float:
        """Sampled transitions per collected one."""
        return self.num_updates * self.batch_size / self.decisions_per_iteration

    # The run layer's names (shared with PPOConfig).
    @property
    def minibatch_size(self) -> int:
        return self.batch_size

    def env_steps_per_iteration(self, exec_horizon: int) -> int:
        return self.decisions_per_iteration * exec_horizon

    def num_iterations(self, exec_horizon: int) -> int:
        return max(1, math.ceil(self.total_env_steps / self.env_steps_per_iteration(exec_horizon)))
