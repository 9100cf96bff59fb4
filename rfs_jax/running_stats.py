"""Running mean and standard deviation of observations, as a pure pytree.

The steering head and the value function see normalised observations (the frozen base policy
sees the raw ones it was trained on). Batches are merged with the parallel form of Welford's
algorithm (Chan, Golub, LeVeque 1979), which stays accurate when a large running count meets a
large batch, and everything is ``jnp`` so the update runs inside the compiled training step.
"""

from __future__ import annotations

import flax.struct
import jax.numpy as jnp

from rfs_jax.types import Array


@flax.struct.dataclass
class RunningStats:
    """Count, mean and sum of squared deviations (``m2``) of a stream of ``[O]`` vectors."""

    count: Array  # [] float32: float so that huge counts do not overflow an int32
    mean: Array  # [O]
    m2: Array  # [O]

    @property
    def variance(self) -> Array:
        """``[O]``; 1 before anything was seen, so that normalising is then the identity."""
        return jnp.where(self.count > 0, self.m2 / jnp.maximum(self.count, 1.0), 1.0)

    @property
    def std(self) -> Array:
        return jnp.sqrt(self.variance)


def init(size: int) -> RunningStats:
    """Empty statistics for ``[size]`` vectors."""
    return RunningStats(
        count=jnp.zeros((), jnp.float32),
        mean=jnp.zeros((size,), jnp.float32),
        m2=jnp.zeros((size,), jnp.float32),
    )


def update(stats: RunningStats, x: Array) -> RunningStats:
    """Merge a batch ``x [..., O]`` (all leading axes are samples) into ``stats``."""
    x = jnp.reshape(x, (-1, stats.mean.shape[-1])).astype(jnp.float32)
    n_b = jnp.asarray(x.shape[0], jnp.float32)
    mean_b = jnp.mean(x, axis=0)
    m2_b = jnp.sum(jnp.square(x - mean_b), axis=0)
    n = stats.count + n_b
    delta = mean_b - stats.mean
    mean = stats.mean + delta * (n_b / n)
    m2 = stats.m2 + m2_b + jnp.square(delta) * (stats.count * n_b / n)
    return RunningStats(count=n, mean=mean, m2=m2)


def normalize(stats: RunningStats, x: Array, clip: float = 10.0, eps: float = 1e-8) -> Array:
    """``(x - mean) / std`` clipped to ``[-clip, clip]``; ``x [..., O]``.

    A feature that never varied (std 0) maps to 0 rather than blowing up: ``eps`` sits inside
    the square root and ``x - mean`` is then exactly 0.
    """
    z = (x - stats.mean) / jnp.sqrt(stats.variance + eps)
    return jnp.clip(z, -clip, clip)
