"""Checkpointer: pytrees with zero-size leaves (MJX Data has several) round-trip."""

import jax
import jax.numpy as jnp
import numpy as np

from rfs_jax.checkpoint import Checkpointer


def test_zero_size_leaves_round_trip(tmp_path):
    state = {
        "w": jnp.arange(6.0).reshape(2, 3),
        "mocap_pos": jnp.zeros((4, 0, 3)),
        "act": jnp.zeros((4, 0), jnp.int32),
        "step": jnp.array(7, jnp.int32),
    }
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(1, state)
        abstract = jax.eval_shape(lambda: state)
        back = ckpt.restore(1, abstract)
    assert jax.tree.structure(back) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(back), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
