"""Bad input through the command line, as a user meets it: one line naming the fix, exit code 2,
no traceback, and nothing compiled or written. (The faults of a training run itself, kill and
resume, unreadable checkpoints, SIGINT and SIGTERM, a base folder as --out, are in
tests/test_steer.py, next to the probe runs they need.)"""

from __future__ import annotations

import pytest

from experiments import cli


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())
    assert "Traceback" not in text
    return text


def test_unknown_command_is_refused_even_with_help(capsys):
    text = _error(capsys, ["export", "--help"])
    assert "unknown command 'export'" in text and "steer" in text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("object.mass_range=abc", "wrong type: expected a value like (0.1, 0.5)"),
        ("episode_length=2.7", "wrong type: expected a value like 100"),
        ("KEY", "must look like KEY=VALUE"),
        ("object.colour=red", "unknown config key 'object.colour'"),
        ("object.shape=cylinder", "shapes that work in this task: box, sphere, capsule"),
    ],
)
def test_bad_overrides_name_the_problem(capsys, tmp_path, override, message):
    text = _error(
        capsys,
        ["demos", "--task", "grasp", "--num", "4", "--out", str(tmp_path / "d.hdf5")]
        + ["--override", override],
    )
    assert message in text
    assert not (tmp_path / "d.hdf5").exists()


def test_zero_budgets_are_refused(capsys, tmp_path):
    assert "--episodes must be positive" in _error(
        capsys, ["eval", "--run", str(tmp_path), "--episodes", "0"]
    )
    text = _error(
        capsys,
        ["steer", "--task", "grasp", "--base", str(tmp_path), "--total-env-steps", "0"],
    )
    assert "total_env_steps must be positive" in text
