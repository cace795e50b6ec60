"""Layers of a converted INT8 graph put back in float, one by one, without exporting or calibrating again: what the
sensitivity analysis and the accuracy-budget search try.

``convert_pt2e`` turns each quantized Conv / Linear ``op(x, w)`` into ``op(dequantize(quantize(x)),
dequantize(w_int8))``. :func:`layer_sites` records, before conversion, the float weight each op reads (after
Conv + BatchNorm folding) and the op's node name; :func:`with_float_layers` gives the named ops their float weight and
the value before their input's quantize step. Their outputs are quantized where the next layer reads them quantized,
exactly as a layer kept in float by the quantizer would be.

Example:
    >>> sites = layer_sites(prepared, ["features.0", "classifier.4"])  # doctest: +SKIP
    >>> mixed = with_float_layers(converted, sites, ["classifier.4"])  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["LayerSite", "layer_sites", "with_float_layers"]

_OPS = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}


@dataclass
class LayerSite:
    """Where a quantized layer sits in the graph: its op node's name and its float (BN-folded) weight."""

    fqn: str
    node: str
    weight: Tensor


def _tensor(gm: torch.nn.Module, target: str) -> Tensor:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def layer_sites(prepared: torch.fx.GraphModule, layers: Sequence[str]) -> dict[str, LayerSite]:
    """The op node and float weight of each of ``layers`` in a prepared (calibrated, not yet converted) graph.

    The weight is read where its observer reads it (after Conv + BatchNorm folding) and cloned. Layers whose weight
    reaches its op without an observer (not quantized) are left out.
    """
    wanted = {f"{fqn}.weight": fqn for fqn in layers}
    sites: dict[str, LayerSite] = {}
    for node in prepared.graph.nodes:
        if node.op != "get_attr" or str(node.target) not in wanted:
            continue
        frontier, seen = [(user, False) for user in node.users], 0
        while frontier and seen < 16:
            user, observed = frontier.pop(0)
            seen += 1
            if observed and user.op == "call_function" and getattr(user.target, "_opname", None) in _OPS:
                fqn = wanted[str(node.target)]
                sites[fqn] = LayerSite(fqn, user.name, _tensor(prepared, str(node.target)).detach().clone())
                break
            if user.op == "call_module":  # the weight's observer: the op after it reads a quantized weight
                frontier.extend((u, True) for u in user.users)
    return sites


def _is(node: Any, names: tuple[str, ...]) -> bool:
    return (
        isinstance(node, torch.fx.Node)
        and node.op == "call_function"
        and getattr(node.target, "_opname", None) in names
    )


_QDQ = ("quantize_per_tensor", "dequantize_per_tensor", "dequantize_per_channel", "choose_qparams")


def _float_input(x: Any) -> Any:
    """The value before ``dequantize(quantize(value))`` (static or dynamic), or ``x`` if it is not that."""
    if _is(x, ("dequantize_per_tensor",)) and _is(x.args[0], ("quantize_per_tensor",)):
        return x.args[0].args[0]
    return x


def _erase_unused(graph: torch.fx.Graph, nodes: list[Any]) -> None:
    """Erase the quantize / dequantize ops and constants among ``nodes`` (and what fed them) that nothing reads now."""
    while nodes:
        node = nodes.pop()
        if not isinstance(node, torch.fx.Node) or node.users or node.op not in ("get_attr", "call_function"):
            continue
        if node.op == "call_function" and not (_is(node, _QDQ) or node.target is operator.getitem):
            continue
        nodes.extend(a for a in node.all_input_nodes)
        graph.erase_node(node)


# ops that only move, select or max values: a quantize step before them matters only for what reads their output
_TRANSPARENT = {
    "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_avg_pool2d", "avg_pool2d", "flatten", "view", "reshape",
    "permute", "transpose", "dropout", "clone", "relu", "relu_", "contiguous", "select", "slice", "squeeze",
    "unsqueeze", "hardtanh", "hardtanh_", "mean",
}  # fmt: skip


def _feeds_only(node: torch.fx.Node, float_ops: set[str], depth: int = 0) -> bool:
    """Whether every path from ``node`` through transparent ops and quantize steps ends at an op of ``float_ops``."""
    if depth > 32 or not node.users:
        return False
    for user in node.users:
        if user.name in float_ops:
            continue
        passes = _is(user, _QDQ) or (
            user.op == "call_function" and getattr(user.target, "_opname", None) in _TRANSPARENT
        )
        if not (passes and _feeds_only(user, float_ops, depth + 1)):
            return False
    return True


def _strip_pointless_qdq(graph: torch.fx.Graph, float_ops: set[str]) -> None:
    """Drop ``dequantize(quantize(x))`` pairs whose every reader is, through transparent ops, a layer now in float."""
    changed = True
    while changed:
        changed = False
        for dq in list(graph.nodes):
            if not (_is(dq, ("dequantize_per_tensor",)) and _is(dq.args[0], ("quantize_per_tensor",))):
                continue
            if _feeds_only(dq, float_ops):
                q = dq.args[0]
                dq.replace_all_uses_with(q.args[0])
                _erase_unused(graph, [dq])
                changed = True


def with_float_layers(
    converted: torch.fx.GraphModule, sites: Mapping[str, LayerSite], layers: Sequence[str]
) -> torch.fx.GraphModule:
    """A copy of ``converted`` (from ``convert_pt2e``) in which ``layers`` compute in float.

    Args:
        converted: The converted reference graph (not modified).
        sites: From :func:`layer_sites` on the graph it was converted from.
        layers: Qualified names of layers to put back in float.

    Returns:
        The new graph (quantize / dequantize ops in float, like ``converted``); tensors no longer read are left for
        :func:`~lightning_compress.quantization.pt2e.finish_int8` to drop.

    Raises:
        KeyError: If a layer has no site (it was not quantized).
    """
    graph_module = copy.deepcopy(converted)
    nodes = {n.name: n for n in graph_module.graph.nodes}
    for k, fqn in enumerate(layers):
        site = sites[fqn]
        op = nodes[site.node]
        name = f"_lc_float_weight_{k}"
        graph_module.register_buffer(name, site.weight.clone())
        with graph_module.graph.inserting_before(op):
            weight = graph_module.graph.get_attr(name)
        old = [op.args[0], op.args[1]]
        op.args = (_float_input(op.args[0]), weight, *op.args[2:])
        _erase_unused(graph_module.graph, old)
    _strip_pointless_qdq(graph_module.graph, {sites[fqn].node for fqn in layers})
    graph_module.graph.lint()
    graph_module.recompile()
    return graph_module
