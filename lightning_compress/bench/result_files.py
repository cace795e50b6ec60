"""Writing a benchmark's rows where a run keeps its results: ``bench.csv``, ``bench.json`` (with the machine and the
run's settings) and ``bench.png``.

Example:
    >>> write_results(rows, "outputs/bench/run", meta=machine_info())  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Union

from lightning_compress.bench.figures import plot_speedups
from lightning_compress.bench.results import BenchResult
from lightning_compress.core.files import atomic_write_text

__all__ = ["write_results"]


def write_results(
    rows: Sequence[BenchResult],
    run_dir: Union[str, os.PathLike],
    meta: Optional[Mapping[str, Any]] = None,
    name: str = "bench",
    plot: bool = True,
) -> dict[str, Path]:
    """Write ``<name>.csv``, ``<name>.json`` (rows + ``meta``) and, with matplotlib, ``<name>.png`` into ``run_dir``,
    each atomically (a crash mid-write leaves the previous file).

    Returns:
        The written files by kind (``"csv"``, ``"json"``, ``"png"``); ``"png"`` is missing without matplotlib.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = [asdict(r) for r in rows]
    out = {"csv": run_dir / f"{name}.csv", "json": run_dir / f"{name}.json"}
    keys = [k for k in data[0] if k != "extra"] if data else []
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(data)
    atomic_write_text(out["csv"], text.getvalue())  # each file: a temporary file renamed over the old one
    atomic_write_text(out["json"], json.dumps({"meta": dict(meta or {}), "results": data}, indent=2, default=str))
    if plot:
        try:
            out["png"] = plot_speedups(rows, run_dir / f"{name}.png", title=str((meta or {}).get("title", "")))
        except ImportError:  # no matplotlib
            pass
    return out


# --------------------------------------------------------------------------------------------------------- CLI
