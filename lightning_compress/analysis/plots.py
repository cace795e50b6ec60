"""Figures of runs: the sparsity schedule of a run, and accuracy against sparsity of a sweep.

matplotlib is imported inside each function (Agg backend, no display needed), so the rest of the library works without
it; ``lc-plot`` is the command line.

Example:
    lc-plot schedule outputs/train/2026-11-29_20-28-55           # -> <run>/sparsity_schedule.png
    lc-plot sweep multirun/train/2026-11-30_10-00-00 --metric test/acc
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Union

from lightning_compress.analysis.run_logs import SPARSITY_KEY, find_metrics_csv, metric_series, sweep_jobs
from lightning_compress.core.files import atomic_path

__all__ = ["plot_accuracy_vs_sparsity", "plot_sparsity_schedule", "pyplot", "save_figure"]

PathLike = Union[str, os.PathLike]


def pyplot() -> Any:
    """matplotlib's ``pyplot`` with the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: PathLike, dpi: int = 120) -> Path:
    """``fig.savefig`` to a temporary file in ``path``'s folder, renamed over ``path`` (the format from its suffix,
    PNG without one); returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".").lower() or "png")
    return path


def plot_sparsity_schedule(run: PathLike, path: Optional[PathLike] = None, key: str = SPARSITY_KEY) -> Path:
    """The sparsity a run logged (``compress/sparsity`` by default) against optimizer steps, per layer dashed.

    Args:
        run: A run folder (its newest ``metrics.csv``) or the file.
        path: Output image; default ``sparsity_schedule.png`` beside the run folder's logs.
        key: The logged column.

    Returns:
        The image path.

    Raises:
        FileNotFoundError / KeyError: Without a ``metrics.csv`` or the column.
        ValueError: If the column is empty.
    """
    plt = pyplot()
    metrics_csv = find_metrics_csv(run)
    total = metric_series(metrics_csv, key)
    if not total:
        raise ValueError(f"{metrics_csv}: column {key!r} holds no value")
    with metrics_csv.open() as f:
        header = f.readline().strip().split(",")
    layers = [c for c in header if c.startswith(key + "/")]
    fig, ax = plt.subplots(figsize=(7, 4))
    for column in layers[:12]:
        series = metric_series(metrics_csv, column)
        ax.step([s for s, _ in series], [v for _, v in series], where="post", linestyle="--", linewidth=0.8,
                label=column.removeprefix(key + "/"))  # fmt: skip
    ax.step([s for s, _ in total], [v for _, v in total], where="post", color="black", linewidth=2, label="total")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("sparsity")
    ax.set_ylim(0, 1)
    ax.set_title(f"{key} - {metrics_csv.parent}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path) if path else (Path(run) if Path(run).is_dir() else metrics_csv.parent) / "sparsity_schedule.png"
    save_figure(fig, out)
    plt.close(fig)
    return out


def plot_accuracy_vs_sparsity(
    sweep_dir: PathLike, path: Optional[PathLike] = None, metric: str = "test/acc", sparsity_key: str = SPARSITY_KEY
) -> Path:
    """``metric`` against final sparsity over the jobs of a Hydra multirun folder (mean and range over repeats).

    Returns:
        The image path (default ``<sweep_dir>/accuracy_vs_sparsity.png``).

    Raises:
        ValueError: If no job has both a metric and a sparsity.
    """
    plt = pyplot()
    jobs = [
        j for j in sweep_jobs(sweep_dir, metric, sparsity_key) if j["metric"] is not None and j["sparsity"] is not None
    ]
    if not jobs:
        raise ValueError(f"no job under {sweep_dir} logged both {metric!r} and a sparsity")
    groups: dict[float, list[float]] = defaultdict(list)
    for job in jobs:
        groups[round(job["sparsity"], 4)].append(job["metric"])
    xs = sorted(groups)
    means = [statistics.fmean(groups[x]) for x in xs]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, means, marker="o")
    for x in xs:
        if len(groups[x]) > 1:
            ax.vlines(x, min(groups[x]), max(groups[x]), color="#1f77b4", alpha=0.5)
    ax.set_xlabel("sparsity")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs sparsity ({len(jobs)} jobs)", fontsize=9)
    fig.tight_layout()
    out = Path(path) if path else Path(sweep_dir) / "accuracy_vs_sparsity.png"
    save_figure(fig, out)
    plt.close(fig)
    return out
