"""Sizes and accuracy / agreement of every deployable artifact in the runtime that loads it (no timings: see
latency.py, which the lead runs on a quiet machine).

Our Q/DQ export is given the INT8 model's calibration batches (``calibration_data=``), so the convolutions its graph
reads in float (EfficientNet's projections before a residual add) get calibrated quantized outputs (QLinearConv +
QLinearAdd in ONNX Runtime; before that fix they were ConvInteger).

- ``mnist``: SmallCNN trained on MNIST-5k, post-training INT8 (our PT2E ``quantize``) on the same calibration batches
  as ONNX Runtime's ``quantize_static`` peer (the fp32 ONNX export quantized by ORT, experiments/ptq/onnx_peer.py).
  Test accuracy of: PyTorch fp32, our INT8 (PyTorch reference graph), ORT fp32 / fp16 / our Q/DQ / the peer; top-1
  agreement of each runtime with its PyTorch model; file sizes; integer kernels ORT runs.
- ``minilm``: all-MiniLM-L6-v2 fine-tuned on 2,000 Rotten Tomatoes sentences (2 epochs, as experiments/ptq),
  PTQ INT8: ORT on our Q/DQ graph, the peer,
  and the W8A8 compressed-tensors folder loaded back by transformers.
- ``smollm2``: SmolLM2-135M, GPTQ W4A16 (group 64): the compressed-tensors folder's size, perplexity on Hamlet of our
  model, of the folder loaded by plain transformers (dense float Linears) and by ``load_packed`` (packed INT4).

Run (from the repository root; results appended to experiments/export/results.jsonl)::

    .venv/bin/python experiments/export/measure.py --task mnist minilm smollm2
    .venv/bin/python experiments/export/measure.py --quick   # a smoke run: 1 epoch, few batches
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ptq"))
sys.path.insert(0, str(HERE.parent / "one_shot_quantization"))
from onnx_peer import onnx_int8, run  # noqa: E402

from lightning_compress.bench import machine_info  # noqa: E402
from lightning_compress.export import export, load_onnx, load_packed, ort_kernels  # noqa: E402
from lightning_compress.export.export import path_size  # noqa: E402
from lightning_compress.quantization.calibration import eval_batches  # noqa: E402
from lightning_compress.quantization.ptq import quantize  # noqa: E402

QUIET = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
             enable_checkpointing=False)  # fmt: skip


@torch.no_grad()
def _logits(fn: Any, batches: list) -> tuple[torch.Tensor, torch.Tensor]:
    outs, labels = [], []
    for inputs, y in batches:
        out = fn(inputs)
        outs.append((out.logits if hasattr(out, "logits") else out).float())
        labels.append(y)
    return torch.cat(outs), torch.cat(labels)


def _split(batch: Any) -> tuple[Any, torch.Tensor]:
    if isinstance(batch, dict):
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        return inputs, batch["labels"]
    return batch[0], batch[1]


def _runtime_rows(name: str, runtimes: dict[str, tuple[Any, str]], test: list) -> dict[str, Any]:
    """Accuracy of each runtime and its top-1 agreement with the PyTorch model it came from."""
    logits = {k: _logits(fn, test) for k, (fn, _) in runtimes.items()}
    labels = next(iter(logits.values()))[1]
    rows = {}
    for key, (_, reference) in runtimes.items():
        out = logits[key][0]
        rows[f"{key}_acc"] = float((out.argmax(1) == labels).float().mean())
        if reference != key:
            ref = logits[reference][0]
            rows[f"{key}_agree_{reference}"] = float((out.argmax(1) == ref.argmax(1)).float().mean())
            rows[f"{key}_maxdiff_rel_{reference}"] = float((out - ref).abs().max() / ref.abs().max())
    return {"task": name, **rows}


def _onnx_artifacts(fp32: nn.Module, int8: nn.Module, calib: list, example: Any, folder: Path) -> tuple[dict, dict]:
    sizes, kernels, sessions = {}, {}, {}
    for key, model, fmt in (
        ("ort_fp32", fp32, "onnx"),
        ("ort_fp16", fp32, "onnx-fp16"),
        ("ort_ours_qdq", int8, "onnx"),
    ):
        ours = key == "ort_ours_qdq"  # calibrated on the INT8 model's batches: float-read convs run QLinearConv
        result = export(
            model, folder / f"{key}.onnx", fmt, example_inputs=example, calibration_data=calib if ours else None
        )
        sizes[key] = result.bytes
        sessions[key] = load_onnx(result.path)
        if ours:
            k = ort_kernels(result.path)
            kernels[key] = {"integer": k.integer_count, "float": k.float_count, "summary": k.summary(),
                            "conv_integer": len(result.details.conv_integer),
                            "calibrated_conv_outputs": len(result.details.quantized_conv_outputs)}  # fmt: skip
    (folder / "peer").mkdir()
    peer = onnx_int8(fp32, calib, folder / "peer")
    sizes["ort_peer_quantize_static"] = path_size(folder / "peer" / "int8.onnx")
    k = ort_kernels(folder / "peer" / "int8.onnx")
    kernels["ort_peer_quantize_static"] = {"integer": k.integer_count, "float": k.float_count, "summary": k.summary()}
    sessions["ort_peer_quantize_static"] = functools.partial(run, peer)
    half = sessions["ort_fp16"]  # an fp16 graph takes fp16 float inputs
    sessions["ort_fp16"] = lambda x: half(x.half() if isinstance(x, torch.Tensor) else x)
    return sessions, {"sizes": sizes, "kernels": kernels}


def _image_rows(name: str, fp32: nn.Module, int8: nn.Module, calib: list, test: list) -> dict[str, Any]:
    """Every artifact of an image classifier (ONNX fp32 / fp16 / our Q/DQ / the peer, ``.pt2``, the fp32 state dict):
    sizes, integer kernels, and each runtime's rows on ``test`` against the PyTorch model it came from."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sessions, info = _onnx_artifacts(fp32, int8, calib, calib[0][:2], folder)
        pt2 = export(int8, folder / "int8.pt2", "pt2", example_inputs=calib[0][:2])
        info["sizes"]["pt2_int8"] = pt2.bytes
        torch.save(fp32.state_dict(), folder / "fp32.pt")
        info["sizes"]["pytorch_fp32_state_dict"] = path_size(folder / "fp32.pt")
        runtimes = {"pytorch_fp32": (fp32, "pytorch_fp32"), "pytorch_ours_int8": (int8, "pytorch_fp32"),
                    "ort_fp32": (sessions["ort_fp32"], "pytorch_fp32"),
                    "ort_fp16": (sessions["ort_fp16"], "pytorch_fp32"),
                    "ort_ours_qdq": (sessions["ort_ours_qdq"], "pytorch_ours_int8"),
                    "ort_peer_quantize_static": (sessions["ort_peer_quantize_static"], "pytorch_fp32")}  # fmt: skip
        row = _runtime_rows(name, runtimes, test)
    return {**row, **info}


