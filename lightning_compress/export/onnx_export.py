"""ONNX files of float (fp32 / fp16) and INT8 models, through ``torch.export`` and the dynamo ONNX exporter.

An INT8 model of QAT or PTQ (``convert_to_int8``, ``quantize``) is exported as its reference graph: each quantize /
dequantize step becomes ``QuantizeLinear`` / ``DequantizeLinear`` (uint8 activations per tensor, int8 weights per
channel), and :func:`~lightning_compress.export.onnx_qdq.place_qdq_for_ort` then places them where ONNX Runtime
fuses them into integer kernels. Float models are exported as they compute (fp16: a half-precision copy, float
inputs in fp16). The batch dimension is dynamic, and the sequence dimension of ``(batch, length)`` integer inputs;
the first output (a model output's ``logits``) is named ``logits``; a dict of inputs keeps its keys as input names,
a tensor input is named ``input``.

Example:
    >>> info = save_onnx(int8_model, "model_int8.onnx", torch.randn(2, 1, 28, 28))  # doctest: +SKIP
    >>> info.kind, info.qdq_rewrites  # doctest: +SKIP
    ('int8', 1)
"""

from __future__ import annotations

import copy
import io
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from lightning_compress.core.batches import ExampleInputs
from lightning_compress.core.files import atomic_write
from lightning_compress.export.int8_graph import is_int8_graph, reference_graph
from lightning_compress.quantization.export_inputs import as_args_kwargs, export_error_summary, shrink_inputs

__all__ = ["ONNX_DTYPES", "OnnxExport", "save_onnx"]

ONNX_DTYPES = ("float32", "float16")


@dataclass
class OnnxExport:
    """What :func:`save_onnx` wrote: the file, ``kind`` (``"int8"``, ``"float32"`` or ``"float16"``), its input
    names, its size and the Q/DQ rewrites made for ONNX Runtime.

    ``quantized_conv_outputs`` names the convolutions read in float (before a residual add) that were given a quantized
    output calibrated on ``calibration_data`` (ONNX Runtime runs them as ``QLinearConv``); ``conv_integer`` those
    written as ``ConvInteger`` because no calibration batches were given (exact, slow in ONNX Runtime; a warning
    names them)."""

    path: Path
    kind: str
    inputs: list[str]
    bytes: int
    qdq_rewrites: int = 0
    quantized_conv_outputs: list[str] = field(default_factory=list)
    conv_integer: list[str] = field(default_factory=list)


class _FirstOutput(nn.Module):
    """Calls the model and returns its first output: ``.logits`` of a model output, ``[0]`` of a tuple.

    Keyword tensor inputs are taken positionally after the positional ones (``keys`` names them) and other keyword
    values are held as constants: ``torch.export`` of keyword-only wrappers with dynamic shapes writes input guards
    that fail when the ONNX exporter re-traces the program (``NameError: L``), positional inputs do not.
    """

    def __init__(self, inner: nn.Module, n_args: int = 0, keys: tuple = (), constants: Optional[dict] = None) -> None:
        super().__init__()
        self.inner = inner
        self.n_args, self.keys, self.constants = n_args, keys, dict(constants or {})

    def forward(self, *args: Any) -> Tensor:
        kwargs = dict(zip(self.keys, args[self.n_args :]), **self.constants)
        out = self.inner(*args[: self.n_args], **kwargs)
        if hasattr(out, "logits"):
            return out.logits
        if isinstance(out, Mapping):
            return next(iter(out.values()))
        if isinstance(out, (tuple, list)):
            return out[0]
        return out


def _dynamic(args: tuple) -> Any:
    batch = length = torch.export.Dim.AUTO  # dynamic within the ranges the model allows (a BERT's 512 positions)

    def spec(value: Any) -> Any:
        if not isinstance(value, Tensor) or value.dim() == 0:
            return None
        if value.dim() == 2 and not value.is_floating_point():
            return {0: batch, 1: length}
        return {0: batch}

    return {"args": tuple(spec(a) for a in args)}


def _without_guards(graph: nn.Module) -> nn.Module:
    """``graph`` without the ``_guards_fn`` call ``ExportedProgram.module()`` inserts (input checks of the capture
    it came from, whose code names the capture's inputs and fails when re-traced with keyword inputs): a new
    GraphModule over the same parameters, the model itself untouched."""
    if not isinstance(graph, torch.fx.GraphModule) or not hasattr(graph, "_guards_fn"):
        return graph
    copied = torch.fx.GraphModule(graph, copy.deepcopy(graph.graph))
    for node in list(copied.graph.find_nodes(op="call_module", target="_guards_fn")):
        copied.graph.erase_node(node)
    copied.meta.update(graph.meta)
    copied.recompile()
    if hasattr(copied, "_guards_fn"):
        delattr(copied, "_guards_fn")
    return copied


