"""Figures: theoretical against measured speed-up, the sparsity schedule of a run, accuracy against sparsity of a sweep.

matplotlib is imported inside each function (Agg backend, no display needed), so the rest of the library works without
it; ``lc-plot`` is the command line.

Example:
    lc-plot schedule outputs/train/2026-11-29_20-28-55           # -> <run>/sparsity_schedule.png
    lc-plot sweep multirun/train/2026-11-30_10-00-00 --metric test/acc
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from lightning_compress.run_logs import SPARSITY_KEY, find_metrics_csv, metric_series, sweep_jobs

if TYPE_CHECKING:
    from lightning_compress.bench import BenchResult

__all__ = ["main", "plot_accuracy_vs_sparsity", "plot_sparsity_schedule", "plot_speedups"]

PathLike = Union[str, os.PathLike]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_speedups(rows: Sequence["BenchResult"], path: PathLike, title: str = "") -> Path:
    """Horizontal bars of theoretical and measured speed-up over fp32 eager per measured path (log scale).

    Returns:
        ``path``.
    """
    plt = _pyplot()
    shown = [r for r in rows if r.available and r.speedup is not None]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(shown) + 1.6))
    y = list(range(len(shown)))
    theory = [r.theoretical_speedup or float("nan") for r in shown]
    ax.barh([i + 0.2 for i in y], theory, height=0.4, label="theory", color="#bbbbbb")
    ax.barh([i - 0.2 for i in y], [r.speedup for r in shown], height=0.4, label="measured", color="#1f77b4")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(y, [r.path for r in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("speed-up over fp32 eager (log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


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
    plt = _pyplot()
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
    fig.savefig(out, dpi=120)
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
    plt = _pyplot()
    jobs = [j for j in sweep_jobs(sweep_dir, metric, sparsity_key) if j["metric"] is not None and j["sparsity"] is not None]
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
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``lc-plot``: the sparsity schedule of a run, or accuracy against sparsity of a Hydra multirun folder."""
    parser = argparse.ArgumentParser(prog="lc-plot", description=main.__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    schedule = sub.add_parser("schedule", help="sparsity over steps from a run's metrics.csv")
    schedule.add_argument("run")
    schedule.add_argument("--key", default=SPARSITY_KEY)
    schedule.add_argument("--out")
    sweep = sub.add_parser("sweep", help="accuracy against sparsity from a multirun folder")
    sweep.add_argument("sweep_dir")
    sweep.add_argument("--metric", default="test/acc")
    sweep.add_argument("--sparsity-key", default=SPARSITY_KEY)
    sweep.add_argument("--out")
    args = parser.parse_args(argv)
    if args.what == "schedule":
        out = plot_sparsity_schedule(args.run, args.out, args.key)
    else:
        out = plot_accuracy_vs_sparsity(args.sweep_dir, args.out, args.metric, args.sparsity_key)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
