"""rfs_jax: Residual Flow Steering on massively parallel MJX dexterous-hand environments.

Su, Westenbroek, Nagabandi, Gupta. "RFS: Reinforcement Learning with Residual Flow Steering for
Dexterous Manipulation", ICLR 2026 (arXiv 2602.01789).
"""

import contextlib
import io

from rfs_jax.compile_cache import enable_compilation_cache

enable_compilation_cache()

# MJX's optional Warp backend prints two lines when warp is not installed (it is GPU-only and
# unused here). brax imports MJX on the way to our first brax import, so silence it here, where
# every entry point starts.
with contextlib.redirect_stdout(io.StringIO()):
    from mujoco import mjx  # noqa: F401

__version__ = "0.1.0"
