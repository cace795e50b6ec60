"""``lc-plot``: the sparsity schedule of a run, or accuracy against sparsity over the jobs of a Hydra multirun folder.

Example:
    lc-plot schedule outputs/train/2026-11-29_20-28-55           # -> <run>/sparsity_schedule.png
    lc-plot sweep multirun/train/2026-11-30_10-00-00 --metric test/acc
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Optional

from lightning_compress.analysis.plots import plot_accuracy_vs_sparsity, plot_sparsity_schedule
from lightning_compress.analysis.run_logs import SPARSITY_KEY

__all__ = ["main"]


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
