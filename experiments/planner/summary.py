"""One markdown row per planner walk: the budget, the chosen candidate, whether it meets the budget, its accuracy
drop, latency and size ratios against fp32, the steps run / skipped, and the wall time of the steps.

    .venv/bin/python experiments/planner/summary.py outputs/planner/mnist_tight outputs/planner/mnist_loose
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(folder: Path) -> str:
    state = json.loads((folder / "planner_state.json").read_text())
    base, budget = state["baseline"], state["budget"]
    candidates = [c for r in state["records"] for c in r["candidates"]]
    met = [c for c in candidates if not c["shortfalls"]]
    chosen = met[0] if met and not state["settings"]["explore"] else None
    if chosen is None and candidates:
        chosen = min(candidates, key=lambda c: (len(c["shortfalls"]), -c["measurement"]["metric"]))
    m = chosen["measurement"] if chosen else {}
    lat = 1 / m["speedup"] if m.get("speedup") else float("nan")
    size = m["size_bytes"] / base["size_bytes"] if m.get("size_bytes") else float("nan")
    done = [r["step"] for r in state["records"] if r["status"] == "done"]
    skipped = [r["step"] for r in state["records"] if r["status"] != "done"]
    wall = sum(r["wall_s"] for r in state["records"])
    return (
        f"| {folder.name} | {budget['max_drop']:g} pts, lat {budget['latency_ratio']}, size {budget['size_ratio']}"
        f" | {chosen['name'] if chosen else '-'} | {'yes' if chosen and not chosen['shortfalls'] else 'no'}"
        f" | {100 * (base['metric'] - m.get('metric', base['metric'])):.2f} | {lat:.3f} | {size:.3f}"
        f" | {', '.join(done)} | {', '.join(skipped)} | {wall:.0f} |"
    )


if __name__ == "__main__":
    print("| walk | budget | chosen | meets | drop pts | latency x fp32 | size x fp32 | steps run | skipped | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        print(row(Path(arg)))
