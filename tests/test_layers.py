"""The package layers, read from the source: envs/ never imports the library (rfs_jax) or the
experiments, rfs_jax/ never imports the experiments, and no stage module imports the command
line (experiments/cli.py imports them all, so any of those would be an import circle)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _offenders(package: str, forbidden: tuple[str, ...], skip: tuple[str, ...] = ()):
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.name in skip:
            continue
        bad = sorted(
            n for n in _imports(path) if any(n == f or n.startswith(f + ".") for f in forbidden)
        )
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    return found


@pytest.mark.parametrize(
    ("package", "forbidden", "skip"),
    [
        ("envs", ("rfs_jax", "experiments"), ()),
        ("rfs_jax", ("experiments",), ()),
        ("experiments", ("experiments.cli",), ("cli.py",)),
    ],
)
def test_layers_import_only_downwards(package, forbidden, skip):
    assert _offenders(package, forbidden, skip) == {}


def test_the_check_sees_an_offending_import(tmp_path, monkeypatch):
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "x.py").write_text("def f():\n    from rfs_jax.types import Array\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _offenders("envs", ("rfs_jax",)) == {"envs/x.py": ["rfs_jax.types"]}
