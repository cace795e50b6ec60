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
from typing import Any, Optional, Union

import numpy as np

__all__ = [
    "FLOAT_LAYER_OPS",
    "INTEGER_OPS",
    "OrtKernels",
    "QdqPlacement",
    "conv_output_qparams",
    "ort_kernels",
    "place_qdq_for_ort",
]

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
        ops: Every op type of the optimized graph -> count (``QLinearAdd``: residual adds run on uint8 values).
    """

    integer: collections.Counter = field(default_factory=collections.Counter)
    float_layers: collections.Counter = field(default_factory=collections.Counter)
    float_nodes: list[str] = field(default_factory=list)
    ops: collections.Counter = field(default_factory=collections.Counter)

    @property
    def integer_count(self) -> int:
        return sum(self.integer.values())

    @property
    def float_count(self) -> int:
        return sum(self.float_layers.values())

    def summary(self) -> str:
        ints = ", ".join(f"{k} {v}" for k, v in sorted(self.integer.items())) or "none"
        floats = ", ".join(f"{k} {v}" for k, v in sorted(self.float_layers.items())) or "none"
        other = ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items()) if k.startswith("QLinear") and k not in
                          self.integer)  # fmt: skip
        return f"integer kernels: {ints}; float layers: {floats}" + (f"; other quantized ops: {other}" if other else "")


@dataclass
class QdqPlacement:
    """What :func:`place_qdq_for_ort` changed.

    Attributes:
        rewrites: Nodes rewritten or added in all (Gemm biases, pads, convolution outputs).
        quantized_conv_outputs: The convolutions read in float that were given a calibrated quantized output (they
            run as ``QLinearConv``).
        conv_integer: Those rewritten as ``ConvInteger`` instead (no calibration batches).
    """

    rewrites: int = 0
    quantized_conv_outputs: list[str] = field(default_factory=list)
    conv_integer: list[str] = field(default_factory=list)


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


def place_qdq_for_ort(model: Any, calibration: Optional[list] = None) -> QdqPlacement:
    """Place the Q/DQ nodes of an INT8 export where ONNX Runtime fuses them into integer kernels, in place.

    Every ``Gemm(DQ(x), DQ(w), bias)`` whose output is read in float gets an int32 dequantized bias (``QGemm``);
    zero pads move to the quantized side of their Q / DQ (``QLinearConv`` after timm's "same" padding); every
    convolution read in float (before a residual add) gets a quantized output whose range is observed on
    ``calibration`` (``QLinearConv``, and ``QLinearAdd`` for the add), or, without calibration batches, is rewritten as
    ``ConvInteger`` (exact, but slow in ONNX Runtime).

    Args:
        model: An ``onnx.ModelProto`` of an INT8 export.
        calibration: Model inputs, one batch each (:func:`conv_output_qparams`), or None.

    Returns:
        :class:`QdqPlacement`.

    Raises:
        ValueError: If a calibration batch does not match the graph's inputs.
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
    if rewritten:
        _topological_sort(graph)
    qparams = conv_output_qparams(model, calibration) if calibration else {}
    quantized, conv_integer = _float_output_convs(graph, qparams)
    if quantized or conv_integer:
        _topological_sort(graph)
    return QdqPlacement(rewritten + len(quantized) + len(conv_integer), quantized, conv_integer)


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


def _float_read_convs(graph: Any) -> list[Any]:
    """The ``Conv(DQ(x), DQ(w), b)`` nodes whose output is read in float (before a residual add): ONNX Runtime fuses
    a convolution into ``QLinearConv`` only when a ``QuantizeLinear`` reads its output."""
    producers, users = _producers(graph), _consumers(graph)
    convs = []
    for conv in graph.node:
        if conv.op_type != "Conv" or len(conv.input) < 2:
            continue
        x, w = producers.get(conv.input[0]), producers.get(conv.input[1])
        if not (x is not None and w is not None and x.op_type == w.op_type == "DequantizeLinear"):
            continue
        if not _quantized_output(users.get(conv.output[0], []), users):
            convs.append(conv)
    return convs


def conv_output_qparams(model: Any, batches: list, max_batches: int = 32) -> dict[str, tuple[float, int]]:
    """The uint8 per-tensor quantization (scale, zero point) of the output of every convolution of an INT8 ONNX graph
    that is read in float, observed on calibration batches.

    The graph is run by an ONNX Runtime CPU session (as it will run it: the other layers fused into integer
    kernels), the outputs of those convolutions (``(N, C, H, W)`` each) are fed to the library's default
    activation observer (torchao's ``HistogramObserver``: uint8 affine, the range of least L2 quantization error, no
    scale below 2^-12, as ``quantize(observer="histogram")``), and its scale and zero point are returned.

    Args:
        model: An ``onnx.ModelProto`` of an INT8 export (not modified).
        batches: Model inputs, one batch each: a tensor, a tuple of positional inputs or a dict by input name (the
            ONNX graph's input names: ``input`` / ``input_<i>`` or the keys of a dict batch).
        max_batches: At most this many batches are run.

    Returns:
        Conv output name -> ``(scale, zero_point)``; empty when no convolution is read in float.

    Raises:
        ValueError: If a batch does not match the graph's inputs (the message names the batch and the inputs).

    Example:
        >>> qparams = conv_output_qparams(proto, [torch.randn(8, 3, 224, 224)])  # doctest: +SKIP
        >>> qparams["conv2d_5"]  # doctest: +SKIP
        (0.0713, 131)
    """
    import onnx
    import torch
    from torchao.quantization.pt2e.observer import HistogramObserver

    from lightning_compress.export.onnx_runtime import OnnxModel

    graph_outputs = {o.name for o in model.graph.output}
    initializers = {t.name: t for t in model.graph.initializer}
    producers = _producers(model.graph)
    ranks = {}  # output name -> rank (that of the weight)
    for conv in _float_read_convs(model.graph):
        weight = _constant(producers[conv.input[1]].input[0], initializers, producers)
        if conv.output[0] not in graph_outputs and weight is not None:
            ranks[conv.output[0]] = weight.ndim
    names = list(ranks)
    if not names:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [f"{n}_d{i}" for i in range(ranks[n])])
        for n in names
    )
    observers = {n: HistogramObserver(dtype=torch.uint8, quant_min=0, quant_max=255, qscheme=torch.per_tensor_affine,
                                      eps=2**-12) for n in names}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "calibration.onnx"
        onnx.save_model(probe, str(path))
        runner = OnnxModel(path, what="the INT8 graph being calibrated")
        for i, batch in enumerate(batches[:max_batches]):
            try:
                outputs = runner.session.run(names, runner.feeds(batch))
            except Exception as err:  # ValueError of the feeds, ORT's InvalidArgument / Fail on a wrong shape
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ValueError(
                    f"`calibration_data` batch {i} does not fit the exported graph (inputs {runner.inputs}): {first}"
                ) from None
            for name, value in zip(names, outputs):
                observers[name](torch.from_numpy(np.ascontiguousarray(value)))
    qparams = {}
    for name, observer in observers.items():
        scale, zero = observer.calculate_qparams()
        qparams[name] = (float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0]))
    return qparams


