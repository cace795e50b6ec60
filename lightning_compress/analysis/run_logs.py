"""Reading what runs logged: a metric over steps from a ``metrics.csv``, and one row per job of a Hydra multirun folder.

A Lightning ``CSVLogger`` writes ``metrics.csv`` with one column per metric and a ``step`` column; a Hydra multirun
folder holds one numbered job folder per point of a sweep, each with ``.hydra/overrides.yaml`` and its logs.

Example:
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "metrics.csv"
    >>> _ = f.write_text("epoch,step,compress/sparsity\\n0,0,0.0\\n0,10,\\n0,20,0.5\\n")
    >>> metric_series(f, "compress/sparsity")
    [(0, 0.0), (20, 0.5)]
"""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["SPARSITY_KEY", "find_metrics_csv", "metric_series", "sweep_jobs"]

SPARSITY_KEY = "compress/sparsity"  # what GradualMagnitudePruning logs (per layer: compress/sparsity/<name>)
PathLike = Union[str, os.PathLike]


def find_metrics_csv(run: PathLike) -> Path:
    """The ``metrics.csv`` of a run folder (the newest, if several versions), or ``run`` itself if it is the file.

    Raises:
        FileNotFoundError: If there is none under ``run``.
    """
    run = Path(run)
    if run.is_file():
        return run
    found = sorted(run.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no metrics.csv under {run} (was the run logged with logger=csv?)")
    return found[-1]


def metric_series(metrics_csv: PathLike, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every row where ``key`` was logged, in file order.

    Raises:
        KeyError: If the file has no such column (the message lists the columns that start like it).
    """
    path = find_metrics_csv(metrics_csv)
    out: list[tuple[int, float]] = []
    with path.open() as f:
        reader = csv.DictReader(f)
        if key not in (reader.fieldnames or []):
            similar = [c for c in reader.fieldnames or [] if c.split("/")[0] == key.split("/")[0]]
            raise KeyError(f"{path} has no column {key!r}; columns like it: {similar or reader.fieldnames}")
        for row in reader:
            value = row.get(key)
            if value not in (None, ""):
                out.append((int(float(row.get("step") or 0)), float(value)))
    return out


def _last(metrics_csv: Path, key: str) -> Optional[float]:
    try:
        series = metric_series(metrics_csv, key)
    except KeyError:
        return None
    return series[-1][1] if series else None


def _sparsity_from_overrides(overrides: list[str]) -> Optional[float]:
    for line in overrides:
        match = re.search(r"(?:final_)?sparsity=([0-9.eE+-]+)$", line)
        if match:
            return float(match.group(1))
    return None


def sweep_jobs(sweep_dir: PathLike, metric: str = "test/acc", sparsity_key: str = SPARSITY_KEY) -> list[dict[str, Any]]:
    """One dict per job of a Hydra multirun folder: ``job``, ``overrides``, ``metric`` and ``sparsity``.

    The sparsity is the last logged ``sparsity_key``; without one, a ``...sparsity=<x>`` override; else 0 when the
    job ran no pruning (``compression=none`` or no compression override), else None. Jobs without the metric get
    ``metric = None``.

    Raises:
        FileNotFoundError: If ``sweep_dir`` holds no Hydra job folder.
    """
    sweep_dir = Path(sweep_dir)
    jobs = sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=lambda p: (len(p.name), p.name))
    if not jobs:
        raise FileNotFoundError(f"no Hydra job folders (with .hydra/) under {sweep_dir}")
    out = []
    for job in jobs:
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = [line.removeprefix("- ").strip() for line in overrides_file.read_text().splitlines()] if (
            overrides_file.exists()) else []  # fmt: skip
        try:
            metrics_csv: Optional[Path] = find_metrics_csv(job)
        except FileNotFoundError:
            metrics_csv = None
        value = _last(metrics_csv, metric) if metrics_csv else None
        sparsity = _last(metrics_csv, sparsity_key) if metrics_csv else None
        if sparsity is None:
            sparsity = _sparsity_from_overrides(overrides)
        if sparsity is None and not any(o.startswith("compression=") and o != "compression=none" for o in overrides):
            sparsity = 0.0
        if value is not None and math.isnan(value):
            value = None
        out.append({"job": job.name, "overrides": overrides, "metric": value, "sparsity": sparsity})
    return out
