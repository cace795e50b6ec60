"""``lc-bench``: time a model on every inference path this machine has, print theory against measurement and the
advice derived from it, and write ``bench.csv`` / ``bench.json`` / ``bench.png``.

Every timing is checked for a busy machine (the CPU time other processes take before and while it runs) and for
repeats that spread too widely; a disturbed timing is measured again, and if it stays so the table marks it, prints
the figures, and the advice is refused. Each path is timed round-robin with the fp32 eager baseline. The machine (CPU
model and flags, CPUs, threads, versions, load) is printed above the table and saved with the results.

Exit status: 0 when every path was measured or is unavailable on this machine (those are rows with the reason); 2 on a
user error (a bad option value, a model that cannot be loaded, or that does not run on the given inputs: nothing is
measured); 3 when the results were written but are not trustworthy (a busy machine or noisy repeats).

Example:
    lc-bench --model resnet50 --input-shape 1,3,224,224
    lc-bench --model outputs/train/<time> --input-shape 64,1,28,28 --smaller student.pt --latency-budget-ms 2
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from lightning_compress.bench.advice import advise
from lightning_compress.bench.machine import describe_machine, machine_info
from lightning_compress.bench.model_benchmark import ALL_PATHS, DEFAULT_PATHS, benchmark_model
from lightning_compress.bench.result_files import write_results
from lightning_compress.bench.results import SPARSITIES, format_table, untrusted_rows
from lightning_compress.bench.timing import TimingChecks
from lightning_compress.cli.model_spec import SPEC_FORMS, load_model

__all__ = ["EXIT_UNTRUSTED", "EXIT_USER_ERROR", "main"]

EXIT_USER_ERROR = 2  # argparse's status for a bad option too
EXIT_UNTRUSTED = 3
# load_model gained `allow_pickle` (the opt-in to unpickle a whole-module file); offer --allow-pickle where it has it
_HAS_ALLOW_PICKLE = "allow_pickle" in inspect.signature(load_model).parameters


def _shape(text: str) -> list[int]:
    try:
        dims = [int(d) for d in text.replace("x", ",").split(",")]
    except ValueError:
        dims = []
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(
            f"must be positive integers separated by commas (e.g. 1,3,224,224), got {text!r}"
        )
    return dims


def _at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {text!r}")
        return value

    return parse


def _sparsity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), got {text!r}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _example_inputs(dims: list[int], tokens: Optional[int]) -> Tensor:
    if tokens:
        return torch.randint(0, tokens, dims, generator=torch.Generator().manual_seed(0))
    return torch.randn(*dims, generator=torch.Generator().manual_seed(0))


def _error(message: str) -> int:
    print(f"lc-bench: error: {message}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def _load(spec: str, checkpoint: Optional[str], allow_pickle: bool, option: str) -> nn.Module:
    kwargs: dict[str, Any] = {"allow_pickle": allow_pickle} if _HAS_ALLOW_PICKLE else {}
    if "what" in inspect.signature(load_model).parameters:
        kwargs["what"] = option
    return load_model(spec, checkpoint, **kwargs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``lc-bench``: measure a model on every inference path, print theory against measurement and advice.

    Example:
        lc-bench --model resnet50 --input-shape 1,3,224,224
        lc-bench --model resnet18 --checkpoint outputs/train/<time>/checkpoints/last.ckpt --paths "fp32 eager" int8
        lc-bench --model outputs/train/<time> --input-shape 64,1,28,28 --smaller student.pt --latency-budget-ms 2
    """
    parser = argparse.ArgumentParser(
        prog="lc-bench",
        description=main.__doc__.splitlines()[0],
        epilog="exit status: 0 measured (unavailable paths are rows); 2 user error, nothing measured; 3 written, but"
        " not trustworthy (a busy machine or noisy repeats: the table says which and why, no advice is given)",
    )
    parser.add_argument("--model", required=True, help=SPEC_FORMS)
    parser.add_argument("--checkpoint", help="state dict or Lightning checkpoint to load into --model")
    parser.add_argument("--input-shape", type=_shape, default="1,3,224,224",
                        help="e.g. 1,3,224,224 (float) or 1,128 with --tokens")  # fmt: skip
    parser.add_argument("--tokens", type=_at_least(1),
                        help="integer inputs in [0, TOKENS) (a vocabulary size) instead of floats")  # fmt: skip
    parser.add_argument("--smaller", help="a distilled / structurally pruned model (same spec forms as --model)")
    parser.add_argument("--paths", nargs="+", default=list(DEFAULT_PATHS), choices=ALL_PATHS)
    parser.add_argument("--sparsities", nargs="+", type=_sparsity, default=list(SPARSITIES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=_at_least(1), help="torch.set_num_threads (CPU)")
    parser.add_argument("--warmup", type=_at_least(0), default=3)
    parser.add_argument("--repeats", type=_at_least(1), default=10)
    parser.add_argument("--retries", type=_at_least(0), default=TimingChecks.retries,
                        help="re-measurements of a timing taken on a busy machine or with noisy repeats")  # fmt: skip
    parser.add_argument("--max-spread", type=_positive, default=TimingChecks.max_spread,
                        help="most interquartile range / median of a path's repeats")  # fmt: skip
    parser.add_argument("--latency-budget-ms", type=_positive, help="advise against this latency budget")
    parser.add_argument("--out", help="run folder (default outputs/bench/<time>)")
    parser.add_argument("--no-plot", action="store_true")
    if _HAS_ALLOW_PICKLE:
        parser.add_argument("--allow-pickle", action="store_true",
                            help="also load a whole pickled module or a .pt2 with pickled entries: unpickling runs the"
                            " code the file names, so only for files you trust")  # fmt: skip
    args = parser.parse_args(argv)
    allow_pickle = bool(getattr(args, "allow_pickle", False))
    if args.device == "cuda" and not torch.cuda.is_available():
        return _error("--device cuda: no CUDA device is available here")

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = _load(args.model, args.checkpoint, allow_pickle, "`--model`")
        smaller = _load(args.smaller, None, allow_pickle, "`--smaller`") if args.smaller else None
    except (ValueError, OSError, ImportError, RuntimeError, KeyError, TypeError, AttributeError) as err:
        return _error(f"{type(err).__name__}: {err}")
    inputs = _example_inputs(args.input_shape, args.tokens)
    shape = ",".join(map(str, args.input_shape))
    checks = TimingChecks(max_spread=args.max_spread, retries=args.retries)
    machine = machine_info(args.device)  # the load before the run, among the rest
    rows = benchmark_model(
        model, inputs, paths=args.paths, sparsities=args.sparsities, smaller_model=smaller, device=args.device,
        warmup=args.warmup, repeats=args.repeats, log=lambda line: print(line, file=sys.stderr, flush=True),
        checks=checks,
    )  # fmt: skip
    if not rows[0].available:  # the plain model itself did not run on these inputs: nothing to compare
        inputs_text = (
            f"integer inputs of shape {shape} below {args.tokens}" if args.tokens else f"inputs of shape {shape}"
        )
        return _error(
            f"--model {args.model!r} does not run on {inputs_text} (--input-shape / --tokens): {rows[0].reason}"
        )
    advice = advise(rows, device=args.device, latency_budget_ms=args.latency_budget_ms)
    run_dir = Path(args.out or Path("outputs/bench") / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    meta = {**machine, "model": args.model, "checkpoint": args.checkpoint, "input_shape": shape,
            "tokens": args.tokens, "advice": advice, "untrusted": len(untrusted_rows(rows)),
            "title": f"{args.model} {shape} on {args.device}"}  # fmt: skip
    files = write_results(rows, run_dir, meta, plot=not args.no_plot)
    print(format_table(rows, describe_machine(machine)))
    print()
    print("Advice (from the measurements above):")
    for line in advice:
        print(f"  - {line}")
    print()
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return EXIT_UNTRUSTED if untrusted_rows(rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
