"""Wall time of `import lightning_compress` in a fresh interpreter: this checkout against another one (e.g. a git
worktree of an earlier commit), interleaved, median of N runs each, plus what the import loads.

    git worktree add /tmp/before 26408e1
    .venv/bin/python experiments/architecture/import_time.py --other /tmp/before --runs 5

Run it on a quiet machine (check `uptime`): the import is dominated by reading and compiling torch and Lightning.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]
PROBES = {
    "import lightning_compress": "import lightning_compress",
    "from lightning_compress import GradualMagnitudePruning": "from lightning_compress import GradualMagnitudePruning",
}
PROBE = (
    "import sys, time; t = time.perf_counter(); {statement}; t = time.perf_counter() - t; "
    "heavy = [m for m in ('torch', 'lightning', 'hydra', 'matplotlib', 'transformers') if m in sys.modules]; "
    "print(t, len([m for m in sys.modules if m.startswith('lightning_compress')]), ','.join(heavy) or '-')"
)


def once(checkout: Path, statement: str) -> tuple[float, float, int, str]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    code = PROBE.format(statement=statement)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=checkout, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the import failed in {checkout}: {out.stderr[-2000:]}")
    wall = time.perf_counter() - start
    inner, modules, heavy = out.stdout.split()
    return wall, float(inner), int(modules), heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for label, statement in PROBES.items():
        print(f"== {label}; load average before: {os.getloadavg()[0]:.2f}")
        results: dict[str, list[tuple[float, float, int, str]]] = {"this": [], "other": []}
        for _ in range(args.runs):  # interleaved: this, other, this, other, ...
            results["this"].append(once(HERE, statement))
            results["other"].append(once(args.other.resolve(), statement))
        for name, rows in results.items():
            walls = [r[0] for r in rows]
            inner = [r[1] for r in rows]
            print(
                f"{name:5s} interpreter wall median {statistics.median(walls):.3f} s"
                f" (runs {', '.join(f'{w:.2f}' for w in walls)}); the statement itself median"
                f" {statistics.median(inner):.3f} s; lightning_compress modules loaded {rows[0][2]};"
                f" heavy packages loaded: {rows[0][3]}"
            )
        ratio = statistics.median(r[0] for r in results["other"]) / statistics.median(r[0] for r in results["this"])
        print(f"other / this (wall medians): {ratio:.2f}x; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
