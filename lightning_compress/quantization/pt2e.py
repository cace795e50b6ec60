"""INT8 through PyTorch 2 export (PT2E): a float model captured with ``torch.export``, fake quantization inserted by
torchao's ``X86InductorQuantizer``, converted to quantize / dequantize ops around int8 weights, and compiled with
inductor *freezing* so that oneDNN's INT8 kernels run it.

:func:`prepare_qat` (batch dimension dynamic) inserts fake quantization for quantization-aware training: weights
symmetric per output channel, activations affine per tensor, Conv + BatchNorm folded as in training (the BN statistics
keep updating; the weight that is quantized is ``conv.weight * bn.weight / sqrt(running_var + eps)``). The prepared
model is an ``fx.GraphModule`` whose parameters keep the float model's names (``features.0.weight``), so checkpoints,
optimizers and pruning masks see the same names; the Linear/Conv/BatchNorm submodules get their original classes back,
so type-based selection works on the prepared model too. Its BatchNorm and Dropout switch with ``.train()`` /
``.eval()`` (:mod:`~lightning_compress.quantization.qat_modes`).

:func:`convert_to_int8` turns a prepared (and trained or calibrated) graph into the INT8 model, :class:`FrozenInt8`:
without freezing, the converted graph runs slower than fp32 (``experiments/qat/``).

Example:
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
    ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
    >>> prepared = prepare_qat(net, (torch.randn(4, 1, 8, 8),))  # doctest: +SKIP
    >>> int8 = convert_to_int8(prepared)  # doctest: +SKIP
    >>> int8(torch.randn(3, 1, 8, 8)).shape  # doctest: +SKIP
    torch.Size([3, 2])
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
from torch import Tensor, nn

from lightning_compress.core.selection import FilterFn, select_layers
from lightning_compress.quantization.export_inputs import ExampleInputs, as_args_kwargs, export_model, shrink_inputs
from lightning_compress.quantization.qat_modes import install_mode_switches, is_prepared, observers, set_qat_mode
from lightning_compress.quantization.torchao_workarounds import (
    conv_bn_pattern_cache,
    split_reused_call_sites,
    x86_qat_quantizer,
)

__all__ = [
    "FrozenInt8",
    "convert_to_int8",
    "finish_int8",
    "max_pool_on_int8",
    "prepare_exported",
    "prepare_qat",
    "quantized_layer_names",
]

QUANTIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def quantized_layer_names(
    model: nn.Module, filter_fn: Optional[FilterFn], skip_first_conv: bool, skip_classifier: bool
) -> tuple[list[str], list[str]]:
    """``(kept in float, to quantize)``: qualified names of the submodules that own a ``weight`` parameter.

    To quantize are the Linear, Conv and ConvTranspose layers that ``filter_fn`` (False keeps a layer in float),
    ``skip_first_conv`` and ``skip_classifier`` do not keep in float
    (:func:`~lightning_compress.core.selection.select_layers`).
    """

    def chosen(sub: nn.Module, fqn: str) -> bool:
        return filter_fn is None or bool(filter_fn(sub, fqn))

    owners = select_layers(model, lambda sub, fqn: bool(fqn))
    selected = select_layers(model, lambda sub, fqn: bool(fqn) and chosen(sub, fqn), skip_first_conv, skip_classifier)
    keep = [fqn for fqn in owners if fqn not in selected]
    return keep, [fqn for fqn, sub in selected.items() if isinstance(sub, QUANTIZABLE)]


_WEIGHT_PATH_OPS = {
    torch.ops.aten.mul,
    torch.ops.aten.div,
    torch.ops.aten.reshape,
    torch.ops.aten.view,
    torch.ops.aten.t,
    torch.ops.aten.permute,
    torch.ops.aten.transpose,
    torch.ops.aten.to,
}


def _unquantized_layers(prepared: torch.fx.GraphModule, layers: list[str]) -> list[str]:
    """Those of ``layers`` whose weight reaches its conv/linear without a fake quantizer (or observer) on the way."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase
    from torchao.quantization.pt2e.observer import ObserverBase

    modules = dict(prepared.named_modules())
    weights = {n.target: n for n in prepared.graph.nodes if n.op == "get_attr"}

    def fake_quantized(node: torch.fx.Node, depth: int = 0) -> bool:
        for user in node.users:
            if user.op == "call_module" and isinstance(modules.get(str(user.target)), (FakeQuantizeBase, ObserverBase)):
                return True
            # conv-BN folding scales the weight (mul, reshape) before its fake quantizer
            passes = user.op == "call_function" and getattr(user.target, "_overloadpacket", None) in _WEIGHT_PATH_OPS
            if depth < 4 and passes and fake_quantized(user, depth + 1):
                return True
        return False

    return [fqn for fqn in layers if f"{fqn}.weight" in weights and not fake_quantized(weights[f"{fqn}.weight"])]


