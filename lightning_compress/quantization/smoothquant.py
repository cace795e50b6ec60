"""SmoothQuant (Xiao et al., 2023): move activation outliers of Linear inputs into the weights before INT8
quantization, as an exact re-parametrisation of the float model.

A Linear's input ``X (tokens, C)`` with a few large channels quantizes badly per tensor (one scale for every channel),
while its weight ``W (out, C)`` is quantized per output channel and has room. With a per-input-channel scale
``s_j = max|X_j| ** alpha / max|W_:,j| ** (1 - alpha)``, ``X W^T = (X / s) (W * s)^T`` exactly: the input's range
is flattened and the weight takes the difference. ``alpha`` = 0 leaves the activations alone (the weights' ranges
decide), 1 moves all of it into the weights; 0.5 is the paper's default for most models.

The pass works on the exported graph (``aten.linear`` nodes), so it sees which Linear layers share one input (a
BERT layer's query, key and value) and gives them one scale. The division by ``s`` is folded into the op that makes
the input when nothing else reads that output (a LayerNorm's weight and bias, or a preceding Linear's output rows,
through dropout in evaluation mode): then it is free. Otherwise (BERT is post-LN: every LayerNorm output also feeds the
residual connection) one per-channel multiply ``X * (1 / s)`` is inserted before the group, which Inductor fuses
into the INT8 quantize step that follows it. Either way the float graph computes the same function.

Example:
    >>> stats = input_absmax(model, batches, ["encoder.layer.0.attention.self.query"])  # doctest: +SKIP
    >>> report = smooth_graph_(graph_module, stats, alpha=0.5)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lightning_compress.core.batches import call_model

__all__ = ["SmoothQuantReport", "input_absmax", "smooth_graph_", "smoothing_scales"]

_PASSTHROUGH = {torch.ops.aten.clone.default, torch.ops.aten.alias.default}


@dataclass
class SmoothQuantReport:
    """What :func:`smooth_graph_` did.

    Attributes:
        alpha: The migration strength.
        folded: ``{producer: [linear fqns]}``: groups whose scale was folded into the producing LayerNorm / Linear.
        multiplied: Groups (lists of linear fqns) that got an inserted per-channel multiply.
        max_ratio: ``{first fqn of a group: max|X| / median max|X_j|}`` before smoothing (how outlying the worst
            channel was).
    """

    alpha: float
    folded: dict[str, list[str]] = field(default_factory=dict)
    multiplied: list[list[str]] = field(default_factory=list)
    max_ratio: dict[str, float] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        """Every smoothed Linear layer."""
        return [f for group in self.folded.values() for f in group] + [f for group in self.multiplied for f in group]


def smoothing_scales(act_absmax: Tensor, weight_absmax: Tensor, alpha: float) -> Tensor:
    """Per-input-channel SmoothQuant scales ``s_j = a_j ** alpha / w_j ** (1 - alpha)``.

    Args:
        act_absmax: ``(C,)`` max |X_j| over the calibration batches.
        weight_absmax: ``(C,)`` max |W_:,j| over the output rows of every Linear reading that input.
        alpha: Migration strength in ``[0, 1]``.

    Returns:
        ``(C,)`` float32 scales; 1 where a channel is all zero in the activations or the weights (nothing to move).

    Example:
        >>> smoothing_scales(torch.tensor([100.0, 1.0]), torch.tensor([1.0, 1.0]), 0.5)
        tensor([10.,  1.])
    """
    a = act_absmax.detach().float()
    w = weight_absmax.detach().float()
    s = a.pow(alpha) / w.pow(1.0 - alpha)
    ok = (a > 0) & (w > 0) & torch.isfinite(s)
    return torch.where(ok, s.clamp(min=1e-5, max=1e5), torch.ones_like(s))


@torch.no_grad()
def input_absmax(model: nn.Module, batches: Iterable[Any], layers: Sequence[str]) -> dict[str, Tensor]:
    """``{fqn: (in_features,)}`` max |input| per channel of the named ``nn.Linear`` layers, over ``batches``.

    Args:
        model: The float model (called in evaluation mode; its mode is restored).
        batches: Model inputs (tensor, tuple or dict each), as :func:`~lightning_compress.core.batches.call_model`
            takes them.
        layers: Qualified names of ``nn.Linear`` submodules; others are ignored.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> input_absmax(net, [torch.tensor([[3.0, -5.0]])], ["0"])["0"]
        tensor([3., 5.])
    """
    stats: dict[str, Tensor] = {}
    handles = []

    def hook(name: str) -> Any:
        def record(module: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            amax = x.abs().reshape(-1, x.shape[-1]).amax(dim=0).float()
            stats[name] = torch.maximum(stats[name], amax) if name in stats else amax

        return record

    for name in layers:
        sub = model.get_submodule(name)
        if isinstance(sub, nn.Linear):
            handles.append(sub.register_forward_pre_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        for inputs in batches:
            call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return stats


def _attr(gm: torch.fx.GraphModule, target: str) -> Tensor:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _set_attr(gm: torch.fx.GraphModule, target: str, value: Tensor) -> None:
    """Replace the tensor at ``target`` by a new one (never in place: the graph may share storage with the model)."""
    owner, _, name = target.rpartition(".")
    module = gm.get_submodule(owner) if owner else gm
    if name in module._parameters:
        module._parameters[name] = nn.Parameter(value, requires_grad=False)
    else:
        module._buffers[name] = value


def _weight_target(node: torch.fx.Node) -> str | None:
    weight = node.args[1] if len(node.args) > 1 else None
    return str(weight.target) if isinstance(weight, torch.fx.Node) and weight.op == "get_attr" else None


def _bias_target(node: torch.fx.Node, index: int) -> str | None:
    bias = node.args[index] if len(node.args) > index else None
    return str(bias.target) if isinstance(bias, torch.fx.Node) and bias.op == "get_attr" else None


def _producer(x: torch.fx.Node, group: set[torch.fx.Node]) -> torch.fx.Node | None:
    """The node whose output reaches only ``group`` (through eval-mode dropout / clone), or None."""
    node, readers = x, group
    while True:
        if set(node.users) != readers:
            return None
        is_dropout = node.target is torch.ops.aten.dropout.default and len(node.args) >= 3 and node.args[2] is False
        if (node.target in _PASSTHROUGH or is_dropout) and isinstance(node.args[0], torch.fx.Node):
            node, readers = node.args[0], {node}
            continue
        return node


def _fold(gm: torch.fx.GraphModule, producer: torch.fx.Node, inv: Tensor) -> str | None:
    """Fold ``x / s`` into a LayerNorm's affine parameters or a Linear's output rows; the producer's name, or None."""
    if producer.target is torch.ops.aten.layer_norm.default:
        weight, bias = _bias_target(producer, 2), _bias_target(producer, 3)
        shape = producer.args[1]
        if weight is None or bias is None or list(shape) != [inv.numel()]:
            return None
        _set_attr(gm, weight, _attr(gm, weight).detach() * inv)
        _set_attr(gm, bias, _attr(gm, bias).detach() * inv)
        return weight.rsplit(".", 1)[0]
    if producer.target is torch.ops.aten.linear.default:
        weight, bias = _weight_target(producer), _bias_target(producer, 2)
        if weight is None or _attr(gm, weight).shape[0] != inv.numel():
            return None
        _set_attr(gm, weight, _attr(gm, weight).detach() * inv[:, None])
        if bias is not None:
            _set_attr(gm, bias, _attr(gm, bias).detach() * inv)
        return weight.rsplit(".", 1)[0]
    return None


