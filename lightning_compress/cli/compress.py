"""``lc-compress``: the design document's decision tree as one command. Give it a trained model and a budget (the
largest accuracy drop, in points, and a latency and / or file-size target on this machine); it walks PTQ INT8 ->
sensitivity-guided PTQ -> QAT -> INT4 weight-only (LLMs, memory) -> 2:4 (sparse tensor cores) -> structured pruning +
distillation -> unstructured sparsity (only where a sparse kernel measured faster), measures each candidate, stops at
the first that meets the budget, and writes the table, the Pareto plot, the report and the chosen model
(:func:`~lightning_compress.planner.walk.compress`). Run again on the same ``--out`` folder, it resumes at the first
unfinished step.

The model is an ``lc-train`` run folder (its data comes from the run's config), or any other spec of
:func:`~lightning_compress.cli.model_spec.load_model` with ``--data`` naming a data config of ``conf/data``.

Exit status: 0 when a candidate meets the budget; 1 when none does (the best one found is chosen and the report says
by how much it misses); 2 on a user error (a bad option, a model or data that cannot be loaded, data without labels):
nothing is run.

Example:
    lc-compress outputs/mnist_cnn/<time> --max-drop 0.5 --latency-ratio 0.3
    lc-compress outputs/mnist_cnn/<time> --max-drop 2 --size-ratio 0.3 --explore --out compress-loose
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from lightning_compress.cli.model_spec import SPEC_FORMS, load_model, run_config

__all__ = ["EXIT_NOT_MET", "EXIT_USER_ERROR", "main"]

EXIT_NOT_MET = 1
EXIT_USER_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    from lightning_compress.planner.steps import STEP_ORDER

    p = argparse.ArgumentParser(prog="lc-compress", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("model", help=SPEC_FORMS)
    p.add_argument("--checkpoint", default=None, help="weights loaded into the model (never unpickled)")
    p.add_argument("--data", default=None, help="a data config of conf/data (mnist, digits, ...); default: the run's")
    p.add_argument("--max-drop", type=float, required=True, help="largest accuracy drop allowed, in points (0.5)")
    p.add_argument("--latency-ratio", type=float, default=None, help="latency at most this x fp32 (0.3)")
    p.add_argument("--latency-ms", type=float, default=None, help="latency at most this many ms per batch")
    p.add_argument("--size-ratio", type=float, default=None, help="file at most this x the fp32 file (0.35)")
    p.add_argument("--size-mb", type=float, default=None, help="file at most this many MiB")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of the latency measurement")
    p.add_argument(
        "--steps", default=",".join(STEP_ORDER), help=f"steps to walk, comma-separated: {','.join(STEP_ORDER)}"
    )
    p.add_argument("--explore", action="store_true", help="go on after the first candidate that meets the budget")
    p.add_argument("--metric", default="accuracy", choices=("accuracy", "agreement"), help="the validation metric")
    p.add_argument("--qat-epochs", type=int, default=2, help="epochs of the QAT fine-tune")
    p.add_argument("--distill-epochs", type=int, default=8, help="most epochs of the distillation fine-tune")
    p.add_argument("--distill-time", type=float, default=180.0, help="most seconds of the distillation fine-tune")
    p.add_argument("--prune-fraction", type=float, default=0.5, help="share of channels / heads / neurons removed")
    p.add_argument("--sparsity", type=float, default=0.9, help="sparsity of the unstructured candidate")
    p.add_argument("--calibration-batches", type=int, default=16, help="PTQ calibration batches")
    p.add_argument("--limit-train-batches", type=int, default=None, help="training batches per fine-tune epoch")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per candidate (interleaved with fp32)")
    p.add_argument("--retries", type=int, default=2, help="re-measurements of a timing taken on a busy machine")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where candidates run and are timed")
    p.add_argument("--no-export", action="store_true", help="no ONNX export of the chosen model (its file is kept)")
    p.add_argument("--out", default=None, help="the planner's run folder; default <run folder>/compress")
    p.add_argument("--restart", action="store_true", help="start again in a folder that holds a walk")
    p.add_argument("--no-progress", action="store_true", help="plain lines instead of the progress bar")
    return p


def _data_module(args: argparse.Namespace) -> Any:
    """The data module: ``--data`` (a conf/data file), else the run folder's ``data`` node."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if args.data is not None:
        from hydra import compose, initialize_config_dir

        from lightning_compress.cli.train import CONFIG_DIR

        names = sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml"))
        if args.data not in names:
            raise ValueError(f"`--data` can be {', '.join(names)} (the configs of {CONFIG_DIR / 'data'}), got"
                             f" {args.data!r}")  # fmt: skip
        with initialize_config_dir(str(CONFIG_DIR / "data"), version_base="1.3"):
            cfg = compose(args.data)
        return instantiate(OmegaConf.to_container(cfg, resolve=True))
    if not (Path(args.model) / ".hydra" / "config.yaml").is_file():
        raise ValueError(f"`--data` is needed: {args.model!r} is no lc-train run folder, whose config would name the"
                         " data (give a data config of conf/data, e.g. --data mnist)")  # fmt: skip
    return instantiate(run_config(args.model).data)


