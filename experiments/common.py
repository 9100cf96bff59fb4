"""Helpers shared by the command-line entry points."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console()


def parse_overrides(items: tuple[str, ...]) -> dict[str, Any]:
    """``("object.shape=sphere", "episode_length=80")`` -> dict; values are read as JSON when
    they parse (numbers, lists, booleans), else kept as strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(
                f"override {item!r} must look like KEY=VALUE (e.g. object.shape=sphere)"
            )
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_default) + "\n")
    tmp.replace(path)
    return path


def _default(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)