def smooth_graph_(
    gm: torch.fx.GraphModule,
    act_absmax: Mapping[str, Tensor],
    alpha: float = 0.5,
    layers: Sequence[str] | None = None,
) -> SmoothQuantReport:
    """Apply SmoothQuant to the ``aten.linear`` nodes of an exported graph, in place (an exact re-parametrisation).

    Args:
        gm: A graph from ``torch.export.export(...).module()``, before quantization. Its tensors are replaced, never
            written in place (the graph shares storage with the model it was exported from, which stays unchanged).
        act_absmax: ``{linear fqn: (in_features,)}`` from :func:`input_absmax`.
        alpha: Migration strength in ``[0, 1]``.
        layers: The Linear fqns to smooth (default: every one in ``act_absmax``).

    Returns:
        A :class:`SmoothQuantReport`.

    Raises:
        ValueError: If ``alpha`` is outside ``[0, 1]``.

    Example:
        >>> gm = torch.export.export(model, (x,)).module()  # doctest: +SKIP
        >>> smooth_graph_(gm, input_absmax(model, [x], ["fc"]), alpha=0.5).layers  # doctest: +SKIP
        ['fc']
    """
    if not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
        raise ValueError(f"`alpha` must be a number in [0, 1], got {alpha!r}")
    chosen = set(act_absmax if layers is None else layers) & set(act_absmax)
    groups: dict[torch.fx.Node, list[tuple[torch.fx.Node, str]]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target is not torch.ops.aten.linear.default:
            continue
        target = _weight_target(node)
        fqn = target.rsplit(".", 1)[0] if target and target.endswith(".weight") else None
        if fqn in chosen and isinstance(node.args[0], torch.fx.Node):
            groups.setdefault(node.args[0], []).append((node, fqn))
    report = SmoothQuantReport(alpha=float(alpha))
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    for k, (x, members) in enumerate(groups.items()):
        weights = [_attr(gm, f"{fqn}.weight") for _, fqn in members]
        if len({w.shape[1] for w in weights}) != 1:
            continue
        act = torch.stack([act_absmax[fqn] for _, fqn in members]).amax(0)
        w_max = torch.stack([w.detach().abs().amax(0) for w in weights]).amax(0).float()
        if act.numel() != w_max.numel():
            continue
        s = smoothing_scales(act, w_max, alpha)
        names = [fqn for _, fqn in members]
        report.max_ratio[names[0]] = float(act.max() / act.median().clamp(min=1e-12))
        for w, (_, fqn) in zip(weights, members):
            _set_attr(gm, f"{fqn}.weight", w.detach() * s.to(w.dtype))
        inv = (1.0 / s).to(weights[0].dtype)
        producer = _producer(x, {node for node, _ in members})
        folded = _fold(gm, producer, inv) if producer is not None else None
        if folded is not None:
            report.folded[folded] = names
            continue
        name = f"smoothquant_inv_scale_{k}"
        gm.register_buffer(name, inv)
        first = min((node for node, _ in members), key=order.__getitem__)
        with gm.graph.inserting_before(first):
            const = gm.graph.get_attr(name)
            scaled = gm.graph.call_function(torch.ops.aten.mul.Tensor, (x, const))
        val = x.meta.get("val")
        if val is not None and getattr(val, "fake_mode", None) is not None:  # the quantizer reads shapes from meta
            const.meta["val"] = val.fake_mode.from_tensor(inv, static_shapes=True)
            scaled.meta["val"] = val
        for node, _ in members:
            node.args = (scaled, *node.args[1:])
        report.multiplied.append(names)
    gm.graph.lint()
    gm.recompile()
    return report
