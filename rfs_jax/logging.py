"""Run logs: ``metrics.csv`` (one row per logged iteration), TensorBoard events, ``curves.png``.

Metric keys are namespaced (``ppo/clip_frac``, ``env/success``, ``perf/env_steps_per_s``,
``eval/success_rate``); every row carries ``iteration`` and ``env_steps``. Keys that appear
later (``eval/*`` on evaluation iterations) widen the CSV: the file is rewritten once with the
wider header and empty cells where a row lacks a key. A resumed run first cuts both logs back
to the iteration of the checkpoint it restarts from, so no iteration is logged twice.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

METRICS_FILE = "metrics.csv"
_INDEX = ("iteration", "env_steps")


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` (a file, or the run folder holding one) as floats; cells left
    empty (a key the row did not log) are absent from that row's dict."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no metrics at {path}; is it a folder written by `rfs steer`?")
    with path.open(newline="") as f:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(f)
        ]


class MetricsLogger:
    """Append-only ``metrics.csv`` plus TensorBoard scalars (tensorboardX) in ``run_dir``.

    ``resume_iteration``: continue an existing log, dropping its rows after that iteration
    (they belong to iterations the resumed run will compute again); ``None`` starts afresh.
    TensorBoard's x axis is ``env_steps``, so runs with different batch sizes line up.
    """

    def __init__(
        self, run_dir: str | Path, resume_iteration: int | None = None, tensorboard: bool = True
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        self._rows: list[dict[str, float]] = []
        purge_step = None
        if resume_iteration is not None:
            if self.path.is_file():
                self._rows = [
                    r for r in read_metrics(self.path) if r["iteration"] <= resume_iteration
                ]
            purge_step = int(self._rows[-1]["env_steps"]) + 1 if self._rows else 0
        self._columns: list[str] = []
        self._rewrite()
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            # purge_step drops events logged past the checkpoint by the interrupted run.
            self._writer = SummaryWriter(logdir=str(self.run_dir), purge_step=purge_step)

    @property
    def rows(self) -> list[dict[str, float]]:
        return list(self._rows)

    def _header(self, rows: Iterable[dict[str, float]]) -> list[str]:
        keys = {k for r in rows for k in r}
        return [k for k in _INDEX if k in keys] + sorted(keys - set(_INDEX))

    def _rewrite(self) -> None:
        self._columns = self._header(self._rows)
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns)
            if self._columns:
                writer.writeheader()
            writer.writerows(self._rows)
        tmp.replace(self.path)

    def write(self, record: dict[str, float]) -> None:
        """Log one iteration's host floats (must include ``iteration`` and ``env_steps``)."""
        missing = [k for k in _INDEX if k not in record]
        if missing:
            raise ValueError(f"a metrics record needs {missing}; got keys {sorted(record)}")
        record = {k: float(v) for k, v in record.items()}
        self._rows.append(record)
        if set(record) - set(self._columns) or not self._columns:
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._columns).writerow(record)
        if self._writer is not None:
            step = int(record["env_steps"])
            for k, v in record.items():
                if k not in _INDEX and math.isfinite(v):
                    self._writer.add_scalar(k, v, global_step=step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _label(run_dir: Path) -> str:
    """``mode`` from the run's config.json (``mode (folder)`` when they differ), else the folder."""
    try:
        mode = json.loads((run_dir / "config.json").read_text())["mode"]
    except (OSError, ValueError, KeyError, TypeError):
        return run_dir.name
    return mode if mode == run_dir.name else f"{mode} ({run_dir.name})"


# Fewest ended episodes for a training-success point in ``plot_curves``.
_MIN_EPISODES = 16

_SEED_KEY = re.compile(r"^seed_(\d+)/(.+)$")


def seed_columns(rows: list[dict[str, float]], key: str) -> dict[int, str]:
    """``{seed index: column}`` of the per-seed copies (``seed_<i>/<key>``) of ``key`` that a
    multi-seed run (``rfs steer --seeds N``) logs; empty for a single-seed run."""
    found = {}
    for k in {k for r in rows for k in r}:
        m = _SEED_KEY.match(k)
        if m and m.group(2) == key:
            found[int(m.group(1))] = k
    return dict(sorted(found.items()))


def plot_curves(paths: Iterable[str | Path], out: str | Path) -> Path:
    """Success against env steps, one line per run (each labelled by its mode), into ``out``.

    ``paths`` are run folders (or their ``metrics.csv``). Left: training success (episodes that
    ended during the rollouts, ``env/success``); right: evaluation success
    (``eval/success_rate``) where it was measured. A multi-seed run draws its mean as the line
    and each seed as a thin line of the same colour. Runs without metrics are skipped.
    """
    # Figure + Agg canvas directly: no global pyplot backend switch, safe next to other plotting.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    ax_train, ax_eval = fig.subplots(1, 2, sharey=True)
    for path in paths:
        path = Path(path)
        run_dir = path.parent if path.suffix == ".csv" else path
        try:
            rows = read_metrics(run_dir)
        except FileNotFoundError:
            continue
        label = _label(run_dir)
        for ax, key in ((ax_train, "env/success"), (ax_eval, "eval/success_rate")):
            # Training success over a handful of episodes is noise (the first whole episodes
            # after a staggered start are the short, successful ones): left out of the plot.
            points = np.array(
                [
                    (r["env_steps"], r[key])
                    for r in rows
                    if key in r and r.get("env/episodes", _MIN_EPISODES) >= _MIN_EPISODES
                ]
            )
            if not len(points):
                continue
            per_seed = seed_columns(rows, key)
            (line,) = ax.plot(
                points[:, 0],
                points[:, 1],
                marker="o" if len(points) < 30 else None,
                ms=3,
                lw=1.5,
                label=f"{label} (mean of {len(per_seed)} seeds)" if per_seed else label,
            )
            for column in per_seed.values():
                seed_points = np.array([(r["env_steps"], r[column]) for r in rows if column in r])
                ax.plot(
                    seed_points[:, 0], seed_points[:, 1], color=line.get_color(), lw=0.8, alpha=0.35
                )
    for ax, title in ((ax_train, "training episodes"), (ax_eval, "evaluation")):
        ax.set_title(title)
        ax.set_xlabel("env steps")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    ax_train.set_ylabel("success rate")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


__all__ = ["METRICS_FILE", "MetricsLogger", "plot_curves", "read_metrics", "seed_columns"]
