"""Quantize / dequantize placement that ONNX Runtime turns into integer kernels, and the count of the layers it runs
integer.

ONNX Runtime's CPU graph optimizer fuses a ``DequantizeLinear`` (activations) + ``DequantizeLinear`` (int8 weight) +
layer node group into one integer kernel: ``QLinearConv`` and ``QLinearMatMul`` / ``QGemm`` when a
``QuantizeLinear`` follows the layer, ``MatMulIntegerToFloat`` for a ``MatMul`` with a float output, and ``QGemm``
with a float output only when the Gemm's bias is itself a dequantized int32 (or absent). The INT8 graphs of PT2E
(``convert_to_int8``, ``quantize``) quantize the inputs of each Linear / Conv; where a layer's output is used in
float (a classifier, a Linear before a residual add), the dynamo exporter writes ``Gemm(DQ(x), DQ(w), b_float)``,
which ONNX Runtime leaves as a float ``Gemm``. :func:`place_qdq_for_ort` rewrites such a bias as
``DequantizeLinear(int32 round(b / (s_x * s_w)), s_x * s_w)`` (per output channel: what ONNX Runtime's own
``quantize_static`` writes), so that the layer runs as ``QGemm``; the numbers change by at most half a step of
``s_x * s_w`` per output. :func:`ort_kernels` reads the graph ONNX Runtime actually runs (``optimized_model_filepath``)
and counts integer kernels against layers left in float.

Example:
    >>> changed = place_qdq_for_ort(model_proto)  # doctest: +SKIP
    >>> kernels = ort_kernels("model_int8.onnx")  # doctest: +SKIP
    >>> kernels.integer, kernels.float_layers  # doctest: +SKIP
    (Counter({'QLinearConv': 2, 'QGemm': 2}), Counter())
"""

from __future__ import annotations

import collections
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

__all__ = ["FLOAT_LAYER_OPS", "INTEGER_OPS", "OrtKernels", "ort_kernels", "place_qdq_for_ort"]

INTEGER_OPS = (
    "QLinearConv",
    "QLinearMatMul",
    "QGemm",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "ConvInteger",
    "DynamicQuantizeMatMul",
    "QAttention",
)
_WEIGHT_PATH = ("DequantizeLinear", "Transpose", "Cast", "Reshape")
FLOAT_LAYER_OPS = ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "ConvTranspose")


@dataclass
class OrtKernels:
    """The layers of the graph ONNX Runtime runs, as integer kernels and as float layers (a float Conv / Gemm /
    MatMul whose weight is a constant; matmuls of two activations, as in attention, are not layers).

    Attributes:
        integer: Integer kernel op type -> count.
        float_layers: Float layer op type -> count.
        float_nodes: The names of the float layer nodes.
    """

    integer: collections.Counter = field(default_factory=collections.Counter)
    float_layers: collections.Counter = field(default_factory=collections.Counter)
    float_nodes: list[str] = field(default_factory=list)

    @property
    def integer_count(self) -> int:
        return sum(self.integer.values())

    @property
    def float_count(self) -> int:
        return sum(self.float_layers.values())

    def summary(self) -> str:
        ints = ", ".join(f"{k} {v}" for k, v in sorted(self.integer.items())) or "none"
        floats = ", ".join(f"{k} {v}" for k, v in sorted(self.float_layers.items())) or "none"
        return f"integer kernels: {ints}; float layers: {floats}"


def _producers(graph: Any) -> dict[str, Any]:
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph: Any) -> dict[str, list[Any]]:
    users: dict[str, list[Any]] = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            users[name].append(node)
    return users


def _constant(name: str, initializers: dict[str, Any], producers: dict[str, Any]) -> Any:
    """The numpy value of a constant input (an initializer or a Constant node), or None."""
    from onnx import numpy_helper

    if name in initializers:
        return numpy_helper.to_array(initializers[name])
    node = producers.get(name)
    if node is not None and node.op_type == "Constant" and node.attribute:
        attr = node.attribute[0]
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.asarray(attr.f, dtype=np.float32)
    return None


