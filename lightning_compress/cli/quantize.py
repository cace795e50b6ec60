"""``lc-quantize``: post-training INT8 quantization of a trained model, calibrated on its data set, with a table of
accuracy and latency (fp32 eager, bf16 autocast, INT8) and the INT8 model saved (``save_quantized``, a ``.pt2``).

The model is any spec of :func:`~lightning_compress.cli.model_spec.load_model`: an ``lc-train`` run folder (its data
set comes from the run's config), a Hugging Face folder (text data: ``--data rotten_tomatoes`` by default, tokenised
with the folder's tokenizer), or an architecture with ``--checkpoint`` (``--data`` names a ``conf/data`` option).
Calibration uses the training split; accuracy is measured on the test split (the validation split when an
``--accuracy-budget`` search needs held-out data of its own).

Example:
    lc-quantize outputs/train/2026-12-01_10-00-00      # -> <run>/ptq_int8/{model_int8.pt2,ptq.md,ptq.json}
    lc-quantize outputs/.../minilm_run --smoothquant-alpha 0.5 --accuracy-budget 0.003
    lc-quantize cnn_module:build --checkpoint last.ckpt --data mnist --output ptq/
    lc-quantize hf_model_dir --data rotten_tomatoes --scheme dynamic
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from lightning_compress.bench.machine import machine_info
from lightning_compress.bench.timing import measure
from lightning_compress.cli.model_spec import SPEC_FORMS, load_model
from lightning_compress.core.batches import call_model, move_data_to_device
from lightning_compress.core.files import atomic_write_text
from lightning_compress.quantization.calibration import eval_batches, evaluate, split_labels
from lightning_compress.quantization.observers import OBSERVERS, SCHEMES
from lightning_compress.quantization.ptq import quantize
from lightning_compress.quantization.serialization import save_quantized

__all__ = ["main"]


def _datamodule(spec: str, data: Optional[str], overrides: Sequence[str]) -> Any:
    """The data module of a run folder's config, else the ``conf/data`` option ``data`` (a Hugging Face folder is its
    tokenizer)."""
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from lightning_compress.cli.train import CONFIG_DIR

    path = Path(spec)
    run_config = path / ".hydra" / "config.yaml"
    if path.is_dir() and run_config.is_file() and data is None:
        cfg = OmegaConf.load(run_config)
        for item in overrides:  # typed as on Hydra's command line: data.batch_size=16 is the int 16
            key, _, value = item.partition("=")
            OmegaConf.update(cfg, key, yaml.safe_load(value) if value else value, merge=True)
        return instantiate(cfg.data)
    is_hf = path.is_dir() and (path / "config.json").is_file()
    name = data or ("rotten_tomatoes" if is_hf else None)
    if name is None:
        raise SystemExit(
            f"lc-quantize: `--data` is needed for {spec!r} (a run folder brings its data set): a conf/data option such"
            f" as {', '.join(sorted(p.stem for p in (CONFIG_DIR / 'data').glob('*.yaml')))}"
        )
    extra = ["model=huggingface", f"model.name_or_path={path.resolve()}"] if is_hf else []
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={name}", *extra, *overrides])
    return instantiate(cfg.data)


def _float_accuracy(model: nn.Module, batches: list, bf16: bool = False) -> float:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return evaluate(model, batches, "accuracy")


def _latency_ms(model: nn.Module, inputs: Any, bf16: bool = False, repeats: int = 10) -> float:
    def call() -> Any:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return call_model(model, inputs)

    return 1e3 * measure(call, warmup=2, repeats=repeats)[0]


def _table(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [
        f"lc-quantize on {info['cpu']} ({', '.join(info['cpu_low_precision']) or 'no VNNI/AMX flags'}),"
        f" {info['threads']} threads, torch {info['torch']}, load {info['load_average_1min']}",
        "",
        "| model | accuracy | latency ms | vs fp32 eager |",
        "|---|---|---|---|",
    ]
    base = rows[0].get("latency_ms")
    for row in rows:
        acc = f"{100 * row['accuracy']:.2f} %" if row.get("accuracy") is not None else "-"
        ms = row.get("latency_ms")
        ratio = f"{ms / base:.2f}x" if ms and base else "-"
        lines.append(f"| {row['model']} | {acc} | {f'{ms:.2f}' if ms else '-'} | {ratio} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """``lc-quantize``: post-training INT8 quantization with an accuracy and latency table; returns the summary."""
    parser = argparse.ArgumentParser(
        prog="lc-quantize", description="Post-training INT8 quantization of a trained model (PT2E, x86 oneDNN)."
    )
    parser.add_argument("model", help=SPEC_FORMS)
    parser.add_argument("--checkpoint", default=None, help="a Lightning checkpoint or state dict loaded into the model")
    parser.add_argument("--data", default=None, help="a conf/data option (default: the run's data set)")
    parser.add_argument("--override", action="append", default=[], help="a data config override, e.g. data.task=mrpc")
    parser.add_argument("--calibration-batches", type=int, default=32)
    parser.add_argument("--observer", choices=OBSERVERS, default="histogram")
    parser.add_argument("--scheme", choices=SCHEMES, default="static")
    parser.add_argument("--percentile", type=float, default=99.99)
    parser.add_argument("--smoothquant-alpha", type=float, default=None)
    parser.add_argument("--accuracy-budget", type=float, default=None, help="largest accuracy drop (0.003 = 0.3 point)")
    parser.add_argument("--skip-first-conv", action="store_true")
    parser.add_argument("--skip-classifier", action="store_true")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency rows")
    parser.add_argument("--output", default=None, help="folder for the results (default: <run>/ptq_int8 or ptq_int8)")
    args = parser.parse_args(argv)

    model = load_model(args.model, args.checkpoint).eval()
    datamodule = _datamodule(args.model, args.data, args.override)
    datamodule.setup("fit")
    datamodule.setup("test")
    test = eval_batches(datamodule.test_dataloader(), "the test loader")
    budget_data = datamodule.val_dataloader() if args.accuracy_budget is not None else None
    int8 = quantize(
        model, datamodule.train_dataloader(), calibration_batches=args.calibration_batches, observer=args.observer,
        scheme=args.scheme, percentile=args.percentile, smoothquant_alpha=args.smoothquant_alpha,
        skip_first_conv=args.skip_first_conv, skip_classifier=args.skip_classifier,
        accuracy_budget=args.accuracy_budget, eval_data=budget_data, measure_latency=False, verbose=1,
    )  # fmt: skip
    report = int8.quantization_report
    labelled = all(split_labels(b)[1] is not None for b in test)
    reference = getattr(int8, "_orig_mod", int8)  # the same numbers as the compiled model, no compile per shape
    rows: list[dict[str, Any]] = [
        {"model": "fp32 eager", "accuracy": _float_accuracy(model, test) if labelled else None},
        {"model": "bf16 autocast", "accuracy": _float_accuracy(model, test, bf16=True) if labelled else None},
        {
            "model": f"INT8 ({args.scheme}, {args.observer})",
            "accuracy": evaluate(reference, test) if labelled else None,
        },
    ]
    if not args.no_latency:
        inputs = move_data_to_device(split_labels(test[0])[0], torch.device("cpu"))
        for row, (net, bf16) in zip(rows, ((model, False), (model, True), (int8, False))):
            row["latency_ms"] = _latency_ms(net, inputs, bf16)
    spec = Path(args.model)
    default = spec / "ptq_int8" if (spec / ".hydra").is_dir() else Path("ptq_int8")
    out = Path(args.output) if args.output else default
    out.mkdir(parents=True, exist_ok=True)
    save_quantized(int8, out / "model_int8.pt2", split_labels(test[0])[0])
    info = machine_info()
    table = _table(rows, info)
    summary = {"rows": rows, "report": report.summary(), "machine": info, "output": str(out / "model_int8.pt2")}
    atomic_write_text(out / "ptq.md", table + "\n\n" + report.summary() + "\n")
    atomic_write_text(out / "ptq.json", json.dumps(summary, indent=1, default=str))
    print(table)
    print(f"INT8 model: {out / 'model_int8.pt2'} (load with lightning_compress.load_quantized)")
    return summary


if __name__ == "__main__":
    main()