def _restore_layer_types(prepared: torch.fx.GraphModule, original: nn.Module) -> None:
    """Give the parameter-holding submodules of ``prepared`` the class and attributes of the float model's layers.

    ``ExportedProgram.module()`` rebuilds the hierarchy from plain ``nn.Module``s; with the original classes, selection
    by type (``prunable_weights``, first conv / classifier) sees the same layers as on the float model. Their
    ``forward`` is never called: the graph reads their parameters with ``get_attr``.
    """
    targets = dict(prepared.named_modules())
    for fqn, layer in original.named_modules():
        sub = targets.get(fqn)
        if not fqn or sub is None or type(sub) is not nn.Module or layer._modules:
            continue
        if set(sub._parameters) != set(layer._parameters):
            continue
        for key, value in vars(layer).items():
            if not key.startswith("_") and key != "training" and not isinstance(value, Tensor):
                setattr(sub, key, copy.copy(value))
        sub.__class__ = type(layer)


def prepare_qat(
    model: nn.Module,
    example_inputs: ExampleInputs,
    filter_fn: Optional[FilterFn] = None,
    skip_first_conv: bool = False,
    skip_classifier: bool = False,
) -> torch.fx.GraphModule:
    """Export ``model`` and insert INT8 fake quantization for QAT (Conv+BN folded), ready to train.

    Args:
        model: A float model that ``torch.export`` can capture; it is not modified (its mode is restored).
        example_inputs: A batch of inputs: a tensor ``(B, ...)``, a tuple of positional inputs or a dict of keyword
            inputs (``{"input_ids": (B, L), "attention_mask": (B, L)}``). Dimension 0 of every tensor is exported as
            dynamic, and dimension 1 of 2-d integer tensors (token ids, masks) too; only two examples are used.
        filter_fn: ``filter_fn(layer, fqn) -> bool`` for every submodule with a ``weight``: False keeps it in float.
        skip_first_conv: Keep the first convolution in float.
        skip_classifier: Keep the last ``nn.Linear`` in float.

    Returns:
        The prepared ``GraphModule``, in training mode; call ``.eval()`` / ``.train()`` (or :func:`set_qat_mode`) to
        switch BatchNorm and Dropout (attention dropout included). Its forward takes the same inputs as ``model``.

    Raises:
        RuntimeError: If ``torch.export`` cannot capture the model (the message names the failing op), if the
            quantizer fails on a pattern (the message names the reused module), if a Linear/Conv layer to quantize
            got no fake quantization (the message names the layers; keep them in float with ``filter_fn``), or if no
            layer was quantized.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2))
        >>> prepared = prepare_qat(net, torch.randn(4, 3, 16, 16))
        >>> prepared(torch.randn(5, 3, 16, 16)).shape
        torch.Size([5, 2])
    """
    args, kwargs = as_args_kwargs(shrink_inputs(example_inputs))
    keep_float, to_quantize = quantized_layer_names(model, filter_fn, skip_first_conv, skip_classifier)
    was_training = model.training
    model.train()  # QAT graphs are captured in training mode (BN batch statistics, live dropout)
    try:
        graph_module = export_model(model, args, kwargs).module()
    finally:
        model.train(was_training)
    return prepare_exported(graph_module, model, x86_qat_quantizer(keep_float), to_quantize, is_qat=True)


