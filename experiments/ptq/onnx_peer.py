"""The peer path a user would take instead of this library's PTQ: the fp32 model exported to ONNX and quantized with
ONNX Runtime's ``quantize_static`` (QDQ format, weights int8 per channel, activations uint8 per tensor, MinMax
calibration: ORT's defaults for CPU) on the same calibration batches, run by an ``InferenceSession``.

Example:
    >>> session = onnx_int8(model, calibration_inputs, folder)  # doctest: +SKIP
    >>> logits = run(session, inputs)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def _names_and_arrays(inputs: Any) -> dict[str, np.ndarray]:
    if isinstance(inputs, Mapping):
        return {k: v.numpy() for k, v in inputs.items()}
    return {"input": inputs.numpy()}


def export_onnx(model: nn.Module, example: Any, path: Path) -> Path:
    """``torch.onnx.export`` (TorchScript exporter, opset 17) with dynamic batch (and sequence) dimensions."""
    model = model.eval()
    if isinstance(example, Mapping):
        names = list(example)
        args = tuple(example[k] for k in names)
        axes = {k: {0: "batch", 1: "sequence"} for k in names}

        class Positional(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                out = self.inner(**dict(zip(names, tensors)))
                return out.logits if hasattr(out, "logits") else out

        wrapped: nn.Module = Positional(model).eval()  # a new Module trains: the exporter restores that mode on `model`
    else:
        names, args, axes, wrapped = ["input"], (example,), {"input": {0: "batch"}}, model
    axes["logits"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            wrapped, args, str(path), input_names=names, output_names=["logits"], dynamic_axes=axes, opset_version=17,
            dynamo=False,
        )  # fmt: skip
    return path


def onnx_int8(model: nn.Module, calibration: Sequence[Any], folder: str | os.PathLike, per_channel: bool = True) -> Any:
    """Export ``model``, quantize it with ``quantize_static`` on ``calibration`` (model inputs per batch) and return
    an ONNX Runtime session of the INT8 model (CPU, the same thread count as torch)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = Path(folder)
    fp32 = export_onnx(model, calibration[0], folder / "fp32.onnx")
    prepared = folder / "fp32_prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([_names_and_arrays(b) for b in calibration])

        def get_next(self) -> Any:
            return next(self.batches, None)

    int8 = folder / "int8.onnx"
    quantize_static(
        str(prepared), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    return session(int8)


def session(path: str | os.PathLike) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess: Any, inputs: Any) -> torch.Tensor:
    """The logits of an ONNX Runtime session on torch inputs (a tensor or a dict)."""
    wanted = {i.name for i in sess.get_inputs()}
    feeds = {k: v for k, v in _names_and_arrays(inputs).items() if k in wanted}
    return torch.from_numpy(sess.run(["logits"], feeds)[0])
