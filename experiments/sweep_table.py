"""Tabulates a Hydra multirun folder: each job's overrides beside its final logged metrics.

Usage:
    python experiments/sweep_table.py multirun/mnist_gmp90/<time> [--metrics test/acc compress/sparsity]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def last_values(metrics_csv: Path, names: list[str]) -> dict[str, str]:
    """The last non-empty value of each named column of a Lightning CSVLogger ``metrics.csv``."""
    found: dict[str, str] = {}
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            for name in names:
                if row.get(name):
                    found[name] = row[name]
    return found


def _fmt(value: str) -> str:
    try:
        return f"{float(value):.4f}"
    except ValueError:
        return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metrics", nargs="+", default=["test/acc", "compress/sparsity"])
    args = parser.parse_args()
    jobs = sorted((p for p in args.sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=lambda p: int(p.name))
    if not jobs:
        raise SystemExit(f"no Hydra job folders under {args.sweep_dir}")
    header = ["job", "overrides", *args.metrics]
    rows = []
    for job in jobs:
        overrides = (job / ".hydra" / "overrides.yaml").read_text().splitlines()
        swept = " ".join(line.removeprefix("- ") for line in overrides if "progress_bar" not in line)
        metrics_csv = next(job.rglob("metrics.csv"), None)
        values = last_values(metrics_csv, args.metrics) if metrics_csv else {}
        rows.append([job.name, swept, *(_fmt(values.get(m, "-")) for m in args.metrics)])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