def prepare_exported(
    graph_module: torch.fx.GraphModule, model: nn.Module, quantizer: Any, to_quantize: list[str], is_qat: bool
) -> torch.fx.GraphModule:
    """Insert the observers (``is_qat``: fake quantizers) of ``quantizer`` into an exported graph of ``model``.

    The part of :func:`prepare_qat` after the export, shared with post-training quantization
    (:func:`~lightning_compress.quantization.ptq.prepare_ptq`): torchao's ``prepare_qat_pt2e`` (or ``prepare_pt2e``),
    the checks that every layer of ``to_quantize`` got a weight quantizer, the float model's layer classes restored
    on the graph's submodules, and the mode switches (:mod:`~lightning_compress.quantization.qat_modes`), in training
    mode for QAT and in evaluation mode for PTQ.

    Raises:
        RuntimeError: As :func:`prepare_qat`.
    """
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    name = type(model).__name__
    reused = split_reused_call_sites(graph_module)
    try:
        with conv_bn_pattern_cache():
            prepared = (prepare_qat_pt2e if is_qat else prepare_pt2e)(graph_module, quantizer)
    except (ValueError, AssertionError, IndexError) as err:
        hint = (
            f" The layers {', '.join(reused)} are called more than once in the graph: keep them in float with"
            " `filter_fn`, or give each call its own module."
            if reused
            else ""
        )
        raise RuntimeError(
            f"the X86 INT8 quantizer (torchao PT2E, is_qat={is_qat}) failed on {name}: {type(err).__name__}: {err}."
            f"{hint}"
        ) from err
    if not observers(prepared):
        raise RuntimeError(
            f"no layer of {name} was quantized: the X86 quantizer found no Conv/Linear pattern it"
            " supports outside the layers kept in float (`filter_fn`, `skip_first_conv`, `skip_classifier`)"
        )
    missed = _unquantized_layers(prepared, to_quantize)
    if missed:
        kinds = {fqn: type(model.get_submodule(fqn)).__name__ for fqn in missed}
        raise RuntimeError(
            f"the X86 INT8 quantizer cannot quantize these layers of {name}: "
            + ", ".join(f"{fqn} ({kind})" for fqn, kind in kinds.items())
            + ". It quantizes Conv2d (with BatchNorm, add, ReLU fused) and Linear. Keep them in float:"
            f" `filter_fn=lambda module, fqn: fqn not in {sorted(missed)!r}`"
        )
    _restore_layer_types(prepared, model)
    install_mode_switches(prepared, train=is_qat)
    return prepared


