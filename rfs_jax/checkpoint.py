"""Orbax checkpoints of a whole training state (RFS, arXiv 2602.01789: the PPO ``TrainingState``).

One folder per run, one sub-folder per saved step (the training iteration), written by an orbax
``CheckpointManager`` that keeps the newest ``max_to_keep``:
    <dir>/<step>/state/    the state pytree (orbax StandardCheckpointer format)
    <dir>/<step>/config/   the run's resolved config (JSON), so every checkpoint explains itself
A restore fills an abstract target (``jax.eval_shape`` of the state's constructor) and checks
the saved shapes and dtypes against it: the code and the config decide them, not the disk. A
step that cannot be read (a truncated file, a half-copied folder) is reported by path and the
previous one is used; the unreadable ones are moved aside to ``<dir>_unreadable/``, so the
resumed run can save its own checkpoints at those steps. Nothing non-finite is ever saved.
Never pickle. In a multi-host run (``rfs_jax.sharding``) every process calls ``save`` and
``restore`` alike: orbax writes each process's shards of the env state and process 0 the rest,
into a folder every host sees.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

T = TypeVar("T")

_STATE, _CONFIG = "state", "config"


def _drop_closed_loop_callbacks() -> None:
    """A failed orbax read leaves tensorstore callbacks aimed at orbax's event loop, which is
    closed by the time they fire; Python reports each as an unraisable ``RuntimeError: Event
    loop is closed`` with a traceback, dozens of them, burying the one-line message that names
    the unreadable checkpoint. They are harmless (the read has already failed and been
    reported): drop exactly those, pass every other unraisable exception on."""
    previous = sys.unraisablehook

    def hook(unraisable):
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        previous(unraisable)

    hook.rfs_jax = True
    if not getattr(previous, "rfs_jax", False):
        sys.unraisablehook = hook
    # The same failed read's leftover tasks, logged by asyncio when they are collected.
    logging.getLogger("asyncio").addFilter(_FailedReadTasks())


class _FailedReadTasks(logging.Filter):
    """Drops asyncio's "... exception was never retrieved" records of failed tensorstore reads
    (DATA_LOSS: the unreadable checkpoint already reported by path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "exception was never retrieved" not in str(record.msg):
            return True
        context = record.args if isinstance(record.args, dict) else {}
        exc = record.exc_info[1] if record.exc_info else context.get("exception")
        text = str(exc) if exc is not None else record.getMessage()
        return not ("DATA_LOSS" in text or "Event loop is closed" in text)


class _ItemFolderMetadata(logging.Filter):
    """Drops orbax's "Metadata file does not exist: .../<step>/state/_CHECKPOINT_METADATA"
    warning: reading one item's metadata (``Checkpointer.restore(..., part=...)``) looks for a
    step-level file in the item folder, which only the step folder holds. Every other absl
    record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (
            "Metadata file does not exist" in text
            and text.rstrip().endswith(f"/{_STATE}/_CHECKPOINT_METADATA")
        )


_drop_closed_loop_callbacks()
logging.getLogger("absl").addFilter(_ItemFolderMetadata())


class CheckpointError(RuntimeError):
    """No checkpoint of a run can be read back."""


class NonFiniteStateError(FloatingPointError):
    """Refused to save a state holding NaN or infinite values."""


def non_finite_leaves(tree: Any) -> list[str]:
    """Paths (``jax.tree_util.keystr``) of the floating-point leaves with a NaN or an inf."""
    floats = [
        (jax.tree_util.keystr(path), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if jax.numpy.issubdtype(getattr(leaf, "dtype", np.int32), np.inexact)
    ]
    # Arrays spread over several hosts (a multi-host run) cannot be fetched: reduce them on
    # the devices first. The rest comes over in one transfer for the whole tree.
    values = jax.device_get(
        [
            _all_finite(leaf)
            if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable
            else leaf
            for _, leaf in floats
        ]
    )
    return [name for (name, _), x in zip(floats, values, strict=True) if not np.isfinite(x).all()]


@jax.jit
def _all_finite(x: jax.Array) -> jax.Array:
    """``[]``: 0 where ``x`` is all finite, NaN where it is not (replicated on every host)."""
    return jax.numpy.where(jax.numpy.isfinite(x).all(), 0.0, np.nan)


class Checkpointer:
    """Save and restore whole-state checkpoints of one run (see the module docstring).

    ``log(message)`` receives the fall-back reports (default ``print``).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        max_to_keep: int = 3,
        log: Callable[[str], None] = print,
    ):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
        self.directory = Path(directory).expanduser().resolve()
        self.log = log
        # Synchronous saves: the trainer donates the state's buffers to its next iteration, so
        # the arrays must be on disk (or at least copied off the device) before save returns;
        # the checkpoint cadence is far below the iteration rate, so the wait is small.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        """Saved steps, oldest first."""
        return sorted(self._manager.all_steps())

    def path(self, step: int) -> Path:
        return self.directory / str(step)

    def save(self, step: int, state: Any, *, config: dict | None = None, finite: Any = None):
        """Write ``state`` (any pytree of arrays) at ``step``, replacing a checkpoint already at
        that step. ``finite`` (default: all of ``state``) must hold no NaN or inf, else
        ``NonFiniteStateError`` and nothing is written."""
        bad = non_finite_leaves(state if finite is None else finite)
        if bad:
            raise NonFiniteStateError(
                f"not saving step {step} to {self.directory}: non-finite values in "
                f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; the previous checkpoint "
                f"is the last finite one"
            )
        if step in self._manager.all_steps():
            self._manager.delete(step)
        items = {_STATE: ocp.args.StandardSave(_sized_leaves(state))}
        if config is not None:
            items[_CONFIG] = ocp.args.JsonSave(config)
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int, abstract: T, part: Callable[[T], Any] | None = None) -> T:
        """The state saved at ``step``, restored into ``abstract`` (``jax.eval_shape`` of the
        state's constructor). Raises ``ValueError`` when a saved leaf's shape or dtype differs
        from the target's (orbax itself would hand back the saved shape), and whatever orbax
        raises when the step is unreadable.

        ``part(abstract)`` (a function picking a sub-tree, e.g. ``lambda s: s.steering_params``)
        restores and checks only those leaves and returns that sub-tree: the rest of the saved
        state is read with the shapes it was saved with, whatever ``abstract`` says of them
        (an evaluation in another env restores a policy whose env state has other shapes)."""
        if part is not None:
            return self._restore_part(step, abstract, part)
        saved = self._manager.restore(
            step,
            args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(_sized_leaves(abstract))}),
        )[_STATE]
        return self._checked(step, abstract, _with_empty_leaves(abstract, saved))

    def _restore_part(self, step: int, abstract: Any, part: Callable[[Any], Any]) -> Any:
        stored = ocp.StandardCheckpointer().metadata(self.path(step) / _STATE).item_metadata
        stored = getattr(stored, "tree", stored)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = {
            k: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device) for k, m in stored.items()
        }
        saved = self._manager.restore(
            step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(target)})
        )[_STATE]
        index = {id(leaf): i for i, leaf in enumerate(jax.tree.leaves(abstract))}
        wanted, treedef = jax.tree.flatten(part(abstract))
        out = []
        for leaf in wanted:
            key = f"{index[id(leaf)]:05d}"  # the leaf's position in the whole saved state
            out.append(saved[key] if key in saved else jnp.zeros(leaf.shape, leaf.dtype))
        return self._checked(step, treedef.unflatten(wanted), treedef.unflatten(out))

    def _checked(self, step: int, abstract: T, restored: T) -> T:
        if jax.tree.structure(restored) != jax.tree.structure(abstract):
            raise ValueError(f"{self.path(step)} holds a differently structured state")
        mismatched = [
            f"{jax.tree_util.keystr(path)}: saved {got.shape} {got.dtype}, "
            f"expected {want.shape} {want.dtype}"
            for (path, want), got in zip(
                jax.tree_util.tree_leaves_with_path(abstract),
                jax.tree.leaves(restored),
                strict=True,
            )
            if got.shape != want.shape or got.dtype != want.dtype
        ]
        if mismatched:
            raise ValueError(
                f"{self.path(step)} does not match the expected state: {'; '.join(mismatched[:3])}"
                f"{' ...' if len(mismatched) > 3 else ''}"
            )
        return restored

    def restore_latest(
        self, abstract: T, part: Callable[[T], Any] | None = None
    ) -> tuple[int, T] | None:
        """``(step, state)`` of the newest readable checkpoint; ``None`` when there is none.
        ``part``: restore only that sub-tree (see ``restore``).

        Unreadable newer steps are reported through ``log`` with their path and the error,
        then moved to ``<dir>_unreadable/``. When no step can be read, ``CheckpointError``
        lists them all and nothing is moved (a config that no longer matches the checkpoints
        fails every step the same way; that is not corruption).
        """
        failures: list[tuple[int, Exception]] = []
        for step in reversed(self.steps()):
            try:
                state = self.restore(step, abstract, part)
            except Exception as e:  # orbax raises many types (IO, tensorstore, tree mismatch)
                self.log(
                    f"checkpoint {self.path(step)} cannot be read ({type(e).__name__}: "
                    f"{_first_line(e)}); trying the previous one"
                )
                failures.append((step, e))
                continue
            for bad_step, _ in failures if jax.process_index() == 0 else ():
                self._move_aside(bad_step)  # one process moves; every host sees the folder
            if failures:
                self._manager.reload()
                self.log(f"resuming from checkpoint {self.path(step)}")
            return step, state
        if failures:
            listing = "; ".join(
                f"{self.path(s)}: {type(e).__name__}: {_first_line(e)}" for s, e in failures
            )
            raise CheckpointError(
                f"no checkpoint in {self.directory} can be restored ({listing}); if the run's "
                f"config changed since they were written, rerun with the original options, or "
                f"start the run afresh"
            )
        return None

    def _move_aside(self, step: int) -> Path:
        target = self.directory.with_name(self.directory.name + "_unreadable") / str(step)
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.path(step)), str(target))
        self.log(f"moved the unreadable checkpoint {self.path(step)} to {target}")
        return target

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _sized_leaves(tree: Any) -> dict[str, Any]:
    """The leaves of ``tree`` that hold data, keyed by their position. Orbax refuses zero-size
    arrays, and MJX's ``Data`` has several (no mocap bodies, no activations, ...)."""
    return {
        f"{i:05d}": leaf
        for i, leaf in enumerate(jax.tree.leaves(tree))
        if getattr(leaf, "size", 1) != 0
    }


def _with_empty_leaves(abstract: Any, saved: dict[str, Any]) -> Any:
    """Rebuild the full state from the saved leaves and empty arrays shaped like ``abstract``."""
    leaves, treedef = jax.tree.flatten(abstract)
    out = []
    for i, want in enumerate(leaves):
        key = f"{i:05d}"
        out.append(saved[key] if key in saved else jnp.zeros(want.shape, want.dtype))
    return jax.tree.unflatten(treedef, out)


def _first_line(e: Exception, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[:limit] + " ..."


__all__ = [
    "CheckpointError",
    "Checkpointer",
    "NonFiniteStateError",
    "non_finite_leaves",
]