def run_mnist(quick: bool) -> dict[str, Any]:
    from lightning_compress.data import MNIST5kDataModule
    from lightning_compress.models import SmallCNN
    from lightning_compress.training.classification import ClassificationModule

    L.seed_everything(0, verbose=False)
    data = MNIST5kDataModule(batch_size=64, seed=0)
    data.setup("fit")
    data.setup("test")
    host = ClassificationModule(SmallCNN(), num_classes=10,
                                optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01))  # fmt: skip
    L.Trainer(max_epochs=1 if quick else 5, **QUIET).fit(host, datamodule=data)
    fp32 = copy.deepcopy(host.model).eval()
    calib = [x for x, _ in list(data.train_dataloader())[: 4 if quick else 16]]
    int8 = quantize(copy.deepcopy(fp32), calib, calibration_batches=len(calib), compile=False)
    test = eval_batches(data.test_dataloader())[: 2 if quick else None]
    row = _image_rows("mnist5k_smallcnn", fp32, int8, calib, [(x, y) for x, y in test])
    return {**row, "calibration_batches": len(calib), "test_images": sum(len(y) for _, y in test)}


def run_minilm(quick: bool) -> dict[str, Any]:
    from lightning_compress.data import GLUEDataModule
    from lightning_compress.models import huggingface_classifier, offline_minilm_path
    from lightning_compress.training.classification import ClassificationModule
    from lightning_compress.training.lr_schedule import warmup_lr

    L.seed_everything(0, verbose=False)
    path = offline_minilm_path()
    data = GLUEDataModule(task="rotten_tomatoes", tokenizer=path, batch_size=32, seed=0,
                          max_train_samples=64 if quick else 2000)  # fmt: skip
    data.setup("fit")
    data.setup("test")
    host = ClassificationModule(huggingface_classifier(path, num_labels=2), num_classes=2,
                                optimizer=functools.partial(torch.optim.AdamW, lr=5e-5, weight_decay=0.01),
                                scheduler=functools.partial(warmup_lr, warmup=0.1, decay="linear"),
                                scheduler_interval="step")  # fmt: skip
    L.Trainer(max_epochs=1 if quick else 2, limit_val_batches=0, **QUIET).fit(host, datamodule=data)
    fp32 = copy.deepcopy(host.model).eval()
    calib = [_split(b)[0] for b in list(data.train_dataloader())[: 2 if quick else 8]]
    int8 = quantize(copy.deepcopy(fp32), calib, calibration_batches=len(calib), compile=False)
    test = [_split(b) for b in eval_batches(data.test_dataloader())[: 1 if quick else 8]]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sessions, info = _onnx_artifacts(fp32, int8, calib, {k: v[:2] for k, v in calib[0].items()}, folder)
        hf = export(int8, folder / "hf_w8a8", "hf-compressed-tensors", hf_model=fp32)
        info["sizes"]["hf_w8a8_compressed_tensors"] = hf.bytes
        dense = export(fp32, folder / "hf_fp32", "hf-compressed-tensors")
        info["sizes"]["hf_fp32"] = dense.bytes
        loaded = type(fp32).from_pretrained(str(hf.path), dtype=torch.float32).eval()
        runtimes = {"pytorch_fp32": (lambda b: fp32(**b), "pytorch_fp32"),
                    "pytorch_ours_int8": (lambda b: int8(**b), "pytorch_fp32"),
                    "ort_fp32": (sessions["ort_fp32"], "pytorch_fp32"),
                    "ort_fp16": (sessions["ort_fp16"], "pytorch_fp32"),
                    "ort_ours_qdq": (sessions["ort_ours_qdq"], "pytorch_ours_int8"),
                    "ort_peer_quantize_static": (sessions["ort_peer_quantize_static"], "pytorch_fp32"),
                    "transformers_w8a8": (lambda b: loaded(**b), "pytorch_ours_int8")}  # fmt: skip
        row = _runtime_rows("rotten_tomatoes_minilm", runtimes, test)
    return {**row, "calibration_batches": len(calib), "test_sentences": sum(len(y) for _, y in test)}


