"""The figure of a benchmark: theoretical against measured speed-up of every path, ``bench.png``.

Example:
    >>> plot_speedups(rows, "bench.png", title="resnet18 on cpu")  # rows of benchmark_model  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

from lightning_compress.analysis.plots import pyplot, save_figure
from lightning_compress.bench.results import BenchResult

__all__ = ["plot_speedups"]


def plot_speedups(rows: Sequence[BenchResult], path: Union[str, os.PathLike], title: str = "") -> Path:
    """Horizontal bars of theoretical and measured speed-up over fp32 eager per measured path (log scale).

    Returns:
        ``path``.
    """
    plt = pyplot()
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
    save_figure(fig, path)  # atomically: a temporary file renamed over the old figure
    plt.close(fig)
    return Path(path)