def _quantize_conv_output(graph: Any, conv: Any, scale: float, zero_point: int) -> None:
    """``Conv -> float readers`` -> ``Conv -> QuantizeLinear -> DequantizeLinear -> float readers``: ONNX Runtime then
    fuses the convolution into ``QLinearConv`` (and a following ``Add`` of two dequantized values whose output is
    quantized into ``QLinearAdd``)."""
    from onnx import helper, numpy_helper

    out = conv.output[0]
    base = conv.name or out
    graph.initializer.extend([
        numpy_helper.from_array(np.asarray(scale, dtype=np.float32), f"{base}_output_scale"),
        numpy_helper.from_array(np.asarray(zero_point, dtype=np.uint8), f"{base}_output_zero_point"),
    ])  # fmt: skip
    readers = [n for n in graph.node if out in n.input]
    qparams = [f"{base}_output_scale", f"{base}_output_zero_point"]
    graph.node.append(helper.make_node("QuantizeLinear", [out, *qparams], [f"{out}_quantized"],
                                       name=f"{base}_output_QuantizeLinear"))  # fmt: skip
    graph.node.append(helper.make_node("DequantizeLinear", [f"{out}_quantized", *qparams], [f"{out}_dequantized"],
                                       name=f"{base}_output_DequantizeLinear"))  # fmt: skip
    for reader in readers:
        for i, name in enumerate(reader.input):
            if name == out:
                reader.input[i] = f"{out}_dequantized"


def _float_output_convs(graph: Any, qparams: Optional[dict[str, tuple[float, int]]] = None) -> tuple[list, list]:
    """Make every convolution read in float (before a residual add) run integer in ONNX Runtime.

    With an observed range in ``qparams`` (:func:`conv_output_qparams`), its output gets a QuantizeLinear /
    DequantizeLinear pair (:func:`_quantize_conv_output`): ``QLinearConv``, the output rounded to that uint8 grid.
    Without one: ``Conv(DQ(x), DQ(w), b)`` -> ``ConvInteger(x, w) * (s_x * s_w) + b``: ONNX Runtime has no
    float-output integer convolution to fuse it into, but runs ``ConvInteger`` integer (slowly: it is not fused with
    the scaling); the int32 sums are exact, so the values are those of the dequantized convolution.

    Returns:
        ``(quantized, conv_integer)``: the names of the convolutions given a quantized output and of those rewritten
        as ``ConvInteger``.
    """
    from onnx import TensorProto, helper, numpy_helper

    qparams = qparams or {}
    initializers = {t.name: t for t in graph.initializer}
    producers = _producers(graph)
    graph_outputs = {o.name for o in graph.output}
    quantized: list[str] = []
    conv_integer: list[str] = []
    for conv in _float_read_convs(graph):
        base = conv.name or conv.output[0]
        if conv.output[0] in qparams and conv.output[0] not in graph_outputs:
            _quantize_conv_output(graph, conv, *qparams[conv.output[0]])
            quantized.append(base)
            continue
        x, w = producers[conv.input[0]], producers[conv.input[1]]
        xs, xz = (_constant(n, initializers, producers) for n in (x.input[1], x.input[2]))
        ws, wz = (_constant(n, initializers, producers) for n in (w.input[1], w.input[2]))
        wq = _constant(w.input[0], initializers, producers)
        if xs is None or xz is None or ws is None or wq is None or xs.size != 1 or xz.size != 1:
            continue
        bias = _constant(conv.input[2], initializers, producers) if len(conv.input) > 2 and conv.input[2] else None
        if (wz is not None and bool(np.any(wz != 0))) or (bias is None and len(conv.input) > 2 and conv.input[2]):
            continue
        channels = wq.shape[0]
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
        conv_integer.append(base)
    return quantized, conv_integer


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
        kernels.ops[node.op_type] += 1
        if node.op_type in INTEGER_OPS:
            kernels.integer[node.op_type] += 1
        elif node.op_type in FLOAT_LAYER_OPS and len(node.input) > 1 and node.input[1] in constants:
            kernels.float_layers[node.op_type] += 1
            kernels.float_nodes.append(node.name or node.output[0])
    return kernels