def run_efficientnet(quick: bool) -> dict[str, Any]:
    """EfficientNet-Lite0 (offline ImageNet weights) on the offline photos: no labels, so each runtime's "accuracy" is
    its top-1 agreement with PyTorch fp32 on 45 crops of 5 photos (fidelity, not ImageNet accuracy)."""
    from efficientnet import calibration_batch, efficientnet_lite0, photo_batch

    fp32 = efficientnet_lite0()
    calib = list(calibration_batch().split(8))[: 1 if quick else 4]
    int8 = quantize(copy.deepcopy(fp32), calib, calibration_batches=len(calib), compile=False)
    photos = photo_batch(crops=1 if quick else 8)
    with torch.no_grad():
        reference = torch.cat([fp32(x) for x in photos.split(16)]).argmax(1)
    test = list(zip(photos.split(16), reference.split(16)))
    row = _image_rows("efficientnet_lite0_photos", fp32, int8, calib, test)
    return {**row, "calibration_images": sum(len(c) for c in calib), "photos": len(photos),
            "note": "_acc = top-1 agreement with PyTorch fp32 (no labels)"}  # fmt: skip


def run_smollm2(quick: bool) -> dict[str, Any]:
    import protocol
    from transformers import AutoModelForCausalLM

    from lightning_compress.quantization.weight_only.quantize import one_shot_quantize
    from lightning_compress.quantization.weight_only.weight_only_linear import to_weight_only_

    lm, tokenizer = protocol.load()
    calibration, evaluation = protocol.windows(tokenizer)
    if quick:
        calibration, evaluation = calibration[:2, :64], evaluation[:2, :64]
    row: dict[str, Any] = {
        "task": "smollm2_135m_gptq_w4a16_g64",
        "fp32_ppl": protocol.window_perplexity(lm, evaluation),
    }
    model, result = one_shot_quantize(lm, calibration, method="gptq", bits=4, group_size=64,
                                      calibration_batches=len(calibration))  # fmt: skip
    to_weight_only_(model, result, dtype=torch.float32)
    row["ours_w4a16_ppl"] = protocol.window_perplexity(model, evaluation)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "smollm2-w4a16"
        hf = export(model, folder, "hf-compressed-tensors", tokenizer=tokenizer)
        row["sizes"] = {"hf_w4a16_weights": hf.details.bytes, "hf_w4a16_folder": hf.bytes}
        dense = export(lm.__class__._from_config(lm.config), Path(tmp) / "fp32", "hf-compressed-tensors")
        row["sizes"]["hf_fp32_weights"] = dense.details.bytes
        loaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        row["transformers_w4a16_ppl"] = protocol.window_perplexity(loaded, evaluation)
        del loaded
        packed = load_packed(folder, dtype=torch.float32)
        row["load_packed_fp32_ppl"] = protocol.window_perplexity(packed, evaluation)
        del packed
        row["load_packed_bf16_ppl"] = protocol.window_perplexity(load_packed(folder, dtype=torch.bfloat16), evaluation)
    row["calibration_windows"], row["evaluation_windows"] = list(calibration.shape), list(evaluation.shape)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--task",
        nargs="+",
        choices=("mnist", "efficientnet", "minilm", "smollm2"),
        default=["mnist", "efficientnet", "minilm", "smollm2"],
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run (numbers not for the README)")
    parser.add_argument("--output", default=str(HERE / "results.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    runners = {"mnist": run_mnist, "efficientnet": run_efficientnet, "minilm": run_minilm, "smollm2": run_smollm2}
    for task in args.task:
        row = {**runners[task](args.quick), "quick": args.quick, "machine": machine_info(load_s=0)}
        print(json.dumps(row), flush=True)
        if not args.quick:
            with open(args.output, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
