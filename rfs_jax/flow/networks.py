"""Velocity network of the flow-matching base policy.

Flow matching (Lipman et al. 2023; rectified flow, Liu et al. 2023) learns a velocity field
v(a_t, t, s) over action chunks; RFS (arXiv 2602.01789) freezes it and steers its input noise.
The MLP over concat(a_t, emb(t), s) follows fql's ``ActorVectorField``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from rfs_jax.types import Array


def sinusoidal_embedding(t: Array, dim: int, max_freq: float = 1000.0) -> Array:
    """Sin/cos features of the flow time. t [B] in [0, 1] -> [B, dim].

    Geometric frequencies from 1 to ``max_freq`` let the MLP resolve both the slow drift of the
    field over t and its sharp change near t = 1 where modes separate.
    """
    half = dim // 2
    freqs = jnp.exp(jnp.linspace(0.0, jnp.log(max_freq), half))
    angles = t[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class VelocityNet(nn.Module):
    """v(a_t, t, obs): a_t [B, H, A], t [B], obs [B, O] -> v [B, H, A] (normalised units)."""

    hidden: Sequence[int]
    time_embed_dim: int
    horizon: int
    action_size: int
    layer_norm: bool = True

    @nn.compact
    def __call__(self, a_t: Array, t: Array, obs: Array) -> Array:
        batch = a_t.shape[0]
        x = jnp.concatenate(
            [a_t.reshape(batch, -1), sinusoidal_embedding(t, self.time_embed_dim), obs], axis=-1
        )
        for width in self.hidden:
            x = nn.Dense(width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = nn.silu(x)
        v = nn.Dense(self.horizon * self.action_size)(x)
        return v.reshape(batch, self.horizon, self.action_size)
