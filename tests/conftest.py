"""Test setup: JAX on the CPU with the persistent compilation cache (see rfs_jax.compile_cache).

MJX env steps take about a minute to compile on a 2-core CPU; modules share compiled functions
through module-scoped fixtures, and the cache makes repeated runs cheap.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import rfs_jax  # noqa: E402,F401  (enables the compilation cache before anything compiles)
