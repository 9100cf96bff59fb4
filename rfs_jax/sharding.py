"""Data parallelism over one named mesh axis, on one device, many, or many hosts.

DESIGN.md: envs and batches are sharded over a ``jax.sharding.Mesh`` axis (``DATA_AXIS``) and
gradients are averaged across it. We take the jit-with-shardings route (GSPMD) rather than
``shard_map``: the training step is the single-device code for the whole batch; the per-env
leaves of its state are placed with ``NamedSharding(mesh, P("data"))``, everything else is
replicated, and XLA partitions the program. Every random draw is made for the whole batch and
threefry is partitionable (``jax_threefry_partitionable``, on by default), so env ``i`` gets
the same keys on 1 or N devices and an N-device run computes the single-device run's numbers,
up to the order of float reductions. Anything global over the batch (the loss means, hence the
gradients; the observation statistics; advantage normalisation; metrics) stays global, because
in the program it *is* a reduction over the whole logical batch: XLA turns each into a local
reduction plus an all-reduce across the axis.

Multi-host is the same code after ``initialize_distributed`` (``jax.distributed``): the mesh
then spans every host's devices, each process computes its own envs' shards, and replicated
values (params, metrics) are identical on every host. On a CPU machine,
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` exercises the multi-device path and two
processes on localhost the multi-host one (CPU collectives: gloo, jax's default).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed() -> None:
    """Join a multi-host run: ``jax.distributed.initialize`` (before anything touches a device).

    JAX reads ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0) itself and detects
    SLURM, Open MPI and Kubernetes jobs; outside those, ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` give the number of processes and this one's index. Idempotent.
    """
    if jax.distributed.is_initialized():
        return
    num_processes = os.environ.get("JAX_NUM_PROCESSES")
    process_id = os.environ.get("JAX_PROCESS_ID")
    jax.distributed.initialize(
        num_processes=int(num_processes) if num_processes else None,
        process_id=int(process_id) if process_id else None,
    )


def is_primary() -> bool:
    """True on the process that writes logs and checkpoints (process 0)."""
    return jax.process_index() == 0


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` of ``jax.devices()`` (None: all of them; every
    host's under ``jax.distributed``), axis ``DATA_AXIS``."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(
            f"num_devices = {n}, but JAX sees {len(devices)} device(s) "
            f"({devices[0].platform}); pass a number in [1, {len(devices)}] or leave it unset"
        )
    if jax.process_count() > 1 and n != len(devices):
        raise ValueError(
            f"a multi-host run shards over all {len(devices)} devices of its "
            f"{jax.process_count()} processes; got num_devices = {n}"
        )
    return Mesh(np.asarray(devices[:n]), (DATA_AXIS,))


def check_divisible(num_devices: int, **sizes: int) -> None:
    """``ValueError`` naming the numbers when a batch size does not split over the devices."""
    for name, size in sizes.items():
        if size % num_devices:
            raise ValueError(
                f"{name} = {size} is not divisible by the {num_devices} devices of the mesh; "
                f"use a multiple of {num_devices} or fewer devices (--num-devices)"
            )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Split axis ``batch_axis`` over the mesh (axis 1 when a seed axis leads)."""
    return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def constrain_batch(tree: Any, mesh: Mesh | None, batch_axis: int = 0) -> Any:
    """Pin axis ``batch_axis`` of every leaf to the data axis inside jitted code (no-op without
    a mesh). Under ``jax.vmap`` the mapped axis is added unsharded."""
    if mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, batch_sharding(mesh, batch_axis))


def put(tree: Any, shardings: Any) -> Any:
    """``jax.device_put`` that also works across hosts: there, host-local values (the same on
    every process) are placed from host memory. ``shardings``: one sharding or a tree prefix."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def put_leaf(x, sharding):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, sharding)
        if _is_key(x):
            data = put_leaf(jax.random.key_data(x), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.device_put(np.asarray(x), sharding)

    return jax.tree.map(
        lambda sharding, sub: jax.tree.map(lambda x: put_leaf(x, sharding), sub),
        shardings,
        tree,
    )


def to_local(tree: Any) -> Any:
    """A full copy of ``tree`` on this process's first device (a collective: every process
    calls it). What a single process may save or inspect in a multi-host run."""
    if jax.process_count() == 1:
        return tree
    mesh_arrays = [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]
    if not mesh_arrays:
        return tree
    mesh = mesh_arrays[0].sharding.mesh
    full = jax.jit(lambda t: t, out_shardings=replicated(mesh))(tree)
    return jax.tree.map(lambda x: x.addressable_data(0), full)


def _is_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "check_divisible",
    "constrain_batch",
    "initialize_distributed",
    "is_primary",
    "make_mesh",
    "put",
    "replicated",
    "to_local",
]