def _quantized_output(readers: list[Any], users: dict[str, list[Any]]) -> bool:
    """Whether a layer's output is quantized: read only by QuantizeLinear, or through one Relu / Clip that is (ONNX
    Runtime folds the activation into the quantization's range)."""
    if len(readers) == 1 and readers[0].op_type in ("Relu", "Clip"):
        readers = users.get(readers[0].output[0], [])
    return bool(readers) and all(r.op_type == "QuantizeLinear" for r in readers)


def place_qdq_for_ort(model: Any) -> int:
    """Give every ``Gemm(DQ(x), DQ(w), bias)`` whose output is read in float an int32 dequantized bias, in place.

    Args:
        model: An ``onnx.ModelProto`` of an INT8 export.

    Returns:
        The number of Gemm biases rewritten.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    producers, users = _producers(graph), _consumers(graph)
    rewritten = 0
    for node in graph.node:
        if node.op_type != "Gemm" or len(node.input) < 3 or not node.input[2]:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or not attrs.get("transB", 0) or attrs.get("alpha", 1.0) != 1.0:
            continue
        a, b = producers.get(node.input[0]), producers.get(node.input[1])
        if not (a is not None and b is not None and a.op_type == b.op_type == "DequantizeLinear"):
            continue
        if _quantized_output(users.get(node.output[0], []), users):
            continue  # fused as QGemm with a quantized output already
        bias = _constant(node.input[2], initializers, producers)
        a_scale = _constant(a.input[1], initializers, producers)
        b_scale = _constant(b.input[1], initializers, producers)
        if bias is None or a_scale is None or b_scale is None or a_scale.size != 1 or bias.ndim != 1:
            continue
        scale = (np.float32(a_scale.reshape(())) * b_scale.astype(np.float32)).astype(np.float32).reshape(-1)
        scale = np.broadcast_to(scale, bias.shape).astype(np.float32)
        q = np.clip(np.round(bias.astype(np.float64) / scale), -(2**31), 2**31 - 1).astype(np.int32)
        base = f"{node.name or node.output[0]}_bias"
        graph.initializer.extend([
            numpy_helper.from_array(q, f"{base}_int32"),
            numpy_helper.from_array(scale, f"{base}_scale"),
            numpy_helper.from_array(np.zeros_like(q), f"{base}_zero_point"),
        ])  # fmt: skip
        dq = helper.make_node("DequantizeLinear", [f"{base}_int32", f"{base}_scale", f"{base}_zero_point"],
                              [f"{base}_dequantized"], name=f"{base}_DequantizeLinear", axis=0)  # fmt: skip
        graph.node.append(dq)
        node.input[2] = f"{base}_dequantized"
        rewritten += 1
    rewritten += _pads_after_quantize(graph)
    rewritten += _pads_before_dequantize(graph)
    rewritten += _float_output_convs(graph)
    if rewritten:
        _topological_sort(graph)
    return rewritten


def _zero_pad(pad: Any, initializers: dict[str, Any], producers: dict[str, Any]) -> bool:
    """Whether ``pad`` pads with the constant 0."""
    from onnx import helper

    mode = next((helper.get_attribute_value(a) for a in pad.attribute if a.name == "mode"), b"constant")
    value = _constant(pad.input[2], initializers, producers) if len(pad.input) > 2 and pad.input[2] else None
    return mode in (b"constant", "constant") and (value is None or float(value.reshape(-1)[0]) == 0.0)


def _pads_after_quantize(graph: Any) -> int:
    """``Q(Pad(x, 0))`` -> ``Pad(Q(x), zero point)``: the quantize then follows the Relu / Clip before the pad, where
    ONNX Runtime fuses it into the convolution that produced ``x`` (the layers before timm's strided convolutions)."""
    from onnx import helper, numpy_helper

    initializers = {t.name: t for t in graph.initializer}
    producers, users = _producers(graph), _consumers(graph)
    moved = 0
    for pad in list(graph.node):
        readers = users.get(pad.output[0], []) if pad.op_type == "Pad" else []
        if len(readers) != 1 or readers[0].op_type != "QuantizeLinear" or not _zero_pad(pad, initializers, producers):
            continue
        quant = readers[0]
        zero = _constant(quant.input[2], initializers, producers) if len(quant.input) > 2 else None
        if zero is None or zero.size != 1:
            continue
        fill = f"{pad.name or pad.output[0]}_zero_point"
        graph.initializer.append(numpy_helper.from_array(zero.reshape(()), fill))
        early = f"{pad.input[0]}_quantized_before_pad"
        graph.node.append(helper.make_node("QuantizeLinear", [pad.input[0], *quant.input[1:]], [early],
                                           name=f"{quant.name}_before_pad"))  # fmt: skip
        graph.node.append(helper.make_node("Pad", [early, pad.input[1], fill, *pad.input[3:4]], [quant.output[0]],
                                           name=f"{pad.name}_quantized", mode="constant"))  # fmt: skip
        graph.node.remove(pad)
        graph.node.remove(quant)
        moved += 1
    return moved


def _pads_before_dequantize(graph: Any) -> int:
    """``Conv(Pad(DQ(q), 0))`` -> ``Conv(DQ(Pad(q, zero point)))``: padding the quantized values with the zero point
    is padding the float values with 0, and the dequantize then sits next to the Conv, where ONNX Runtime fuses it
    (timm's "same" padding puts a Pad before every strided convolution)."""
    from onnx import helper, numpy_helper

    initializers = {t.name: t for t in graph.initializer}
    producers, users = _producers(graph), _consumers(graph)
    moved = 0
    for pad in list(graph.node):
        if pad.op_type != "Pad" or len(pad.input) < 2:
            continue
        dq = producers.get(pad.input[0])
        readers = users.get(pad.output[0], [])
        mode = next((helper.get_attribute_value(a) for a in pad.attribute if a.name == "mode"), b"constant")
        if dq is None or dq.op_type != "DequantizeLinear" or mode not in (b"constant", "constant"):
            continue
        if not readers or any(r.op_type != "Conv" for r in readers) or len(users.get(dq.output[0], [])) != 1:
            continue
        value = _constant(pad.input[2], initializers, producers) if len(pad.input) > 2 and pad.input[2] else None
        zero = _constant(dq.input[2], initializers, producers) if len(dq.input) > 2 else None
        if (value is not None and float(value.reshape(-1)[0]) != 0.0) or zero is None or zero.size != 1:
            continue
        fill = f"{pad.name or pad.output[0]}_zero_point"
        graph.initializer.append(numpy_helper.from_array(zero.reshape(()), fill))
        padded = f"{pad.output[0]}_quantized"
        inputs = [dq.input[0], pad.input[1], fill, *pad.input[3:4]]
        graph.node.append(helper.make_node("Pad", inputs, [padded], name=f"{pad.name}_quantized", mode="constant"))
        graph.node.append(helper.make_node("DequantizeLinear", [padded, *dq.input[1:]], [pad.output[0]],
                                           name=f"{dq.name}_after_pad"))  # fmt: skip
        graph.node.remove(pad)
        graph.node.remove(dq)
        moved += 1
    return moved


def _float_output_convs(graph: Any) -> int:
    """``Conv(DQ(x), DQ(w), b)`` read in float (before a residual add) -> ``ConvInteger(x, w) * (s_x * s_w) + b``:
    ONNX Runtime has no float-output integer convolution to fuse it into, but runs ``ConvInteger`` integer; the
    int32 sums are exact, so the values are those of the dequantized convolution."""
    from onnx import TensorProto, helper, numpy_helper

    initializers = {t.name: t for t in graph.initializer}
    producers, users = _producers(graph), _consumers(graph)
    rewritten = 0
    for conv in list(graph.node):
        if conv.op_type != "Conv":
            continue
        x, w = producers.get(conv.input[0]), producers.get(conv.input[1])
        readers = users.get(conv.output[0], [])
        if not (x is not None and w is not None and x.op_type == w.op_type == "DequantizeLinear"):
            continue
        if _quantized_output(readers, users):
            continue  # fused as QLinearConv
        xs, xz = (_constant(n, initializers, producers) for n in (x.input[1], x.input[2]))
        ws, wz = (_constant(n, initializers, producers) for n in (w.input[1], w.input[2]))
        wq = _constant(w.input[0], initializers, producers)
        if xs is None or xz is None or ws is None or wq is None or xs.size != 1 or xz.size != 1:
            continue
        bias = _constant(conv.input[2], initializers, producers) if len(conv.input) > 2 and conv.input[2] else None
        if (wz is not None and bool(np.any(wz != 0))) or (bias is None and len(conv.input) > 2 and conv.input[2]):
            continue
        channels = wq.shape[0]
        base = conv.name or conv.output[0]
        scale = np.float32(xs.reshape(())) * np.broadcast_to(ws.astype(np.float32).reshape(-1), (channels,))
        shape = (1, channels) + (1,) * (wq.ndim - 2)
        graph.initializer.extend([
            numpy_helper.from_array(xz.reshape(()), f"{base}_x_zero_point"),
            numpy_helper.from_array(np.zeros((), dtype=wq.dtype), f"{base}_w_zero_point"),
            numpy_helper.from_array(scale.astype(np.float32).reshape(shape), f"{base}_output_scale"),
        ])  # fmt: skip
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        attrs = {k: v for k, v in attrs.items() if not (k == "auto_pad" and v in (b"NOTSET", "NOTSET"))}
        nodes = [
            helper.make_node("ConvInteger", [x.input[0], w.input[0], f"{base}_x_zero_point", f"{base}_w_zero_point"],
                             [f"{base}_int32"], name=f"{base}_ConvInteger", **attrs),
            helper.make_node("Cast", [f"{base}_int32"], [f"{base}_sum"], name=f"{base}_Cast", to=TensorProto.FLOAT),
        ]  # fmt: skip
        scaled = conv.output[0] if bias is None else f"{base}_scaled"
        nodes.append(helper.make_node("Mul", [f"{base}_sum", f"{base}_output_scale"], [scaled], name=f"{base}_Mul"))
        if bias is not None:
            graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32).reshape(shape), f"{base}_bias"))
            nodes.append(helper.make_node("Add", [scaled, f"{base}_bias"], [conv.output[0]], name=f"{base}_Add"))
        graph.node.remove(conv)
        graph.node.extend(nodes)
        rewritten += 1
    return rewritten


