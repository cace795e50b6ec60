"""``lc-bench``: time a model on every inference path this machine has, print theory against measurement and the
advice derived from it, and write ``bench.csv`` / ``bench.json`` / ``bench.png``.

Example:
    lc-bench --model resnet50 --input-shape 1,3,224,224
    lc-bench --model outputs/train/<time> --input-shape 64,1,28,28 --smaller student.pt --latency-budget-ms 2
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from lightning_compress.bench.advice import advise
from lightning_compress.bench.machine import machine_info
from lightning_compress.bench.model_benchmark import ALL_PATHS, DEFAULT_PATHS, benchmark_model
from lightning_compress.bench.result_files import write_results
from lightning_compress.bench.results import SPARSITIES, format_table
from lightning_compress.cli.model_spec import SPEC_FORMS, load_model

__all__ = ["main"]


def _example_inputs(shape: str, tokens: Optional[int]) -> Tensor:
    dims = [int(d) for d in shape.replace("x", ",").split(",") if d]
    if tokens:
        return torch.randint(0, tokens, dims, generator=torch.Generator().manual_seed(0))
    return torch.randn(*dims, generator=torch.Generator().manual_seed(0))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``lc-bench``: measure a model on every inference path, print theory against measurement and advice.

    Example:
        lc-bench --model resnet50 --input-shape 1,3,224,224
        lc-bench --model resnet18 --checkpoint outputs/train/<time>/checkpoints/last.ckpt --paths "fp32 eager" int8
        lc-bench --model outputs/train/<time> --input-shape 64,1,28,28 --smaller student.pt --latency-budget-ms 2
    """
    parser = argparse.ArgumentParser(prog="lc-bench", description=main.__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help=SPEC_FORMS)
    parser.add_argument("--checkpoint", help="state dict or Lightning checkpoint to load into --model")
    parser.add_argument("--input-shape", default="1,3,224,224", help="e.g. 1,3,224,224 (float) or 1,128 with --tokens")
    parser.add_argument(
        "--tokens", type=int, help="integer inputs in [0, TOKENS) (a vocabulary size) instead of floats"
    )
    parser.add_argument("--smaller", help="a distilled / structurally pruned model (same spec forms as --model)")
    parser.add_argument("--paths", nargs="+", default=list(DEFAULT_PATHS), choices=ALL_PATHS)
    parser.add_argument("--sparsities", nargs="+", type=float, default=list(SPARSITIES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--latency-budget-ms", type=float, help="advise against this latency budget")
    parser.add_argument("--out", help="run folder (default outputs/bench/<time>)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, args.checkpoint)
    smaller = load_model(args.smaller) if args.smaller else None
    inputs = _example_inputs(args.input_shape, args.tokens)
    rows = benchmark_model(
        model, inputs, paths=args.paths, sparsities=args.sparsities, smaller_model=smaller, device=args.device,
        warmup=args.warmup, repeats=args.repeats, log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    advice = advise(rows, device=args.device, latency_budget_ms=args.latency_budget_ms)
    run_dir = Path(args.out or Path("outputs/bench") / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    meta = {**machine_info(args.device), "model": args.model, "checkpoint": args.checkpoint,
            "input_shape": args.input_shape, "tokens": args.tokens, "advice": advice,
            "title": f"{args.model} {args.input_shape} on {args.device}"}  # fmt: skip
    files = write_results(rows, run_dir, meta, plot=not args.no_plot)
    print(format_table(rows))
    print()
    print("Advice (from the measurements above):")
    for line in advice:
        print(f"  - {line}")
    print()
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
