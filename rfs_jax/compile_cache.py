"""JAX's persistent compilation cache, on by default.

Compiling one batched MJX hand step takes about a minute on a 2-core CPU; the cache makes every
later run (and every test module) reuse it. Set ``RFS_JAX_CACHE_DIR`` to move the cache or
``RFS_JAX_CACHE_DIR=off`` to disable it.
"""

from __future__ import annotations

import os
from pathlib import Path

_enabled = False


def cache_dir() -> Path | None:
    env = os.environ.get("RFS_JAX_CACHE_DIR")
    if env is not None:
        return None if env.lower() in ("", "0", "off", "none") else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "rfs_jax" / "jax_cache"


def enable_compilation_cache() -> Path | None:
    """Point JAX's persistent cache at ``cache_dir()``; idempotent."""
    global _enabled
    path = cache_dir()
    if path is None or _enabled:
        return path
    import jax

    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Cache everything that took measurable time to compile; small programs are cheap anyway.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    _enabled = True
    return path