def convert_to_int8(prepared: torch.fx.GraphModule, compile: bool = True) -> nn.Module:
    """The real INT8 model of a prepared (and trained) QAT graph; ``prepared`` is not modified.

    Args:
        prepared: A graph from :func:`prepare_qat` (or the ``model`` of a module trained with the callback).
        compile: ``torch.compile`` the converted graph with inductor freezing (see :class:`FrozenInt8`; a new batch
            size compiles again) so that it runs on oneDNN INT8 kernels. The first call
            compiles (seconds). With False, the reference graph (quantize/dequantize ops in float) is returned: the
            same numbers, slowly; it is what :func:`save_quantized` exports. Either way, max-pools run on the int8
            values (:func:`max_pool_on_int8`).

    Returns:
        The INT8 model: a :class:`FrozenInt8` (the reference graph is its ``._orig_mod``), or the reference graph.

    Raises:
        TypeError: If ``prepared`` is not a graph from :func:`prepare_qat`.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    if not is_prepared(prepared):
        raise TypeError(
            "`prepared` must be a graph from `prepare_qat` (the callback's prepared model),"
            f" got {type(prepared).__name__}"
        )
    graph = copy.deepcopy(prepared)
    set_qat_mode(graph, False)
    with conv_bn_pattern_cache():
        converted = convert_pt2e(graph)
    return finish_int8(converted, compile)


def finish_int8(converted: torch.fx.GraphModule, compile: bool = True) -> nn.Module:
    """The INT8 model of a graph fresh from ``convert_pt2e`` (the end of :func:`convert_to_int8`, shared with PTQ):
    evaluation mode, the tensors it no longer reads dropped, max-pools on the int8 values
    (:func:`max_pool_on_int8`), and with ``compile`` a :class:`FrozenInt8`. ``converted`` is modified in place."""
    nn.Module.train(converted, False)  # the converted graph has no train/eval ops left; its own .eval() raises
    _drop_unused_tensors(converted)
    max_pool_on_int8(converted)
    if not compile:
        return converted
    return FrozenInt8(converted)


def max_pool_on_int8(graph_module: torch.fx.GraphModule) -> int:
    """Max-pool the quantized tensors themselves: ``quantize(max_pool2d(dequantize(x)))`` becomes ``max_pool2d(x)``.

    The X86 quantizer gives a max-pool the same scale and zero point at input and output, and dequantization is
    increasing (scale > 0), so pooling the uint8 values is exact: the rewritten graph gives bit-identical outputs.
    It matters for speed: Inductor lowers the dequantize -> pool -> quantize pattern to ``quantized::max_pool2d``,
    which has no vectorized path for fewer than 32 channels in channels-last layout, while Inductor's own uint8 pooling
    kernel has (the measurements, and what it gains the MNIST SmallCNN, are in ``experiments/qat/README.md``).

    Args:
        graph_module: A graph from ``convert_pt2e`` (``quantized_decomposed`` quantize / dequantize ops); rewritten
            in place.

    Returns:
        The number of max-pools rewritten. A pool whose input and output quantization differ, or whose output has
        other users than one quantize, is left as it is.

    Example:
        >>> from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e
        >>> converted = convert_pt2e(prepared)  # a trained prepare_qat graph of the SmallCNN  # doctest: +SKIP
        >>> max_pool_on_int8(converted)  # doctest: +SKIP
        2
    """
    decomposed = torch.ops.quantized_decomposed
    graph, rewritten = graph_module.graph, 0
    for pool in list(graph.nodes):
        if pool.op != "call_function" or pool.target is not torch.ops.aten.max_pool2d.default:
            continue
        dequant, users = pool.args[0], list(pool.users)
        if not (
            isinstance(dequant, torch.fx.Node)
            and dequant.target is decomposed.dequantize_per_tensor.default
            and len(users) == 1
            and users[0].target is decomposed.quantize_per_tensor.default
            and tuple(users[0].args[1:]) == tuple(dequant.args[1:])
            and not users[0].kwargs
            and not dequant.kwargs
        ):
            continue
        quant = users[0]
        pool.args = (dequant.args[0], *pool.args[1:])
        quant.replace_all_uses_with(pool)
        graph.erase_node(quant)
        if not dequant.users:
            graph.erase_node(dequant)
        rewritten += 1
    if rewritten:
        graph.lint()
        graph_module.recompile()
    return rewritten


def _drop_unused_tensors(graph_module: torch.fx.GraphModule) -> None:
    """Delete the parameters and buffers the graph never reads: after conversion, the float weights (replaced by int8
    constants) and the folded BatchNorm's tensors, which would otherwise be saved along (a file bigger than fp32)."""
    used = {str(n.target) for n in graph_module.graph.nodes if n.op == "get_attr"}
    names = [name for name, _ in (*graph_module.named_parameters(), *graph_module.named_buffers())]
    for name in names:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(graph_module.get_submodule(owner) if owner else graph_module, attr)


class FrozenInt8(nn.Module):
    """A converted INT8 graph compiled with inductor freezing, for inference.

    ``torch.compile`` compiles lazily (at the first call, and again for each new batch size: ``dynamic=False``, as
    the dynamic-batch path of the frozen qconv lowering fails a stride assertion in torch 2.14), and freezing is read
    from the global inductor config at that moment (``torch.compile(options={"freezing": True})`` does not reach the
    constant folding of the oneDNN weight prepacking: measured). So every call runs under
    ``torch._inductor.config.patch(freezing=True)`` and ``torch.no_grad()``, and the global config is left as it was.

    Args:
        converted: The graph from ``convert_pt2e`` (kept as ``._orig_mod``).
    """

    def __init__(self, converted: nn.Module) -> None:
        super().__init__()
        self._orig_mod = converted
        self._compiled = torch.compile(converted, dynamic=False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True), torch.no_grad():
            return self._compiled(*args, **kwargs)
