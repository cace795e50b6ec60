"""The design document's "unstructured sparsity: theory vs reality" table, measured on this machine.

Three workloads, each pruned layer by layer by magnitude to 50/80/90/95/99 % and run through every sparse path torch
offers here (the dense kernel on the zeros, CSR, COO; on CUDA also 2:4 semi-structured and INT8 GEMMs):

- a 4096 x 4096 x 4096 GEMM (``W @ X``, ``W`` pruned); fp32 on CPU, fp16 on CUDA (the dtype of the document's table);
- ResNet-50 (torchvision, random weights, batch 1 x 3 x 224 x 224): every Conv2d / Linear through ``torch.sparse``;
- BERT-base (transformers ``BertModel(BertConfig())``, random weights, batch 1 x 128 tokens): every Linear.

Everything is built offline; nothing downloads. Results go to ``results/<device>.json`` and a markdown table
``results/<device>.md`` beside this script.

Usage (repository root):
    .venv/bin/python experiments/theory_vs_reality/run.py                     # CPU, the full table (~10 min, 2 cores)
    .venv/bin/python experiments/theory_vs_reality/run.py --device cuda       # the same on a GPU (< 5 min on an H200)
    .venv/bin/python experiments/theory_vs_reality/run.py --quick             # small shapes, a smoke test (< 1 min)

``--device cuda`` on a machine without CUDA prints why and exits with status 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lightning_compress.bench import (  # noqa: E402
    BenchResult,
    benchmark_gemm,
    benchmark_model,
    format_table,
    machine_info,
)
from lightning_compress.bench.results import SPARSITIES  # noqa: E402

HERE = Path(__file__).resolve().parent


def resnet50() -> torch.nn.Module:
    import torchvision

    return torchvision.models.resnet50(weights=None)


def bert_base() -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig())  # 12 layers, hidden 768, 110 M parameters, random weights


def summary(name: str, rows: Sequence[BenchResult]) -> list[str]:
    """Markdown rows: one per sparsity, the theoretical and the measured speed-up of every path."""
    formats = [f for f in ("dense", "csr", "coo", "bsr") if any(_is(r, f) for r in rows)]
    lines = [f"| {name} | sparsity | theory | " + " | ".join(_label(f) for f in formats) + " |",
             "|---|---|---|" + "---|" * len(formats)]  # fmt: skip
    for sparsity in sorted({r.sparsity for r in rows if r.family == "unstructured" and r.sparsity is not None}):
        cells = []
        for fmt in formats:
            match = [r for r in rows if _is(r, fmt) and r.sparsity == sparsity]
            cells.append(f"{match[0].speedup:.2f}x" if match and match[0].available else "n/a")
        lines.append(f"| | {sparsity:.0%} | {1 / (1 - sparsity):.1f}x | " + " | ".join(cells) + " |")
    others = [r for r in rows if r.family not in ("unstructured", "dense")]
    for r in others:
        value = (
            f"{r.speedup:.2f}x (theory {r.theoretical_speedup:.1f}x)"
            if r.available
            else f"unavailable: {r.reason[:90]}"
        )
        lines.append(f"| | {r.path} | | {value} |" + " |" * max(0, len(formats) - 1))
    base = rows[0]
    lines.append(f"| | dense baseline: {base.latency_ms:.2f} ms | | |" + " |" * max(0, len(formats) - 1))
    return lines


def _is(row: BenchResult, fmt: str) -> bool:
    """Whether ``row`` is an unstructured-sparsity row of ``fmt`` ("dense": the dense kernel on the zeros)."""
    if row.family != "unstructured":
        return False
    return row.path.startswith("dense kernel") if fmt == "dense" else row.fmt == fmt


def _label(fmt: str) -> str:
    return {"dense": "dense kernel on zeros", "csr": "CSR", "coo": "COO", "bsr": "BSR"}[fmt]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU")
    parser.add_argument("--gemm", default="4096,4096,4096", help="m,k,n of W (m x k) @ X (k x n)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=("gemm", "resnet50", "bert"), default=("gemm", "resnet50", "bert"))
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one repeat: a smoke test of the script")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure for --device cuda (run it on a GPU machine)")
        return 0
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    m, k, n = (int(v) for v in args.gemm.split(","))
    if args.quick:
        m = k = n = 256
    sparsities = SPARSITIES
    log = lambda line: print("  " + line, flush=True)  # noqa: E731
    started = time.perf_counter()
    results: dict[str, list[BenchResult]] = {}
    model_paths = ["fp32 eager", "dense zeros", "csr", "coo"]
    if device.type == "cuda":
        model_paths += ["bf16 autocast", "2:4"]

    if "gemm" in args.only:
        print(f"GEMM {m}x{k}x{n}", flush=True)
        results[f"GEMM {m}x{k}x{n}"] = benchmark_gemm(m, k, n, sparsities=sparsities, device=device,
                                                       repeats=1 if args.quick else args.repeats, log=log)  # fmt: skip
    if "resnet50" in args.only:
        print("ResNet-50, batch 1x3x224x224", flush=True)
        model, x = resnet50(), torch.randn(1, 3, 112 if args.quick else 224, 112 if args.quick else 224)
        results["ResNet-50"] = benchmark_model(
            model,
            x,
            paths=model_paths,
            sparsities=sparsities,
            device=device,
            warmup=1,
            repeats=1 if args.quick else args.repeats,
            log=log,
        )
        del model
    if "bert" in args.only:
        print("BERT-base, batch 1x128 tokens", flush=True)
        model = bert_base()
        ids = torch.randint(0, model.config.vocab_size, (1, 16 if args.quick else 128))
        results["BERT-base"] = benchmark_model(model, {"input_ids": ids}, paths=model_paths, sparsities=sparsities,
                                               device=device, warmup=1, repeats=1 if args.quick else args.repeats,
                                               log=log)  # fmt: skip
        del model

    info = {**machine_info(device), "wall_s": round(time.perf_counter() - started, 1), "quick": args.quick,
            "command": " ".join(["python", *sys.argv])}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{device.type}{'_quick' if args.quick else ''}"
    (args.out / f"{stem}.json").write_text(
        json.dumps({"meta": info, "results": {k: [asdict(r) for r in v] for k, v in results.items()}}, indent=2)
    )
    md = [f"Measured {info['time']} on {info.get('gpu', info['cpu'])} ({device.type}, {info['threads']} threads,"
          f" 1-min load average {info['load_average_1min']}), torch {info['torch']}, {info['wall_s']} s in all.",
          "Speed-up over the dense baseline of the same workload (median of the timed calls).", ""]  # fmt: skip
    for name, rows in results.items():
        md += summary(name, rows) + [""]
    (args.out / f"{stem}.md").write_text("\n".join(md))
    for name, rows in results.items():
        print(f"\n== {name}\n{format_table(rows)}")
    print("\n" + "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
