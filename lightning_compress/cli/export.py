"""``lc-export``: a trained or compressed model written as a deployable artifact (``export``): ONNX (fp32, fp16, INT8
Q/DQ for ONNX Runtime), a Hugging Face + compressed-tensors folder (transformers, vLLM), a ``.pt2`` program or the
library's compressed file.

The model is any spec of :func:`~lightning_compress.cli.model_spec.load_model`: an ``lc-train`` run folder (a QAT
run's checkpoint is loaded into the QAT graph again and exported as its INT8 conversion), a Hugging Face folder (with
``--weight-only FILE``, the INT4 / INT8 weight-only file of ``lc-oneshot-lm`` is loaded into it), a ``.pt2`` INT8
program of ``lc-quantize``, or an architecture with ``--checkpoint``. Example inputs: ``--input-shape`` for tensor
inputs; token ids ``(2, --seq-len)`` for a Hugging Face text model. Exit status 2 on a user error (nothing written).

An INT8 model exported to ``onnx`` is calibrated for ONNX Runtime (``export(calibration_data=)``: the convolutions
read in float before a residual add get calibrated quantized outputs, run as ``QLinearConv`` + ``QLinearAdd``) on the
first ``--calibration-batches`` batches of a training split, as ``lc-quantize`` calibrates: the run's data set for a
run folder or a ``.pt2`` that ``lc-quantize`` wrote into one (``<run>/ptq_int8/model_int8.pt2``), else the
``conf/data`` option ``--data`` (with ``--override``). Without data those convolutions are written as ``ConvInteger``
(exact, slow in ONNX Runtime) and a warning names them.

Example:
    lc-export outputs/train/<time> --format onnx --input-shape 2,1,28,28 --output model.onnx
    lc-export outputs/train/<time>/ptq_int8/model_int8.pt2 --format onnx --input-shape 2,1,28,28 --output int8.onnx
    lc-export resnet_int8.pt2 --data cifar10 --calibration-batches 16 --format onnx --input-shape 2,3,32,32 \
        --output int8.onnx
    lc-export smollm2_dir --weight-only smollm2_w4.safetensors --format hf-compressed-tensors --output smollm2-w4a16
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from lightning_compress.cli.model_spec import SPEC_FORMS, load_model
from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.export.export import FORMATS, export, exportable_model
from lightning_compress.export.int8_graph import is_int8_graph

__all__ = ["calibration_batches", "main"]


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--input-shape must be comma-separated ints such as 2,1,28,28, got {text!r}"
        ) from None
    if not shape or any(v < 1 for v in shape):
        raise argparse.ArgumentTypeError(f"--input-shape must be positive ints, got {text!r}")
    return shape


def _qat_run(spec: str, example: Any) -> Optional[nn.Module]:
    """The QAT graph of an ``lc-train`` run whose checkpoint holds fake-quantization state, loaded; else None."""
    from hydra.utils import instantiate

    from lightning_compress.cli.model_spec import run_config
    from lightning_compress.cli.train import model_kwargs
    from lightning_compress.core.checkpoints import load_network_weights, network_state, read_state_dict
    from lightning_compress.quantization.pt2e import prepare_qat

    folder = Path(spec)
    if not (folder / ".hydra" / "config.yaml").is_file():
        return None
    checkpoints = sorted((folder / "checkpoints").glob("*.ckpt"), key=lambda p: (p.name == "last.ckpt", p.name))
    if not checkpoints:
        return None
    state = network_state(read_state_dict(checkpoints[0], f"the checkpoint of run {folder}"))
    if not any("activation_post_process" in k for k in state):
        return None
    if example is None:
        raise ValueError(f"run {spec!r} was trained with QAT: its graph is exported again with --input-shape")
    cfg = run_config(folder)
    key = "num_labels" if "name_or_path" in cfg.model else "num_classes"
    kwargs = {} if cfg.model.get(key) is not None else model_kwargs(cfg.model, instantiate(cfg.data).num_classes)
    prepared = prepare_qat(instantiate(cfg.model, **kwargs), example)
    load_network_weights(prepared, state, what=f"the QAT checkpoint of run {folder}")
    return prepared


def _run_of(spec: str) -> Optional[Path]:
    """The ``lc-train`` run folder of ``spec``: the folder itself, or the run an ``lc-quantize`` program was written
    into (``<run>/ptq_int8/model_int8.pt2``); None for any other spec."""
    path = Path(spec)
    for folder in (path.parent.parent,) if path.is_file() else (path,):
        if (folder / ".hydra" / "config.yaml").is_file():
            return folder
    return None


def calibration_batches(spec: str, data: Optional[str], overrides: Sequence[str], num_batches: int) -> Optional[list]:
    """The model inputs (labels removed, on the CPU) of the first ``num_batches`` batches of the training split that
    calibrates an INT8 ONNX export of ``spec``: the ``conf/data`` option ``data`` when given, else the data set of the
    run folder of ``spec`` (:func:`_run_of`, its config checked by
    :func:`~lightning_compress.cli.model_spec.run_config`); None without either. The data module is built as
    ``lc-quantize`` builds it (``overrides``: data config overrides such as ``data.batch_size=64``).

    Raises:
        ValueError: If the run config names a target that is not allowed, or the training split yields no batch.
    """
    from lightning_compress.cli.model_spec import run_config
    from lightning_compress.cli.quantize import _datamodule
    from lightning_compress.quantization.calibration import calibration_inputs

    run = _run_of(spec)
    if data is None and run is None:
        return None
    if data is None:
        run_config(run)  # the data node's targets checked before anything is built
    datamodule = _datamodule(str(run) if data is None else spec, data, overrides)
    datamodule.setup("fit")
    return calibration_inputs(datamodule.train_dataloader(), num_batches, what="the training split")


def _example(model: nn.Module, shape: Optional[tuple[int, ...]], seq_len: int) -> Any:
    if shape is not None:
        return torch.randn(*shape)
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None) if config is not None else None
    if vocab:
        ids = torch.randint(0, int(vocab), (2, seq_len))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``lc-export``; returns the exit status (0 written, 2 a user error)."""
    parser = argparse.ArgumentParser(prog="lc-export", description="Export a model as a deployable artifact.")
    parser.add_argument("model", help=SPEC_FORMS)
    parser.add_argument("--format", choices=sorted(FORMATS), default="onnx", help="the artifact to write")
    parser.add_argument("--output", required=True, help="the file or folder to write")
    parser.add_argument("--checkpoint", default=None, help="weights loaded into the model (never unpickled)")
    parser.add_argument("--weight-only", default=None, help="a save_weight_only file (lc-oneshot-lm) for the model")
    parser.add_argument("--input-shape", type=_shape, default=None, help="shape of a random example input, 2,1,28,28")
    parser.add_argument("--seq-len", type=int, default=16, help="tokens of the example input of a text model")
    parser.add_argument("--data", default=None, help="INT8 onnx: a conf/data option whose training split calibrates"
                        " (default: the run's data set)")  # fmt: skip
    parser.add_argument("--override", action="append", default=[], help="a data config override, data.batch_size=64")
    parser.add_argument("--calibration-batches", type=int, default=32, help="INT8 onnx: training batches (1 to 32)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--allow-pickle", action="store_true", help="load a pickled model / .pt2 (trusted files only)")
    args = parser.parse_args(argv)
    try:
        errors = ArgumentErrors("lc-export: ")
        calibrating = 1 <= args.calibration_batches <= 32
        errors.require(calibrating, "--calibration-batches", "an int in 1..32", args.calibration_batches)
        if args.data is not None:
            from lightning_compress.cli.train import CONFIG_DIR

            errors.one_of("--data", args.data, sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml")))
        errors.raise_if_any()
        example = None if args.input_shape is None else torch.randn(*args.input_shape)
        model = _qat_run(args.model, example)
        if model is None:
            model = load_model(args.model, args.checkpoint, allow_pickle=args.allow_pickle)
        if args.weight_only is not None:
            from lightning_compress.quantization.weight_only.weight_only_file import load_weight_only

            model = load_weight_only(model, args.weight_only)
        tokenizer = None
        if args.format == "hf-compressed-tensors" and (Path(args.model) / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = exportable_model(model)  # a QAT graph as its INT8 conversion (once: export keeps it)
        if not is_int8_graph(model):  # an INT8 graph runs as inference only (a .pt2's module refuses eval())
            model = model.eval()
        int8_onnx = args.format == "onnx" and is_int8_graph(model)
        if args.data is not None and not int8_onnx:
            raise ValueError(f"--data {args.data!r} calibrates an INT8 model exported to onnx; {args.model!r} as"
                             f" {args.format!r} is not one (leave --data out)")  # fmt: skip
        calibration = None
        if int8_onnx and not (Path(args.output).exists() and not args.overwrite):  # no data built for a refusal
            calibration = calibration_batches(args.model, args.data, args.override, args.calibration_batches)
        result = export(model, args.output, args.format, example_inputs=_example(model, args.input_shape,
                        args.seq_len), tokenizer=tokenizer, calibration_data=calibration,
                        overwrite=args.overwrite)  # fmt: skip
    except (ValueError, TypeError, FileExistsError, FileNotFoundError, NotADirectoryError) as err:
        print(f"lc-export: error: {err}", file=sys.stderr)
        return 2
    line = f"lc-export: wrote {result.format} {result.path} ({result.bytes:,} bytes)"
    details = result.details
    if args.format == "onnx" and getattr(details, "kind", "") == "int8":
        from lightning_compress.export.onnx_qdq import ort_kernels

        line += f"; ONNX Runtime runs {ort_kernels(result.path).summary()}"
        if details.conv_integer:
            line += f" ({len(details.conv_integer)} ConvInteger: pass --data to calibrate them)"
    elif getattr(details, "scheme", None):
        line += f"; {details.scheme} ({details.format}), {len(details.quantized)} quantized Linear layers"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
