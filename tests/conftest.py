"""Test setup: JAX on the CPU with the persistent compilation cache (see rfs_jax.compile_cache).

MJX env steps take about a minute to compile on a 2-core CPU; modules share compiled functions
through module-scoped fixtures, and the cache makes repeated runs cheap.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

import rfs_jax  # noqa: E402,F401  (enables the compilation cache before anything compiles)


@pytest.fixture(scope="session")
def probe_base(tmp_path_factory):
    """A tiny flow base on the bimodal probe (tests/probe_runs.py), once per test process."""
    from probe_runs import make_base

    return make_base(tmp_path_factory.mktemp("probe") / "base")


@pytest.fixture(scope="session")
def probe_full_run(probe_base):
    """An uninterrupted ``probe``-preset RFS run through the command line, once per process."""
    from probe_runs import full_run_argv

    from experiments import cli

    out = probe_base.parent / "runs" / "rfs"
    cli.main(full_run_argv(probe_base, out))
    return out
