"""Shared type aliases. Shapes are written in docstrings as ``[T, B, A]``."""

from __future__ import annotations

from typing import Any

import jax

Array = jax.Array
PRNGKey = jax.Array
Params = Any  # a pytree of arrays
Metrics = dict[str, Array]
