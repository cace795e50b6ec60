"""Speed and cost of post-training INT8 on this CPU: one command, every path timed side by side in interleaved rounds,
ratios printed, the CPU model and its AMX / VNNI flags recorded with every row.

Paths per model: fp32 eager, fp32 ``torch.compile``, bf16 autocast, PTQ INT8 static (``quantize``: PT2E + inductor
freezing), PTQ INT8 dynamic (models with Linear layers), the sensitivity-guided mixed model (the layers
``accuracy.py`` kept in float for the budget, read from ``accuracy.json``; where the budget kept none, the classifier
is kept in float so that the cost of one float layer is still measured, and the row says so), and ONNX Runtime
(fp32, and INT8 from ``quantize_static`` on the same calibration batches).

Models: the MNIST SmallCNN at batch 64 and 256 (target: INT8 <= 0.25x fp32 eager), ResNet-18 at 8 x 224 x 224,
EfficientNet-Lite0 at 8 x 224 x 224, MiniLM at 1 x 128 and 8 x 128 tokens (where dynamic INT8 may win). Weights are
random (ResNet-18, SmallCNN) or the offline pretrained ones (EfficientNet-Lite0, MiniLM): speed does not depend on
them. Targets reported per model: ``int8 / fp32 eager`` and, for the mixed model, ``fp32 / mixed - 1 >= 0.8 *
(fp32 / int8 - 1)`` (the float layers keep at least 80 % of the INT8 speed-up).

Cost: calibration wall time of ``quantize`` (export, calibration, conversion; compile excluded) against one epoch of
QAT on the same model and data (MNIST-5k SmallCNN, 3,500 digits; MiniLM, 2,000 Rotten Tomatoes sentences).

Run on a quiet machine (check ``uptime``), from the repository root:
    .venv/bin/python experiments/ptq/benchmark.py                 # everything, ~20 min on 2 cores
    .venv/bin/python experiments/ptq/benchmark.py --quick         # tiny shapes, one round: proves the script works
    .venv/bin/python experiments/ptq/benchmark.py --models smallcnn,minilm --rounds 3 --repeats 5   # reduced, ~10 min
Results are printed and written to experiments/ptq/speed.json (--quick: speed_quick.json).
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
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from efficientnet import calibration_batch, efficientnet_lite0  # noqa: E402
from onnx_peer import export_onnx, onnx_int8, run, session  # noqa: E402

from lightning_compress.bench import machine_info, measure  # noqa: E402
from lightning_compress.core.batches import call_model  # noqa: E402
from lightning_compress.core.files import atomic_write_text  # noqa: E402
from lightning_compress.models import SmallCNN, huggingface_classifier, offline_minilm_path  # noqa: E402
from lightning_compress.quantization import QuantizationAwareTraining, quantize  # noqa: E402
from lightning_compress.training.classification import ClassificationModule  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
QUIET = dict(
    accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    num_sanity_val_steps=0,
)  # fmt: skip


def minilm_inputs(batch: int, length: int) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(offline_minilm_path())
    text = ["a thoughtful, funny and moving film about growing up"] * batch
    tokens = tokenizer(text, padding="max_length", max_length=length, return_tensors="pt")
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


MODELS = ("smallcnn", "resnet18", "efficientnet", "minilm")


def cases(quick: bool, models: tuple[str, ...] = MODELS) -> list[tuple[str, str, nn.Module, Any, list]]:
    """``(name, task key in accuracy.json, fp32 model, timed inputs, calibration batches)`` of ``models``."""
    from lightning_compress.models import torchvision_model

    torch.manual_seed(0)
    out = []
    for batch in () if "smallcnn" not in models else (8,) if quick else (64, 256):
        x = torch.randn(batch, 1, 28, 28)
        out.append(
            (f"smallcnn_b{batch}", "mnist", SmallCNN().eval(), x, [torch.randn(64, 1, 28, 28) for _ in range(8)])
        )
    side, batch = (64, 1) if quick else (224, 8)
    if "resnet18" in models:
        resnet = torchvision_model("resnet18", num_classes=1000).eval()
        out.append((f"resnet18_{side}_b{batch}", "", resnet, torch.randn(batch, 3, side, side),
                    [torch.randn(8, 3, side, side) for _ in range(4)]))  # fmt: skip
    if "efficientnet" in models:
        photos = calibration_batch(per_photo=1 if quick else 4)
        out.append((f"efficientnet_lite0_224_b{batch}", "efficientnet", efficientnet_lite0(), photos[:batch],
                    list(photos.split(12))))  # fmt: skip
    if "minilm" in models:
        minilm = huggingface_classifier(offline_minilm_path(), num_labels=2).eval()
        length = 32 if quick else 128
        for b in (1,) if quick else (1, 8):
            calib = [minilm_inputs(16, length) for _ in range(2)]
            out.append((f"minilm_seq{length}_b{b}", "minilm", minilm, minilm_inputs(b, length), calib))
    return out


def float_layers(task: str, model: nn.Module) -> tuple[list[str], str]:
    """The layers accuracy.py's budget kept in float (seed 0), else the classifier (the row's note says which)."""
    results = HERE / "accuracy.json"
    kept: list[str] = []
    if task and results.exists():
        rows = json.loads(results.read_text()).get(task, {}).get("rows", [])
        if rows:
            kept = rows[0].get("guided_float_layers") or rows[0].get("ptq_guided_float_layers") or []
    if kept:
        return kept, f"float layers of the budget search (accuracy.json, {task}, seed 0)"
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1:]
    return last, "no budget result: the classifier kept in float as a stand-in"


def timed_paths(name: str, task: str, model: nn.Module, inputs: Any, calib: list) -> tuple[dict[str, Callable], dict]:
    """The callables to time and notes (what the mixed model keeps in float, calibration seconds)."""
    notes: dict[str, Any] = {}
    static = quantize(model, calib, calibration_batches=None)
    notes["calibration_s"] = round(static.quantization_report.calibration_seconds, 2)
    compiled = torch.compile(copy.deepcopy(model))
    paths: dict[str, Callable] = {
        "fp32_eager": lambda: call_model(model, inputs),
        "fp32_compiled": lambda: call_model(compiled, inputs),
        "bf16_autocast": lambda: _bf16(model, inputs),
        "int8_static": lambda: call_model(static, inputs),
    }
    if any(isinstance(m, nn.Linear) for m in model.modules()) and not name.startswith("smallcnn"):
        dynamic = quantize(model, calib, calibration_batches=None, scheme="dynamic")
        paths["int8_dynamic"] = lambda: call_model(dynamic, inputs)
    layers, why = float_layers(task, model)
    mixed = quantize(model, calib, calibration_batches=None, filter_fn=lambda m, fqn: fqn not in layers)
    paths["int8_mixed"] = lambda: call_model(mixed, inputs)
    notes["mixed_float_layers"], notes["mixed_note"] = layers, why
    folder = tempfile.mkdtemp()
    fp32_sess = session(export_onnx(model, inputs, Path(folder) / "fp32_timed.onnx"))
    int8_sess = onnx_int8(model, calib, folder)
    paths["onnx_fp32"] = lambda: run(fp32_sess, inputs)
    paths["onnx_int8"] = lambda: run(int8_sess, inputs)
    return paths, notes


def _bf16(model: nn.Module, inputs: Any) -> Any:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return call_model(model, inputs)


def interleaved(paths: dict[str, Callable], rounds: int, repeats: int) -> dict[str, float]:
    """Median ms per call of each path over ``rounds`` rounds of (path after path, ``repeats`` calls each)."""
    with torch.no_grad():
        for fn in paths.values():  # warm-up: compilation and first-call set-up
            fn()
            fn()
        times: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(rounds):
            for key, fn in paths.items():
                seconds, _, _ = measure(fn, warmup=1, repeats=repeats, min_warmup_s=0.0)
                times[key].append(1e3 * seconds)
    return {k: round(statistics.median(v), 3) for k, v in times.items()}


def speed_row(case: tuple, rounds: int, repeats: int, info: dict[str, Any]) -> dict[str, Any]:
    name, task, model, inputs, calib = case
    paths, notes = timed_paths(name, task, model, inputs, calib)
    ms = interleaved(paths, rounds, repeats)
    fp32 = ms["fp32_eager"]
    row: dict[str, Any] = {"model": name, "cpu": info["cpu"], "cpu_flags": info["cpu_low_precision"], **notes}
    row["ms"] = ms
    row["vs_fp32_eager"] = {k: round(v / fp32, 3) for k, v in ms.items()}
    row["int8/bf16"] = round(ms["int8_static"] / ms["bf16_autocast"], 3)
    row["int8/fp32_compiled"] = round(ms["int8_static"] / ms["fp32_compiled"], 3)
    gain_int8, gain_mixed = fp32 / ms["int8_static"] - 1, fp32 / ms["int8_mixed"] - 1
    row["mixed_keeps_speedup"] = round(gain_mixed / gain_int8, 3) if gain_int8 > 0 else None
    row["mixed_target_met"] = bool(gain_int8 > 0 and gain_mixed >= 0.8 * gain_int8)
    if name.startswith("smallcnn"):
        row["int8_target_0.25x_met"] = ms["int8_static"] <= 0.25 * fp32
    print(json.dumps(row), flush=True)
    return row


# ------------------------------------------------------------------------------------------------------------ cost
def cost_rows(quick: bool, models: tuple[str, ...] = MODELS) -> list[dict[str, Any]]:
    """Calibration wall time against one QAT epoch, MNIST-5k SmallCNN and MiniLM on Rotten Tomatoes."""
    from lightning_compress.data import GLUEDataModule, MNIST5kDataModule

    rows = []
    tasks = [
        ("mnist5k_smallcnn", lambda: MNIST5kDataModule(batch_size=64, seed=0), lambda: SmallCNN(), 10, 32),
        ("rotten_tomatoes_minilm", lambda: GLUEDataModule(task="rotten_tomatoes", tokenizer=offline_minilm_path(),
         batch_size=32, seed=0, max_train_samples=64 if quick else 2000),
         lambda: huggingface_classifier(offline_minilm_path(), num_labels=2), 2, 16),
    ]  # fmt: skip
    tasks = [t for t in tasks if t[0].split("_")[-1] in models]
    for name, make_data, make_model, classes, batches in tasks:
        data = make_data()
        data.setup("fit")
        model = make_model().eval()
        start = time.perf_counter()
        int8 = quantize(model, data.train_dataloader(), calibration_batches=2 if quick else batches, compile=False)
        ptq_s = time.perf_counter() - start
        module = ClassificationModule(copy.deepcopy(model).train(), num_classes=classes,
                                      optimizer=functools.partial(torch.optim.AdamW, lr=1e-4))  # fmt: skip
        qat = QuantizationAwareTraining(evaluate_quantized=False, compile_int8=False, verbose=0)
        trainer = L.Trainer(max_epochs=1, callbacks=[qat], limit_train_batches=2 if quick else None,
                            limit_val_batches=0, **QUIET)  # fmt: skip
        start = time.perf_counter()
        trainer.fit(module, datamodule=data)
        qat_s = time.perf_counter() - start
        row = {"task": name, "ptq_calibration_s": round(ptq_s, 2),
               "ptq_report_calibration_s": round(int8.quantization_report.calibration_seconds, 2),
               "qat_one_epoch_s": round(qat_s, 2), "qat_epoch/ptq": round(qat_s / ptq_s, 1)}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one round: proves the script works")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--no-cost", action="store_true", help="skip the calibration-vs-QAT-epoch cost rows")
    parser.add_argument("--out", default=None, help="default: experiments/ptq/speed.json (--quick: speed_quick.json)")
    args = parser.parse_args()
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    unknown = sorted(set(models) - set(MODELS))
    if unknown or not models:
        parser.error(f"--models={args.models!r}: unknown {unknown or 'empty'}; choose from {', '.join(MODELS)}")
    rounds, repeats = (1, 2) if args.quick else (args.rounds, args.repeats)
    info = machine_info()
    print(json.dumps({"machine": info}), flush=True)
    results: dict[str, Any] = {"machine": info, "rounds": rounds, "repeats": repeats, "quick": args.quick,
                               "models": list(models)}  # fmt: skip
    results["speed"] = [speed_row(case, rounds, repeats, info) for case in cases(args.quick, models)]
    results["cost"] = [] if args.no_cost else cost_rows(args.quick, models)
    results["machine_after"] = machine_info()
    out = Path(args.out) if args.out else HERE / ("speed_quick.json" if args.quick else "speed.json")
    atomic_write_text(out, json.dumps(results, indent=1) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
