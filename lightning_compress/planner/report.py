"""What the planner writes when it ends: the table of every candidate (``candidates.csv``, ``candidates.md``), the
Pareto front of accuracy against latency and against file size (``pareto.png``), and a short report that explains the
choice from the numbers (``report.md``); every file is written atomically. A perplexity budget shows perplexity and
its relative increase in place of accuracy and points lost (the Pareto front: lower perplexity is better), and a
``weight_bytes_ratio`` target adds the weight bytes and their ratio to the bf16 weight bytes.

Example:
    >>> pareto_front([(0.97, 1.0), (0.96, 0.3), (0.95, 0.5), (0.90, 0.2)])
    [0, 1, 3]
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from lightning_compress.core.files import atomic_path, atomic_write_text
from lightning_compress.planner.budget import Budget, Measurement
from lightning_compress.planner.steps import CandidateRecord, StepRecord

__all__ = ["COLUMNS", "columns", "pareto_front", "report_text", "table_rows", "write_outputs"]

COLUMNS = ("candidate", "step", "accuracy %", "drop pts", "latency ms", "x fp32", "items/s", "peak MiB", "file MiB",
           "x fp32 size", "wall s", "meets", "why not / note")  # fmt: skip


def columns(budget: Optional[Budget] = None) -> tuple[str, ...]:
    """The table's columns for ``budget`` (:data:`COLUMNS` for an accuracy budget without a weight-bytes target)."""
    cols = list(COLUMNS)
    if budget is not None and budget.lower_is_better:
        cols[2:4] = ["perplexity", "increase %"]
    if budget is not None and budget.weight_bytes_ratio is not None:
        cols[10:10] = ["weights MiB", "x bf16 weights"]
    return tuple(cols)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates, for ``(metric, cost)`` pairs (higher metric and lower cost
    are better); ties keep the first. Sorted by index.

    Example:
        >>> pareto_front([(0.9, 2.0), (0.9, 2.0), (0.8, 3.0)])
        [0]
    """
    front = []
    for i, (m, c) in enumerate(points):
        dominated = any(
            (m2 >= m and c2 <= c and (m2 > m or c2 < c)) or (j < i and (m2, c2) == (m, c))
            for j, (m2, c2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _row(name: str, step: str, m: Measurement, base: Measurement, meets: str, note: str,
         budget: Optional[Budget] = None) -> list[str]:  # fmt: skip
    size_ratio = m.size_bytes / base.size_bytes if m.size_bytes and base.size_bytes else None
    if budget is not None and budget.lower_is_better:
        metric = [f"{m.metric:.3f}", f"{budget.drop_points(m, base):.2f}"]
    else:
        metric = [f"{100 * m.metric:.2f}", f"{100 * (base.metric - m.metric):.2f}"]
    weights = []
    if budget is not None and budget.weight_bytes_ratio is not None:
        ratio = m.weight_bytes / base.bf16_weight_bytes if m.weight_bytes and base.bf16_weight_bytes else None
        weights = [_fmt(m.weight_bytes / 2**20 if m.weight_bytes else None, ".3f"), _fmt(ratio, ".3f")]
    return [
        name, step, *metric, _fmt(m.latency_ms, ".3f"),
        _fmt(1 / m.speedup if m.speedup else None, ".3f") + (" (!)" if m.untrusted else ""),
        _fmt(m.throughput, ".1f"), _fmt(m.peak_memory_mb, ".1f"),
        _fmt(m.size_bytes / 2**20 if m.size_bytes else None, ".3f"), _fmt(size_ratio, ".3f"), *weights,
        f"{m.wall_s:.1f}", meets, note,
    ]  # fmt: skip


def table_rows(
    baseline: Measurement, records: Sequence[StepRecord], budget: Optional[Budget] = None
) -> list[list[str]]:
    """One row for the fp32 model, one per measured candidate, one per skipped or failed step (its reason); the
    columns are :func:`columns` of ``budget``."""
    rows = [_row("fp32", "-", baseline, baseline, "-", "the original model", budget)]
    blanks = len(columns(budget)) - 4
    for record in records:
        for c in record.candidates:
            rows.append(_row(c.name, c.step, c.measurement, baseline, "yes" if c.met else "no",
                             "; ".join(c.shortfalls) if c.shortfalls else c.note, budget))  # fmt: skip
        if record.status != "done":
            rows.append([record.step, record.step, *["-"] * blanks, record.status, record.reason])
    return rows


def _markdown(rows: list[list[str]], cols: Sequence[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _csv(rows: list[list[str]], cols: Sequence[str] = COLUMNS) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(cols)
    writer.writerows(rows)
    return out.getvalue()


def _plot(path: Path, baseline: Measurement, candidates: Sequence[CandidateRecord], budget: Budget) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [("fp32", baseline), *[(c.name, c.measurement) for c in candidates]]
    lm = budget.lower_is_better
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    size_axis = ("file size, x fp32", lambda m: m.size_bytes / baseline.size_bytes if m.size_bytes and
                 baseline.size_bytes else None)  # fmt: skip
    if budget.weight_bytes_ratio is not None:
        size_axis = ("weight bytes, x the bf16 weight bytes", lambda m: m.weight_bytes / baseline.bf16_weight_bytes
                     if m.weight_bytes and baseline.bf16_weight_bytes else None)  # fmt: skip
    for ax, (label, cost) in zip(
        axes, [("latency, x fp32 (interleaved)", lambda m: 1 / m.speedup if m.speedup else None), size_axis]
    ):  # fmt: skip
        shown = [(n + (" (!)" if m.untrusted and "latency" in label else ""), m.metric if lm else 100 * m.metric,
                  cost(m)) for n, m in points if cost(m) is not None]  # fmt: skip
        front = set(pareto_front([(-acc if lm else acc, c) for _, acc, c in shown]))
        for i, (name, acc, c) in enumerate(shown):
            ax.scatter([c], [acc], color="C3" if i in front else "C0", zorder=3)
            ax.annotate(name, (c, acc), textcoords="offset points", xytext=(4, 4), fontsize=8)
        line = sorted((c, acc) for i, (_, acc, c) in enumerate(shown) if i in front)
        if line:
            ax.plot(*zip(*line), color="C3", alpha=0.5, label="Pareto front")
        if lm:
            ax.axhline(baseline.metric * (1 + budget.max_ppl_increase), color="grey", ls="--", lw=1,
                       label="perplexity budget")  # fmt: skip
        else:
            ax.axhline(100 * baseline.metric - budget.max_drop, color="grey", ls="--", lw=1, label="accuracy budget")
        target = budget.latency_ratio if "latency" in label else (budget.weight_bytes_ratio or budget.size_ratio)
        if target is not None:
            ax.axvline(target, color="grey", ls=":", lw=1, label="target")
        ax.set_xlabel(label)
        ax.set_ylabel("validation perplexity (lower is better)" if lm else "validation accuracy, %")
        ax.legend(fontsize=8)
    fig.suptitle(f"lc-compress: {budget.describe()}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def report_text(
    budget: Budget,
    baseline: Measurement,
    records: Sequence[StepRecord],
    chosen: Optional[CandidateRecord],
    met: bool,
    exported: Sequence[str] = (),
    machine: Sequence[str] = (),
) -> str:
    """The short report: the budget, the choice and why, what each step did or why it was skipped."""
    lines = ["# lc-compress report", "", f"Budget: {budget.describe()}.", ""]
    lines += [f"Machine: {line}" for line in machine]
    mib = _fmt((baseline.size_bytes or 0) / 2**20, ".3f")
    lm = budget.lower_is_better
    metric = f"perplexity {baseline.metric:.3f}" if lm else f"accuracy {100 * baseline.metric:.2f} %"
    weights = ""
    if budget.weight_bytes_ratio is not None and baseline.bf16_weight_bytes:
        weights = f", weights {baseline.bf16_weight_bytes / 2**20:.3f} MiB in bf16 (the memory target's reference)"
    lines.append(f"fp32 model: {metric}, latency {_fmt(baseline.latency_ms, '.3f')} ms"
                 f" at batch {budget.batch_size}, file {mib} MiB{weights}.")  # fmt: skip
    lines.append("")
    if chosen is None:
        lines.append("**No candidate was made**: every step was skipped or failed (see below); the fp32 model stays.")
    elif met:
        m = chosen.measurement
        latency = _fmt(1 / m.speedup if m.speedup else None, ".3f")
        size = _fmt(m.size_bytes / baseline.size_bytes if m.size_bytes and baseline.size_bytes else None, ".3f")
        if lm:
            quality = f"perplexity {m.metric:.3f} (+{budget.drop_points(m, baseline):.2f} %)"
        else:
            quality = f"accuracy {100 * m.metric:.2f} % ({budget.drop_points(m, baseline):.2f} points lost)"
        memory = ""
        if budget.weight_bytes_ratio is not None and m.weight_bytes and baseline.bf16_weight_bytes:
            memory = f", weights {m.weight_bytes / baseline.bf16_weight_bytes:.3f}x the bf16 weight bytes"
        lines.append(f"**Chosen: {chosen.name}** ({chosen.note}): it meets every target: {quality},"
                     f" latency {latency}x fp32 ({_fmt(m.latency_ms, '.3f')} ms), file {size}x fp32"
                     f"{memory}.")  # fmt: skip
    else:
        lines.append(f"**The budget cannot be met by any candidate tried.** Best found: **{chosen.name}**, which"
                     f" misses it by: {'; '.join(chosen.shortfalls)}.")  # fmt: skip
    lines += ["", "## Steps", "", f"Wall time of the steps, summed: {sum(r.wall_s for r in records):.1f} s.", ""]
    for record in records:
        if record.status == "done":
            parts = [f"{c.name}: {'meets the budget' if c.met else 'short: ' + '; '.join(c.shortfalls)}"
                     for c in record.candidates]  # fmt: skip
            lines.append(f"- **{record.step}** ({record.wall_s:.1f} s): " + " / ".join(parts))
        else:
            lines.append(f"- **{record.step}**: {record.status}: {record.reason}")
    untrusted = [c.name for r in records for c in r.candidates if c.measurement.untrusted]
    if untrusted or baseline.untrusted:
        lines += ["", f"Timings marked (!) were taken on a busy machine or spread widely ({', '.join(untrusted)}):"
                  " a latency target is never met by them; re-run on a quiet machine."]  # fmt: skip
    if exported:
        lines += ["", "## Exported", "", *[f"- {e}" for e in exported]]
    return "\n".join(lines) + "\n"


def write_outputs(
    run_dir: Path,
    budget: Budget,
    baseline: Measurement,
    records: Sequence[StepRecord],
    chosen: Optional[CandidateRecord],
    met: bool,
    exported: Sequence[str] = (),
    machine: Sequence[str] = (),
    plot: bool = True,
) -> dict[str, Path]:
    """Write the table, the plot and the report into ``run_dir`` (atomically); returns their paths by kind."""
    rows, cols = table_rows(baseline, records, budget), columns(budget)
    paths = {
        "csv": atomic_write_text(run_dir / "candidates.csv", _csv(rows, cols)),
        "markdown": atomic_write_text(run_dir / "candidates.md", _markdown(rows, cols)),
        "report": atomic_write_text(
            run_dir / "report.md", report_text(budget, baseline, records, chosen, met, exported, machine)
        ),  # fmt: skip
    }
    if plot:
        _plot(run_dir / "pareto.png", baseline, [c for r in records for c in r.candidates], budget)
        paths["plot"] = run_dir / "pareto.png"
    return paths
