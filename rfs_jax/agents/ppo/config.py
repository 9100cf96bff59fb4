"""PPO settings for RFS (arXiv 2602.01789, section 2 of RFS.md).

Published by the paper and used as defaults: gamma 0.99, GAE lambda 0.95, clip 0.2, policy LR
3e-4, value LR 1e-3, value coefficient 0.5, max grad-norm 1.0, minibatch 1024, value MLP
256-128-64 ReLU. Not published (our choices, each documented below): number of envs, rollout
length, epochs, entropy term, total steps, evaluation and checkpoint cadence.

Units: a *decision* (policy step) executes one chunk of H_exec env steps; ``gamma`` discounts
per decision and ``unroll_length`` counts decisions.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Proximal policy optimisation over the steering action ``[a0, ar]``."""

    gamma: float = 0.99
    """Discount per decision (per executed chunk), the paper's value."""

    gae_lambda: float = 0.95
    """GAE lambda (paper)."""

    clip_eps: float = 0.2
    """PPO ratio clip (paper)."""

    policy_lr: float = 3e-4
    """Adam learning rate of the steering head (paper)."""

    value_lr: float = 1e-3
    """Adam learning rate of the value MLP (paper)."""

    value_coef: float = 0.5
    """Weight of the value loss ``mean((V - target)^2)`` in the total loss (paper). With two
    Adam optimisers it mainly matters through the value branch's gradient-norm clip."""

    entropy_coef: float = 0.0
    """Entropy bonus weight. Not published; 0 because the latent already starts at std 1 (the
    base policy's own exploration) and a bonus would widen it beyond the noise the flow was
    trained on."""

    base_kl_coef: float = 0.0
    """Weight of ``KL(pi(a0, ar | s) || pi_0)`` in the loss, ``pi_0`` the untrained head (latent
    N(0, I), residual N(0, init_residual_std^2): the base policy), over the learned dims. Not
    published; a behaviour regulariser against the head drifting away from the noise the flow
    was trained on. ``ppo/base_kl`` is logged whatever the weight."""

    offset_kl_coef: float = 0.0
    """Weight of the latent offset's KL, ``|mean_s mu_latent(s)|^2 / 2`` over each minibatch
    (``Steering.latent_offset_kl``): a prior that holds the state-independent part of the latent
    means at the base's 0 and leaves the state-dependent steering free. Not published. Logged
    as ``ppo/offset_kl`` whatever the weight."""

    max_grad_norm: float = 1.0
    """Global gradient-norm clip, applied to the policy and to the value gradients separately
    (paper's value)."""

    minibatch_size: int = 1024
    """Decisions per SGD minibatch (paper)."""

    num_envs: int = 1024
    """Parallel envs. Not published ("massively parallel"); 1024 fits a CPU test machine's
    memory for the hand tasks and is a small fraction of one GPU."""

    unroll_length: int = 16
    """Decisions per env per rollout (each is H_exec env steps)."""

    num_epochs: int = 5
    """Passes over each rollout (a common PPO choice; not published)."""

    critic_warmup_iterations: int = 0
    """Iterations at the start of a run that train only the value function; the steering head
    stays exactly as it is (params and optimiser state). Not published; peers of RFS warm the
    critic up so that advantages of a random critic do not move a pretrained policy (Policy
    Decorator, DPPO). Off by default: on pick_place 5 warm-up iterations did not change the
    outcome at 300k env steps (README, results). It is the ``target_kl`` stop set from the first
    SGD step: ``ppo/policy_steps`` is 0 during warm-up and the policy gradient is computed and
    dropped."""

    target_kl: float | None = None
    """Early stop of the policy's epochs (Stable-Baselines3's ``target_kl``): within an
    iteration, once a minibatch's approximate KL to the rollout policy exceeds ``1.5 *
    target_kl`` the steering head takes no more SGD steps until the next rollout; the value
    function keeps training through all epochs. ``None``: off (every step is taken).
    ``ppo/policy_steps`` logs the fraction of steps taken."""

    stagger_episodes: bool = True
    """Start each env at a random step of its first episode (``envs.wrappers.stagger``), so
    episodes end spread over the rollouts rather than in lock-step and ``env/success`` is a
    usable curve; the cut-short first episodes are left out of ``env/*``. Not published;
    rsl_rl's ``init_at_random_ep_len``."""

    normalize_advantage: bool = True
    """Standardise advantages per minibatch."""

    reward_scaling: float = 1.0
    """Rewards are multiplied by this before GAE."""

    value_hidden: tuple[int, ...] = (256, 128, 64)
    """Hidden widths of the value ReLU MLP (paper)."""

    obs_clip: float = 10.0
    """Normalised observations are clipped to +-this before the steering head and the value."""

    total_env_steps: int = 10_000_000
    """Budget in env steps (decisions x H_exec x envs); rounded up to whole iterations."""

    eval_interval: int = 10
    """Evaluate every this many iterations (0: only at the end)."""

    eval_episodes: int = 256
    """Episodes (one per env) per evaluation."""

    deterministic_eval: bool = True
    """Evaluate with the mean of the learned dims (unlearned dims keep their noise)."""

    log_interval: int = 1
    """Fetch training metrics to the host every this many iterations."""

    ckpt_interval: int = 50
    """Call the checkpoint hook every this many iterations (0: only at the end)."""

    def __post_init__(self):
        object.__setattr__(self, "value_hidden", tuple(int(h) for h in self.value_hidden))
        for name in ("minibatch_size", "num_envs", "unroll_length", "num_epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_size % self.minibatch_size:
            raise ValueError(
                f"num_envs * unroll_length = {self.num_envs} * {self.unroll_length} = "
                f"{self.batch_size} is not divisible by minibatch_size = {self.minibatch_size}"
            )
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(
                f"gamma and gae_lambda must lie in [0, 1], got gamma={self.gamma}, "
                f"gae_lambda={self.gae_lambda}"
            )
        if self.total_env_steps <= 0:
            raise ValueError(f"total_env_steps must be positive, got {self.total_env_steps}")
        for name in ("eval_interval", "ckpt_interval", "critic_warmup_iterations"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("base_kl_coef", "offset_kl_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.target_kl is not None and not self.target_kl > 0:
            raise ValueError(f"target_kl must be positive or None, got {self.target_kl}")
        if self.log_interval <= 0:
            raise ValueError(f"log_interval must be positive, got {self.log_interval}")

    @property
    def batch_size(self) -> int:
        """Decisions per rollout, ``num_envs * unroll_length``."""
        return self.num_envs * self.unroll_length

    @property
    def num_minibatches(self) -> int:
        return self.batch_size // self.minibatch_size

    def env_steps_per_iteration(self, exec_horizon: int) -> int:
        return self.batch_size * exec_horizon

    def num_iterations(self, exec_horizon: int) -> int:
        """Iterations that cover ``total_env_steps`` (at least 1)."""
        return max(1, math.ceil(self.total_env_steps / self.env_steps_per_iteration(exec_horizon)))
