"""What a converted INT8 graph (PT2E: ``convert_to_int8``, ``quantize``) holds, read layer by layer: the int8 weight,
its per-channel scales, the quantization of the layer's input and whether its output is quantized, keyed by the
layer's module path. The exporters read the graph through this module (ONNX counts the layers that must run integer,
compressed-tensors writes them as ``int-quantized`` Linear layers).

``convert_pt2e`` turns each quantized Linear / Conv ``op(x, w, b)`` into ``op(dequantize_per_tensor(q), dequantize_per_
channel(w_int8, s, z), b)``, where ``q`` is an earlier ``quantize_per_tensor`` of the input (or the uint8 output of a
max-pool on quantized values); the op node keeps the ``nn_module_stack`` of the layer it came from, which names it.

Example:
    >>> layers = int8_layers(int8_model)  # doctest: +SKIP
    >>> layers["classifier.1"].weight.dtype, layers["classifier.1"].weight_scale.shape  # doctest: +SKIP
    (torch.int8, torch.Size([128]))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

__all__ = ["Int8Layer", "int8_layers", "is_int8_graph", "reference_graph", "stray_quantized_ops"]

_LAYER_OPS = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_DECOMPOSED = "quantized_decomposed"


@dataclass
class Int8Layer:
    """One quantized layer of a converted INT8 graph.

    Attributes:
        fqn: The layer's module path in the float model (``classifier.1``).
        op: ``"linear"``, ``"conv2d"``, ...
        node: The op node's name in the graph.
        weight: int8 ``(out, in, ...)`` (BatchNorm folded for a convolution).
        weight_scale: float32 ``(out,)``.
        weight_zero_point: int64 ``(out,)`` (zeros: symmetric).
        bias: The float bias ``(out,)`` or None.
        input_scale, input_zero_point: The per-tensor quantization of the input (static), or None (dynamic).
        input_range: ``(quant_min, quant_max)`` of the input (``(0, 255)``: uint8).
        output_quantized: Whether every user of the output is a quantize op (the output is stored quantized).
    """

    fqn: str
    op: str
    node: str
    weight: Tensor
    weight_scale: Tensor
    weight_zero_point: Tensor
    bias: Optional[Tensor]
    input_scale: Optional[float]
    input_zero_point: Optional[int]
    input_range: tuple[int, int]
    output_quantized: bool


def _is_op(node: Any, name: str) -> bool:
    target = getattr(node, "target", None)
    return (
        isinstance(node, torch.fx.Node)
        and node.op == "call_function"
        and getattr(target, "namespace", None) == _DECOMPOSED
        and getattr(target, "_opname", None) == name
    )


def is_int8_graph(model: Any) -> bool:
    """Whether ``model`` (or the graph a :class:`~lightning_compress.quantization.pt2e.FrozenInt8` wraps) is a
    converted graph calling ``quantized_decomposed`` quantize / dequantize ops.

    Example:
        >>> is_int8_graph(torch.nn.Linear(2, 2))
        False
    """
    graph = getattr(model, "_orig_mod", model)
    if not isinstance(graph, torch.fx.GraphModule):
        return False
    return any(
        getattr(n.target, "namespace", None) == _DECOMPOSED for n in graph.graph.nodes if n.op == "call_function"
    )


def reference_graph(model: nn.Module) -> torch.fx.GraphModule:
    """The converted graph of an INT8 model: ``model`` itself, or the graph a ``FrozenInt8`` compiles.

    Raises:
        TypeError: If ``model`` is no converted INT8 graph (the message says what it is).
    """
    graph = getattr(model, "_orig_mod", model)
    if not is_int8_graph(graph):
        raise TypeError(
            f"expected an INT8 model of convert_to_int8 / quantize (a graph of quantize / dequantize ops), got"
            f" {type(model).__name__}"
        )
    return graph


def _value(graph_module: torch.fx.GraphModule, arg: Any) -> Any:
    """A constant argument: a Python number, or the tensor a ``get_attr`` node reads."""
    if isinstance(arg, torch.fx.Node) and arg.op == "get_attr":
        value: Any = graph_module
        for part in str(arg.target).split("."):
            value = getattr(value, part)
        return value.detach()
    if isinstance(arg, torch.fx.Node):
        raise ValueError(f"{arg.name} is computed in the graph, not a constant")
    return arg


def _scalar(graph_module: torch.fx.GraphModule, arg: Any) -> float:
    value = _value(graph_module, arg)
    return float(value.reshape(-1)[0]) if isinstance(value, Tensor) else float(value)


def _fqn(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return node.name
    path = list(stack.values())[-1][0]
    for prefix in ("L['self'].", "L__self__."):
        path = path.removeprefix(prefix)
    return path.replace("L['self']", "").strip(".") or node.name


def int8_layers(model: nn.Module) -> dict[str, Int8Layer]:
    """The quantized Linear / Conv layers of an INT8 model, in graph order, by module path.

    A layer whose weight reaches its op through ``dequantize_per_channel`` of an int8 constant is quantized; its input
    quantization is read from the ``dequantize_per_tensor`` before it (a ``.tensor`` overload of a dynamic scheme gives
    ``input_scale=None``).

    Raises:
        TypeError: If ``model`` is no converted INT8 graph.

    Example:
        >>> sorted(int8_layers(quantize(net, x, compile=False)))  # doctest: +SKIP
        ['0', '3']
    """
    graph_module = reference_graph(model)
    layers: dict[str, Int8Layer] = {}
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or getattr(node.target, "_opname", None) not in _LAYER_OPS or len(node.args) < 2:
            continue
        x, w = node.args[0], node.args[1]
        if not _is_op(w, "dequantize_per_channel"):
            continue
        weight = _value(graph_module, w.args[0])
        scale = _value(graph_module, w.args[1]).float().reshape(-1)
        zero = _value(graph_module, w.args[2]).reshape(-1).to(torch.int64)
        bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        bias_value = _value(graph_module, bias).float() if isinstance(bias, torch.fx.Node) else None
        input_scale = input_zero = None
        input_range = (0, 255)
        if _is_op(x, "dequantize_per_tensor"):
            if getattr(x.target, "_overloadname", "") == "default":
                input_scale, input_zero = _scalar(graph_module, x.args[1]), int(_scalar(graph_module, x.args[2]))
            input_range = (int(_scalar(graph_module, x.args[3])), int(_scalar(graph_module, x.args[4])))
        elif not _is_op(x, "dequantize_per_token"):
            continue  # the weight is quantized but the input is not: a weight-only layer, not INT8
        fqn = _fqn(node)
        output_quantized = bool(node.users) and all(_is_op(u, "quantize_per_tensor") for u in node.users)
        layers[fqn] = Int8Layer(fqn, str(node.target._opname), node.name, weight.to(torch.int8), scale, zero,
                                bias_value, input_scale, input_zero, input_range, output_quantized)  # fmt: skip
    return layers


def stray_quantized_ops(model: nn.Module) -> list[str]:
    """The quantize / dequantize steps of an INT8 graph that are not the inputs or weights of a quantized Linear / Conv
    (a quantized max-pool, add or concatenation): ``"<node> (<op> feeding <user op>)"``, for formats that can only
    hold quantized layers.

    Example:
        >>> stray_quantized_ops(int8_bert)  # doctest: +SKIP
        []
    """
    graph_module = reference_graph(model)
    stray = []
    for node in graph_module.graph.nodes:
        if not _is_op(node, "dequantize_per_tensor"):
            continue
        for user in node.users:
            name = getattr(user.target, "_opname", None) or str(user.target)
            if not (name in _LAYER_OPS and user.args and user.args[0] is node):
                stray.append(f"{node.name} (a dequantize feeding {name} {user.name})")
    return stray
