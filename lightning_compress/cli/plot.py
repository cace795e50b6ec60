"""``lc-plot``: the sparsity schedule of a run, or accuracy against sparsity over the jobs of a Hydra multirun folder.

Example:
    lc-plot schedule outputs/train/2026-11-29_20-28-55           # -> <run>/sparsity_schedule.png
    lc-plot sweep multirun/train/2026-11-30_10-00-00 --metric test/acc
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from lightning_compress.analysis.plots import plot_accuracy_vs_sparsity, plot_sparsity_schedule
from lightning_compress.analysis.run_logs import SPARSITY_KEY, logged_columns, sweep_jobs

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
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    try:
        if args.what == "schedule":
            out = plot_sparsity_schedule(args.run, args.out, args.key)
        else:
            if all(job["metric"] is None for job in sweep_jobs(args.sweep_dir, args.metric, args.sparsity_key)):
                raise ValueError(
                    f"no job under {args.sweep_dir} logged {args.metric!r}; choose --metric among what they logged:"
                    f" {', '.join(logged_columns(args.sweep_dir)) or 'nothing (were the jobs run with logger=csv?)'}"
                )
            out = plot_accuracy_vs_sparsity(args.sweep_dir, args.out, args.metric, args.sparsity_key)
    except (OSError, KeyError, ValueError) as err:  # a bad folder, file or column: said in one line, no traceback
        parser.exit(2, f"{parser.prog} {args.what}: error: {err.args[0] if isinstance(err, KeyError) else err}\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
