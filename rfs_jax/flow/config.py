"""Configuration of the flow-matching base policy (RFS, arXiv 2602.01789, section on the base).

The paper does not publish the chunk length, the number of Euler steps or the network; the
defaults below follow its peers (fql, DSRL, ResiP: K = 4..10, chunks of 4..16) and were chosen so
that training on ~20k samples finishes in well under five minutes on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """Flow-matching behaviour-cloning policy over action chunks."""

    horizon: int = 4
    """Chunk length H: the policy predicts H future actions at once."""

    exec_horizon: int = 2
    """H_exec <= H: the environment executes the first H_exec actions of each chunk, then
    re-plans (receding horizon)."""

    num_steps: int = 5
    """K: Euler steps from the noise a0 (t = 0) to the action chunk (t = 1)."""

    hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden widths of the velocity MLP."""

    time_embed_dim: int = 32
    """Width of the sinusoidal embedding of the flow time t (even)."""

    layer_norm: bool = True
    """LayerNorm after each hidden Dense; keeps the regression well conditioned when the
    normalised observations have heavy tails."""

    lr: float = 1e-3
    """Peak AdamW learning rate (reached after the warm-up, then cosine decay)."""

    weight_decay: float = 1e-4
    """AdamW decoupled weight decay."""

    warmup_steps: int = 200
    """Linear learning-rate warm-up from 0, in updates."""

    max_grad_norm: float = 1.0
    """Global gradient-norm clip; flow-matching targets are noisy near t = 0."""

    num_updates: int = 10000
    """Total gradient updates: ~130 epochs of 20k samples at the default batch, about 1.5 min on
    a 2-core CPU (measured: ~0.9 s per 100 updates at obs 80, action 22, H 4, plus compile)."""

    batch_size: int = 256
    """Samples (observation, chunk) per update, drawn uniformly with replacement."""

    seed: int = 0
    """Seed of the training key when the caller does not pass one."""

    def __post_init__(self):
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        if not 1 <= self.exec_horizon <= self.horizon:
            raise ValueError(
                f"exec_horizon must satisfy 1 <= exec_horizon <= horizon, got "
                f"exec_horizon={self.exec_horizon}, horizon={self.horizon}"
            )
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.time_embed_dim < 2 or self.time_embed_dim % 2:
            raise ValueError(f"time_embed_dim must be even and >= 2, got {self.time_embed_dim}")
        if self.num_updates < 1 or self.batch_size < 1:
            raise ValueError(
                f"num_updates and batch_size must be >= 1, got num_updates={self.num_updates}, "
                f"batch_size={self.batch_size}"
            )
        if not 0 <= self.warmup_steps < self.num_updates:
            raise ValueError(
                f"warmup_steps must satisfy 0 <= warmup_steps < num_updates, got "
                f"warmup_steps={self.warmup_steps}, num_updates={self.num_updates}"
            )
        # tyro and JSON hand lists back; a tuple keeps the config hashable (usable as a static arg).
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