def _half(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.half() if value.is_floating_point() else value
    if isinstance(value, Mapping):
        return {k: _half(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(_half(v) for v in value)
    return value


def _layer_of(program: Any, message: str) -> str:
    """The module path of the node an exporter error names (``%wiggle : ...``), or ``""``."""
    found = re.search(r"%(\w+) : ", message)
    if program is None or found is None:
        return ""
    for node in program.graph.nodes:
        if node.name == found.group(1):
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path, kind = list(stack.values())[-1]
                kind = kind.rsplit(".", 1)[-1] if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
                return f"{path.replace('L[' + repr('self') + '].', '') or '(top level)'} ({kind})"
    return ""


def _unsupported(err: BaseException, program: Any, fmt: str, name: str) -> ValueError:
    text = str(err)
    ops = re.findall(r"op='([\w.]+)', overload='(\w+)'", text)
    op = f"{ops[0][0]}.{ops[0][1]}" if ops else ""
    layer = _layer_of(program, text)
    what = f"the op {op}" if op else "a node"
    where = f" in {layer}" if layer else ""
    return ValueError(
        f"format {fmt!r} cannot hold {what}{where} of {name}: the ONNX exporter has no ONNX function for it"
        f" ({type(err).__name__}). Replace it with standard torch ops, keep it out of the exported model, or use"
        " another format"
        if op
        else f"format {fmt!r}: the ONNX exporter failed on {name}{where}: {export_error_summary(err)}"
    )


def _rename(graph: Any, old: str, new: str) -> None:
    """Rename a graph input or output everywhere it is read or written."""
    for node in graph.node:
        for names in (node.input, node.output):
            for i, value in enumerate(names):
                if value == old:
                    names[i] = new
    for value in (*graph.input, *graph.output):
        if value.name == old:
            value.name = new


def save_onnx(
    model: nn.Module,
    path: Union[str, os.PathLike],
    example_inputs: ExampleInputs,
    dtype: str = "float32",
    fmt: str = "onnx",
    calibration: Optional[list] = None,
) -> OnnxExport:
    """Export ``model`` to an ONNX file at ``path`` (atomically: a temporary file renamed into place).

    Args:
        model: A float ``nn.Module`` (eval mode is used, then restored) or an INT8 model of ``convert_to_int8`` /
            ``quantize`` (a ``FrozenInt8`` or its reference graph).
        path: The ``.onnx`` file.
        example_inputs: One batch of inputs (a tensor, a tuple of positional inputs or a dict of keyword inputs).
        dtype: ``"float32"`` or ``"float16"`` for a float model (an INT8 model is exported as it is).
        fmt: The format's name, for messages.
        calibration: For an INT8 model: model inputs, one batch each, on which the output range of every convolution
            read in float is observed (:func:`~lightning_compress.export.onnx_qdq.conv_output_qparams`), so that
            ONNX Runtime runs it as ``QLinearConv``; None: those are written as ``ConvInteger`` (with a warning).

    Returns:
        :class:`OnnxExport`.

    Raises:
        ValueError: If the model holds an op ONNX cannot express (the message names the op, the layer and the
            format), or fp16 is asked of an INT8 model.
        RuntimeError: If ``torch.export`` cannot capture the model (the message names the failing op).
    """
    import onnx

    from lightning_compress.export.onnx_qdq import QdqPlacement, place_qdq_for_ort

    int8 = is_int8_graph(model)
    if int8 and dtype != "float32":
        raise ValueError(
            f"format {fmt!r}: an INT8 model is exported with its int8 weights; fp16 applies to float models"
        )
    if calibration is not None and not int8:
        raise ValueError(
            f"format {fmt!r}: `calibration_data` calibrates the quantized outputs of an INT8 model's convolutions;"
            f" {type(model).__name__} is a float model (quantize it first, or leave calibration_data out)"
        )
    inner = _without_guards(reference_graph(model)) if int8 else model
    name = type(model).__name__
    args, kwargs = as_args_kwargs(shrink_inputs(example_inputs))
    if dtype == "float16":
        inner = copy.deepcopy(inner).half()
        args, kwargs = _half(args), _half(kwargs)
    tensors = {k: v for k, v in kwargs.items() if isinstance(v, Tensor)}
    constants = {k: v for k, v in kwargs.items() if k not in tensors}
    wrapped = _FirstOutput(inner, len(args), tuple(tensors), constants)
    flat = (*args, *tensors.values())
    was_training = inner.training
    if not int8:
        inner.eval()
    try:
        try:
            program = torch.export.export(wrapped, flat, dynamic_shapes=_dynamic(flat))
        except Exception as err:  # torch.export raises many types; all mean "this model cannot be captured"
            raise RuntimeError(
                f"format {fmt!r} exports through torch.export, which cannot capture {name}: {export_error_summary(err)}"
            ) from err
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onnx_program = torch.onnx.export(program, dynamo=True, verbose=False, optimize=True)
        except Exception as err:  # ConversionError, DispatchError: an op without an ONNX function
            raise _unsupported(err, program, fmt, name) from err
    finally:
        if not int8:
            inner.train(was_training)
    proto = onnx_program.model_proto
    if proto.graph.output:
        _rename(proto.graph, proto.graph.output[0].name, "logits")
    names = [("input" if len(args) == 1 else f"input_{i}") for i in range(len(args))] + list(tensors)
    traced = dict(zip(program.graph_signature.user_inputs, names))  # placeholder name -> input name
    for value in list(proto.graph.input):  # an input the graph never reads may be dropped by the exporter
        if value.name in traced:
            _rename(proto.graph, value.name, traced[value.name])
    placement = place_qdq_for_ort(proto, calibration) if int8 else QdqPlacement()
    if placement.conv_integer:
        shown = ", ".join(placement.conv_integer[:4]) + (", ..." if len(placement.conv_integer) > 4 else "")
        warnings.warn(
            f"format {fmt!r}: {len(placement.conv_integer)} convolutions of {name} are read in float (before a"
            f" residual add: {shown}) and were written as ConvInteger, which ONNX Runtime runs slowly (not fused with"
            " its scaling); pass calibration_data= (a few batches of inputs, as for quantize) to give them calibrated"
            " quantized outputs, which ONNX Runtime runs as QLinearConv",
            stacklevel=3,
        )
    buffer = io.BytesIO()
    onnx.save_model(proto, buffer)
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())
    kind = "int8" if int8 else dtype
    inputs = [i.name for i in proto.graph.input]
    return OnnxExport(Path(path), kind, inputs, Path(path).stat().st_size, placement.rewrites,
                      placement.quantized_conv_outputs, placement.conv_integer)  # fmt: skip