def _topological_sort(graph: Any) -> None:
    """Order ``graph.node`` so that every node comes after the producers of its inputs."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in known for name in n.input)]
        if not ready:  # inputs from outer scopes (subgraphs): keep the rest in their order
            ordered += pending
            break
        for n in ready:
            known.update(n.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    del graph.node[:]
    graph.node.extend(ordered)


def ort_kernels(path: Union[str, os.PathLike]) -> OrtKernels:
    """The integer kernels and float layers of the graph ONNX Runtime's CPU provider runs for the model at ``path``
    (the optimized model it writes with ``optimized_model_filepath``, extended optimizations).

    Raises:
        ValueError: If ONNX Runtime cannot load the file (the message names it).
    """
    import onnx
    import onnxruntime as ort

    from lightning_compress.export.onnx_runtime import check_onnx_file

    check_onnx_file(path)
    with tempfile.TemporaryDirectory() as folder:
        optimized = Path(folder) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimized)
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(optimized))
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    for n in graph.node:  # a weight is a constant, or a constant dequantized / transposed / cast
        if n.op_type == "Constant" or (n.op_type in _WEIGHT_PATH and n.input and n.input[0] in constants):
            constants.update(n.output)
    kernels = OrtKernels()
    for node in graph.node:
        if node.op_type in INTEGER_OPS:
            kernels.integer[node.op_type] += 1
        elif node.op_type in FLOAT_LAYER_OPS and len(node.input) > 1 and node.input[1] in constants:
            kernels.float_layers[node.op_type] += 1
            kernels.float_nodes.append(node.name or node.output[0])
    return kernels
