"""What a checkpoint or model holds (the report ``lc-report`` prints): per-layer sparsity, 2:4 compliance, quantization
and the bytes each storage form would take. :func:`sparsity_report` is the same report over the weights a pruning
callback selects.

For every Linear/Conv weight (every weight of 2 or more dimensions in a bare state dict) a :class:`LayerRow` gives the
shape, the non-zeros, whether it is 2:4 along its input dimension, whether and how it is quantized, and its size in
four forms, with ``n`` elements, ``k`` non-zeros and ``c`` output channels:

=====================  ===================================  =========================================================
form                   bytes                                what realises it
=====================  ===================================  =========================================================
dense fp32             ``4 n``                              ``torch.save`` of the float model
sparse (bitmask)       ``ceil(n / 8) + 4 k``                ``save_compressed`` (:mod:`~lightning_compress.export`)
INT8                   ``n + 4 c``                          int8 values, one fp32 scale per output channel
sparse + INT8          ``ceil(n / 8) + k + 4 c``            ``save_compressed(..., int8=True)``
=====================  ===================================  =========================================================

The other tensors (biases, normalisation parameters and statistics, quantization scales) are added to every total at
their stored size. Sources understood: a module (also a QAT-prepared graph, whose fake-quantized weights are marked,
a PT2E-converted INT8 graph or ``torch.export`` program, whose int8 weights are mapped back to their layer names, and
torchao-quantized modules), a state dict, a Lightning checkpoint, and a file of
:func:`~lightning_compress.export.compressed_format.save_compressed`.

Example:
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 4, bias=False))
    >>> with torch.no_grad():
    ...     net[0].weight[:, 1::2] = 0.0
    >>> rep = compression_report(net)
    >>> rep.layers[0].sparsity, rep.layers[0].nm_2_4, rep.totals()["sparse (bitmask)"]
    (0.5, True, 68)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from lightning_compress.core.selection import FilterFn, prunable_weights
from lightning_compress.core.validation import check_materialized
from lightning_compress.quantization.qat_modes import is_prepared
from lightning_compress.sparsity.nm_masks import is_nm_sparse

__all__ = ["CompressionReport", "LayerRow", "compression_report", "sparsity_report"]

FORMS = ("dense fp32", "sparse (bitmask)", "INT8", "sparse + INT8")
_GEMM_OPS = ("aten.linear", "aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.conv_transpose", "aten.matmul")
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class LayerRow:
    """One weight. ``quantized`` is ``""`` for float weights, else how (``"int8"``, ``"int8 fake-quant (QAT)"``...)."""

    name: str
    layer: str
    shape: tuple[int, ...]
    numel: int
    nonzeros: int
    nm_2_4: Optional[bool]  # None: the input dimension is not a multiple of 4
    quantized: str = ""

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.numel if self.numel else 0.0

    @property
    def channels(self) -> int:
        return self.shape[0] if self.shape else 1

    def bytes(self) -> dict[str, int]:
        """Size in each of :data:`FORMS`."""
        n, k, c, bits = self.numel, self.nonzeros, self.channels, (self.numel + 7) // 8
        return {
            "dense fp32": 4 * n,
            "sparse (bitmask)": bits + 4 * k,
            "INT8": n + 4 * c,
            "sparse + INT8": bits + k + 4 * c,
        }


@dataclass(frozen=True)
class CompressionReport:
    """Per-layer rows, the parameter count, the bytes of everything else, and notes about the source."""

    layers: list[LayerRow] = field(default_factory=list)
    parameters: int = 0
    other_bytes: int = 0
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def numel(self) -> int:
        return sum(r.numel for r in self.layers)

    @property
    def nonzeros(self) -> int:
        return sum(r.nonzeros for r in self.layers)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.numel if self.numel else 0.0

    def totals(self) -> dict[str, int]:
        """Bytes of the whole model in each form (layers in that form, the rest as stored)."""
        return {form: sum(r.bytes()[form] for r in self.layers) + self.other_bytes for form in FORMS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "parameters": self.parameters,
            "layer_numel": self.numel,
            "nonzeros": self.nonzeros,
            "sparsity": self.sparsity,
            "other_bytes": self.other_bytes,
            "bytes": self.totals(),
            "notes": list(self.notes),
            "layers": [
                {**asdict(r), "shape": list(r.shape), "sparsity": r.sparsity, "bytes": r.bytes()} for r in self.layers
            ],  # fmt: skip
        }

    def __str__(self) -> str:
        header = ("name", "layer", "shape", "nonzeros", "sparsity", "2:4", "quantized")
        lines = [
            (r.name, r.layer, "x".join(map(str, r.shape)), f"{r.nonzeros}/{r.numel}", f"{r.sparsity:.2%}",
             "-" if r.nm_2_4 is None else ("yes" if r.nm_2_4 else "no"), r.quantized or "-")
            for r in self.layers
        ]  # fmt: skip
        widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]
        out = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *lines]]
        quantized = sum(1 for r in self.layers if r.quantized)
        compliant = sum(1 for r in self.layers if r.nm_2_4)
        out += [
            "",
            f"source: {self.source}",
            f"parameters: {self.parameters:,}; Linear/Conv weights: {self.numel:,} of which {self.nonzeros:,} non-zero"
            f" (sparsity {self.sparsity:.2%}); 2:4-compliant layers: {compliant}/{len(self.layers)};"
            f" quantized layers: {quantized}/{len(self.layers)}",
            "",
        ]
        totals = self.totals()
        dense = totals["dense fp32"] or 1
        out.append(f"{'form':<18}{'bytes':>14}  {'vs dense fp32':>13}")
        out += [f"{form:<18}{value:>14,}  {dense / value if value else 0:>12.2f}x" for form, value in totals.items()]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)


# --------------------------------------------------------------------------------------------------- inspection
def _int_payload(t: Tensor) -> tuple[Optional[Tensor], str]:
    """The int8 data of a quantized tensor (plain int8, or a tensor subclass holding int8 inner tensors)."""
    if type(t) in (Tensor, nn.Parameter):
        return (t, "int8") if t.dtype in (torch.int8, torch.uint8) else (None, "")
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is None:
        return None, ""
    names, _ = flatten()
    for name in names:
        inner = getattr(t, name)
        if isinstance(inner, Tensor) and inner.dtype in (torch.int8, torch.uint8) and inner.numel() == t.numel():
            return inner, f"int8 ({type(t).__name__})"
    return None, ""


def _nm(t: Tensor) -> Optional[bool]:
    if t.dim() < 2 or (t.numel() // max(1, t.shape[0])) % 4:
        return None
    return is_nm_sparse(t, 2, 4)


def _row(name: str, layer: str, weight: Tensor, quantized: str = "") -> LayerRow:
    data, how = _int_payload(weight)
    values = data if data is not None else weight.detach()
    values = values.reshape(weight.shape) if values.numel() == weight.numel() else values
    return LayerRow(name, layer, tuple(weight.shape), weight.numel(), int(torch.count_nonzero(values)), _nm(values),
                    quantized or how)  # fmt: skip


def _tensor_bytes(t: Tensor) -> int:
    data, _ = _int_payload(t)
    if data is not None and data is not t:
        return data.numel() * data.element_size() + 4 * (t.shape[0] if t.dim() else 1)
    return t.numel() * t.element_size()


def _has_fake_quant(model: nn.Module) -> bool:
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    return any(isinstance(m, FakeQuantizeBase) for m in model.modules())


def _fake_quantized_attrs(graph_module: torch.fx.GraphModule) -> set[str]:
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    modules = dict(graph_module.named_modules())
    out = set()
    for node in graph_module.graph.nodes:
        if node.op != "get_attr":
            continue
        frontier = list(node.users)
        for _ in range(6):  # a conv weight reaches its fake quantizer through the BatchNorm folding (mul, reshape)
            if any(u.op == "call_module" and isinstance(modules.get(u.target), FakeQuantizeBase) for u in frontier):
                out.add(node.target)
                break
            frontier = [v for u in frontier if u.op == "call_function" and not str(u.target).startswith(_GEMM_OPS)
                        for v in u.users]  # fmt: skip
    return out


def _report_graph(gm: torch.fx.GraphModule, source: str) -> Optional[CompressionReport]:
    """A converted / exported graph: the weights are the tensors feeding its Linear/Conv ops (through dequantize)."""
    layers: list[LayerRow] = []
    used: set[str] = set()
    for node in gm.graph.nodes:
        if node.op != "call_function" or not str(node.target).startswith(_GEMM_OPS) or len(node.args) < 2:
            continue
        weight, quantized = node.args[1], ""
        while isinstance(weight, torch.fx.Node) and weight.op == "call_function" and "dequantize" in str(weight.target):
            quantized = "int8 (PT2E converted)"
            weight = weight.args[0]
        if not (isinstance(weight, torch.fx.Node) and weight.op == "get_attr"):
            continue
        tensor = _get_attr(gm, weight.target)
        if not isinstance(tensor, Tensor) or tensor.dim() < 2:
            continue
        stack = node.meta.get("nn_module_stack") or {}
        fqn, cls = list(stack.values())[-1] if stack else (weight.target, str(node.target))
        layers.append(_row(f"{fqn}.weight" if stack else weight.target, str(cls).rsplit(".", 1)[-1], tensor, quantized))
        used.add(weight.target)
    if not layers:
        return None
    attrs = {n.target for n in gm.graph.nodes if n.op == "get_attr"} - used
    others = [t for t in (_get_attr(gm, a) for a in attrs) if isinstance(t, Tensor)]
    parameters = sum(r.numel for r in layers) + sum(
        t.numel() for a, t in ((a, _get_attr(gm, a)) for a in attrs)
        if isinstance(t, Tensor) and t.is_floating_point() and not a.startswith(("_scale", "_zero_point"))
    )  # fmt: skip
    notes = ["tensors the graph does not read (float copies left by convert_pt2e) are not counted"]
    return CompressionReport(layers, parameters, sum(_tensor_bytes(t) for t in others), source, notes)


def _get_attr(gm: nn.Module, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _report_module(model: nn.Module, source: str, filter_fn: Optional[FilterFn] = None) -> CompressionReport:

    prepared = isinstance(model, torch.fx.GraphModule) and is_prepared(model) and _has_fake_quant(model)
    if isinstance(model, torch.fx.GraphModule) and not prepared:  # converted (deepcopy keeps the QAT mark) / exported
        graph_report = _report_graph(model, source)
        if graph_report is not None:
            return graph_report
    fake = _fake_quantized_attrs(model) if prepared else set()
    try:
        weights = prunable_weights(model, filter_fn)
    except ValueError:  # no Linear/Conv layer: compression_report raises its own message
        weights = {}
    owners = {f"{fqn}.weight" if fqn else "weight": type(m).__name__ for fqn, m in model.named_modules()}
    layers = [_row(n, owners.get(n, "?"), w, "int8 fake-quant (QAT)" if n in fake else "") for n, w in weights.items()]
    chosen = {id(w) for w in weights.values()}
    state = model.state_dict(keep_vars=True)
    others = [t for t in state.values() if isinstance(t, Tensor) and id(t) not in chosen]
    seen: set[int] = set()
    parameters = 0
    for p in model.parameters():
        if id(p) not in seen and not (prepared and p.dim() == 0):
            seen.add(id(p))
            parameters += p.numel()
    notes = ["QAT-prepared graph: weights are float with fake quantization; INT8 after convert_to_int8"] if fake else []
    return CompressionReport(layers, parameters, sum(_tensor_bytes(t) for t in others), source, notes)


def _report_state(state: Mapping[str, Any], source: str) -> CompressionReport:
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    layers, other_bytes, parameters = [], 0, 0
    qat = any("activation_post_process" in k for k in tensors)
    for name, t in tensors.items():
        data, how = _int_payload(t)
        is_layer = t.dim() >= 2 and (name.endswith("weight") or data is not None)
        if is_layer:
            layers.append(_row(name, "int8 tensor" if data is not None else "weight", t))
        else:
            other_bytes += _tensor_bytes(t)
        if (
            (t.is_floating_point() or data is not None)
            and not name.endswith(_BUFFER_SUFFIXES)
            and ("activation_post_process" not in name)
            and not name.split(".")[-1].startswith(("_scale", "_zero_point"))
        ):
            parameters += t.numel()
    notes = ["layer types are unknown in a bare state dict: every weight of 2+ dimensions is reported"]
    if qat:
        notes.append("fake-quantization observers found (a QAT-prepared checkpoint): weights are float; INT8 after"
                     " convert_to_int8")  # fmt: skip
    return CompressionReport(layers, parameters, other_bytes, source, notes)


def compression_report(
    source: Union[nn.Module, Mapping[str, Any]], name: str = "", filter_fn: Optional[FilterFn] = None
) -> CompressionReport:
    """Report what ``source`` holds: layers, sparsity, 2:4 compliance, quantization, and bytes per storage form.

    Args:
        source: A module (plain, QAT-prepared, PT2E-converted, ``torch.export``-ed, torchao-quantized) or a state dict
            (a Lightning checkpoint's ``state_dict``, or :func:`~lightning_compress.load_compressed`'s result).
        name: What to call the source in the report.
        filter_fn: For a module, which layers' weights to report (as in
            :func:`~lightning_compress.core.selection.prunable_weights`); default: Linear and Conv layers.

    Returns:
        A :class:`CompressionReport`; ``str()`` of it is the printed table.

    Raises:
        TypeError: If ``source`` is neither a module nor a mapping.
        ValueError: If no weight of a Linear/Conv layer (or of 2+ dimensions) is found, or ``source`` holds tensors
            on the ``meta`` device (shapes without values, nothing to count).

    Example:
        >>> compression_report(torch.nn.Linear(16, 4)).layers[0].nm_2_4
        False
    """
    label = name or type(source).__name__
    if isinstance(source, nn.Module):
        check_materialized(source, f"`source` ({label})")
        report = _report_module(source, label, filter_fn)
    elif isinstance(source, Mapping):
        meta = [k for k, v in source.items() if isinstance(v, Tensor) and v.device.type == "meta"]
        if meta:
            listed = ", ".join(meta[:5]) + (f" and {len(meta) - 5} more" if len(meta) > 5 else "")
            raise ValueError(
                f"`source` ({label}) holds tensors on the meta device (no values): {listed}; load them first"
            )
        report = _report_state(source, label)
    else:
        raise TypeError(f"`source` must be an nn.Module or a state dict, got {type(source).__name__}")
    if not report.layers:
        raise ValueError(f"{label}: no Linear/Conv weight (or tensor of 2+ dimensions) to report")
    return report


@torch.no_grad()
def sparsity_report(model: nn.Module, filter_fn: Optional[FilterFn] = None) -> CompressionReport:
    """The :class:`CompressionReport` of the weights a pruning callback would select (by default those of Linear and
    Conv layers): per layer its shape, non-zeros and sparsity; in total the same.

    Args:
        model: The model.
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing the modules whose ``weight`` is reported, as in
            :func:`~lightning_compress.core.selection.prunable_weights`.

    Raises:
        ValueError: If no weight is selected, or ``model`` holds tensors on the ``meta`` device.

    Example:
        >>> report = sparsity_report(torch.nn.Linear(3, 3))
        >>> report.sparsity
        0.0
    """
    prunable_weights(model, filter_fn)
    check_materialized(model)  # raises, naming the filter, when nothing is selected
    return compression_report(model, filter_fn=filter_fn)
