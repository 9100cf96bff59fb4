"""Test setup: JAX on the CPU with the persistent compilation cache (see rfs_jax.compile_cache).

MJX env steps take about a minute to compile on a 2-core CPU; modules share compiled functions
through module-scoped fixtures, and the cache shares them between modules of one process.
``make test`` runs the modules on two pytest-xdist workers with ``--dist loadgroup``: every test
that steps a hand task's 64-env batch is grouped by that task (the ``batched`` fixture's
parameter, or a module's ``XDIST_GROUP``), so one worker compiles each task's step once and the
cache serves the task's other modules there; the rest are grouped by module, which keeps their
module fixtures on one worker.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

import envs  # noqa: E402
import rfs_jax  # noqa: E402,F401  (enables the compilation cache before anything compiles)


def pytest_collection_modifyitems(config, items):
    tasks = set(envs.tasks())
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        params = getattr(item, "callspec", None)
        values = params.params.values() if params else ()
        task = next((v for v in values if isinstance(v, str) and v in tasks), None)
        group = task or getattr(item.module, "XDIST_GROUP", item.module.__name__)
        item.add_marker(pytest.mark.xdist_group(group))
