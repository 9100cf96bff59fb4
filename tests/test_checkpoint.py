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


def test_item_folder_metadata_warning_is_dropped_and_others_pass():
    """Restoring a policy alone reads one item's metadata, and orbax then warns that the item
    folder has no step-level metadata file: that one warning is dropped, every other passes."""
    import logging

    from rfs_jax.checkpoint import _ItemFolderMetadata

    def record(msg, *args):
        return logging.LogRecord("absl", logging.WARNING, __file__, 0, msg, args, None)

    keep = _ItemFolderMetadata().filter
    assert not keep(
        record("Metadata file does not exist: %s", "/r/checkpoints/25/state/_CHECKPOINT_METADATA")
    )
    assert keep(
        record("Metadata file does not exist: %s", "/r/checkpoints/25/_CHECKPOINT_METADATA")
    )
    assert keep(record("some other orbax warning about /r/checkpoints/25/state"))
