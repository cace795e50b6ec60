"""The README's accuracy tables from ``accuracy.json`` (and ``accuracy_minilm.json`` when MiniLM ran separately).

.venv/bin/python experiments/ptq/tables.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
COLUMNS = [
    ("fp32_acc", "fp32"),
    ("ptq_histogram_acc", "PTQ INT8 (histogram)"),
    ("ptq_minmax_acc", "PTQ minmax"),
    ("ptq_moving_average_acc", "PTQ moving average"),
    ("ptq_percentile_acc", "PTQ percentile"),
    ("ptq_smoothquant_acc", "PTQ + SmoothQuant 0.5"),
    ("guided_acc", "sensitivity-guided PTQ"),
    ("qat_int8_acc", "QAT INT8"),
    ("onnx_int8_acc", "ONNX Runtime quantize_static"),
]


def _load() -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in ("accuracy.json", "accuracy_minilm.json"):
        path = HERE / name
        if path.exists():
            data = json.loads(path.read_text())
            results.update({k: v for k, v in data.items() if k != "machine" and v.get("rows")})
    return results


def classification_table(rows: list[dict[str, Any]]) -> str:
    columns = [(k, title) for k, title in COLUMNS if k in rows[0]]
    lines = ["| seed | " + " | ".join(t for _, t in columns) + " | float layers kept (guided) |",
             "|---|" + "---|" * (len(columns) + 1)]  # fmt: skip
    for row in rows:
        cells = [f"{100 * row[k]:.2f}" for k, _ in columns]
        lines.append(f"| {row['seed']} | " + " | ".join(cells) + f" | {', '.join(row['guided_float_layers']) or '-'} |")
    means = [statistics.mean(r[k] for r in rows) for k, _ in columns]
    lines.append("| **mean** | " + " | ".join(f"**{100 * m:.2f}**" for m in means) + " | |")
    deltas = []
    for k, _ in columns:
        d = [100 * (r[k] - r["fp32_acc"]) for r in rows]
        deltas.append(f"{statistics.mean(d):+.2f} ({min(d):+.2f} to {max(d):+.2f})")
    lines.append("| **- fp32, points** (range) | " + " | ".join(deltas) + " | |")
    return "\n".join(lines)


def efficientnet_table(row: dict[str, Any]) -> str:
    lines = [
        "| variant | top-1 agreement | top-5 overlap | logit cosine mean | logit cosine min |",
        "|---|---|---|---|---|",
    ]
    for key, value in row.items():
        if isinstance(value, dict) and "top1_agreement" in value:
            lines.append(
                f"| {key} | {100 * value['top1_agreement']:.1f} % | {100 * value['top5_overlap']:.1f} % |"
                f" {value['cosine_mean']:.4f} | {value['cosine_min']:.4f} |"
            )
    return "\n".join(lines)


def main() -> None:
    results = _load()
    for part in ("mnist", "minilm"):
        if part in results:
            print(f"### {part} (test accuracy, %)\n\n{classification_table(results[part]['rows'])}\n")
    if "efficientnet" in results:
        row = results["efficientnet"]["rows"][0]
        print(f"### EfficientNet-Lite0, {row['images']} crops of 5 photos\n\n{efficientnet_table(row)}")
        print(f"\nguided float layers: {row.get('ptq_guided_float_layers')}")


if __name__ == "__main__":
    main()