_OPTIONS = {"max_drop": "--max-drop", "latency_ratio": "--latency-ratio", "latency_ms": "--latency-ms",
            "size_ratio": "--size-ratio", "size_mb": "--size-mb", "batch_size": "--batch-size",
            "calibration_batches": "--calibration-batches", "qat_epochs": "--qat-epochs",
            "distill_max_epochs": "--distill-epochs", "distill_time_s": "--distill-time",
            "prune_fraction": "--prune-fraction", "unstructured_sparsity": "--sparsity",
            "limit_train_batches": "--limit-train-batches"}  # fmt: skip


def _option_names(message: str) -> str:
    """A Budget / PlannerSettings message with the options' names in place of the fields'."""
    for field, option in _OPTIONS.items():
        message = message.replace(f"`{field}`", f"`{option}`")
    return message


def _check(args: argparse.Namespace) -> list[str]:
    from lightning_compress.core.validation import ArgumentErrors
    from lightning_compress.planner.budget import Budget
    from lightning_compress.planner.steps import STEP_ORDER, PlannerSettings

    errors = ArgumentErrors()
    for build in (
        lambda: Budget(args.max_drop, args.latency_ratio, args.latency_ms, args.size_ratio, args.size_mb,
                       args.batch_size),
        lambda: PlannerSettings(args.calibration_batches, args.qat_epochs, args.distill_epochs, args.distill_time,
                                args.prune_fraction, args.sparsity, explore=args.explore,
                                limit_train_batches=args.limit_train_batches),
    ):  # fmt: skip
        try:
            build()
        except ValueError as err:
            errors.add(_option_names(str(err)))
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEP_ORDER]
    if unknown or not steps:
        errors.add(f"--steps can name {', '.join(STEP_ORDER)}, got {args.steps!r}")
    errors.int("--repeats", args.repeats)
    errors.int("--retries", args.retries, minimum=0)
    return list(errors)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``lc-compress``; returns the exit status (0 budget met, 1 not met, 2 a user error)."""
    args = _parser().parse_args(argv)
    problems = _check(args)
    if problems:
        print("lc-compress: error: " + "; ".join(problems), file=sys.stderr)
        return EXIT_USER_ERROR
    from lightning_compress.bench.timing import TimingChecks
    from lightning_compress.planner.walk import compress

    run = Path(args.model)
    out = args.out
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        out = run / "compress" if (run / ".hydra").is_dir() else Path("outputs") / "compress" / stamp
    try:
        model = load_model(args.model, args.checkpoint)
        data = _data_module(args)
        budget = dict(max_drop=args.max_drop, latency_ratio=args.latency_ratio, latency_ms=args.latency_ms,
                      size_ratio=args.size_ratio, size_mb=args.size_mb, batch_size=args.batch_size)  # fmt: skip
        settings = dict(calibration_batches=args.calibration_batches, qat_epochs=args.qat_epochs,
                        distill_max_epochs=args.distill_epochs, distill_time_s=args.distill_time,
                        prune_fraction=args.prune_fraction, unstructured_sparsity=args.sparsity, explore=args.explore,
                        limit_train_batches=args.limit_train_batches)  # fmt: skip
        result = compress(
            model, data, budget, out, settings=settings, steps=[s.strip() for s in args.steps.split(",") if s.strip()],
            metric=args.metric, device=args.device, export_formats=() if args.no_export else ("onnx",),
            restart=args.restart, repeats=args.repeats, checks=TimingChecks(retries=args.retries),
            progress=not args.no_progress and sys.stdout.isatty(),
        )  # fmt: skip
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as err:
        print(f"lc-compress: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    print()
    print(Path(result.files["markdown"]).read_text(), end="")
    print()
    if result.chosen is None:
        print("lc-compress: no candidate was made (every step skipped or failed); see", result.files["report"])
        return EXIT_NOT_MET
    verdict = "meets the budget" if result.met else "misses the budget by: " + "; ".join(result.chosen.shortfalls)
    print(f"lc-compress: chosen {result.chosen.name} ({verdict}); written to {Path(out) / 'chosen'}")
    print(f"lc-compress: report {result.files['report']}, table {result.files['csv']}, plot {result.files.get('plot')}")
    return 0 if result.met else EXIT_NOT_MET


if __name__ == "__main__":
    sys.exit(main())
