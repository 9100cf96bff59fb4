"""rfs_jax: Residual Flow Steering on massively parallel MJX dexterous-hand environments.

Su, Westenbroek, Nagabandi, Gupta. "RFS: Reinforcement Learning with Residual Flow Steering for
Dexterous Manipulation", ICLR 2026 (arXiv 2602.01789).
"""

from rfs_jax.compile_cache import enable_compilation_cache

enable_compilation_cache()

__version__ = "0.1.0"
