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

__all__ = ["SPARSITY_KEY", "find_metrics_csv", "logged_columns", "metric_series", "sweep_jobs"]

SPARSITY_KEY = "compress/sparsity"  # what GradualMagnitudePruning logs (per layer: compress/sparsity/<name>)
PathLike = Union[str, os.PathLike]


def find_metrics_csv(run: PathLike) -> Path:
    """The ``metrics.csv`` of a run folder (the newest, if several versions), or ``run`` itself if it is the file.

    Raises:
        FileNotFoundError: If ``run`` does not exist, or there is no ``metrics.csv`` under it.
    """
    run = Path(run)
    if run.is_file():
        return run
    if not run.exists():
        raise FileNotFoundError(
            f"{run} does not exist: give an lc-train run folder (logged with logger=csv) or its metrics.csv"
        )
    found = sorted(run.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no metrics.csv under {run} (was the run logged with logger=csv?)")
    return found[-1]


def metric_series(metrics_csv: PathLike, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every row where ``key`` was logged, in file order.

    Raises:
        FileNotFoundError: As :func:`find_metrics_csv`.
        KeyError: If the file has no such column (the message lists the columns that start like it).
        ValueError: If the file is empty, is not a text CSV file, or holds a value that is not a number.
    """
    path = find_metrics_csv(metrics_csv)
    expected = "expected the metrics.csv a Lightning CSVLogger writes (lc-train logger=csv)"
    out: list[tuple[int, float]] = []
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise ValueError(f"{path} is empty (no header line): {expected}")
            if key not in reader.fieldnames:
                similar = [c for c in reader.fieldnames if c.split("/")[0] == key.split("/")[0]]
                raise KeyError(
                    f"{path} has no column {key!r}; columns like it: {similar or reader.fieldnames} (choose one with"
                    " --key / the `key` argument)"
                )
            for line, row in enumerate(reader, start=2):
                value = row.get(key)
                if value not in (None, ""):
                    try:
                        out.append((int(float(row.get("step") or 0)), float(value)))
                    except ValueError as err:
                        raise ValueError(f"{path}, line {line}: {key!r} (or step) is not a number: {err}") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path} is not a text CSV file ({type(err).__name__}: {err}): {expected}") from None
    return out


def logged_columns(sweep_dir: PathLike) -> list[str]:
    """Every metric column of the ``metrics.csv`` files of a multirun folder's jobs (unreadable files skipped).

    Example:
        >>> import tempfile, pathlib
        >>> job = pathlib.Path(tempfile.mkdtemp()) / "0"
        >>> (job / ".hydra").mkdir(parents=True)
        >>> _ = (job / "metrics.csv").write_text("epoch,step,test/acc\\n0,1,0.5\\n")
        >>> logged_columns(job.parent)
        ['test/acc']
    """
    columns: set[str] = set()
    for job in Path(sweep_dir).iterdir():
        if not (job / ".hydra").is_dir():
            continue
        try:
            with find_metrics_csv(job).open(encoding="utf-8", newline="") as f:
                columns.update(next(csv.reader(f), []))
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
    return sorted(columns - {"epoch", "step"})


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
        FileNotFoundError: If ``sweep_dir`` does not exist or holds no Hydra job folder.
        NotADirectoryError: If ``sweep_dir`` is a file.
    """
    sweep_dir = Path(sweep_dir)
    what = "give the folder of a Hydra multirun (`lc-train -m ...` writes multirun/train/<time>/)"
    if not sweep_dir.exists():
        raise FileNotFoundError(f"{sweep_dir} does not exist: {what}")
    if not sweep_dir.is_dir():
        raise NotADirectoryError(f"{sweep_dir} is a file, not a folder: {what}")
    jobs = sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=lambda p: (len(p.name), p.name))
    if not jobs:
        raise FileNotFoundError(
            f"no Hydra job folders (with .hydra/) under {sweep_dir}: a multirun folder holds one per job (0/, 1/, ...);"
            " for a single run use `lc-plot schedule`"
        )
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
