"""Quantization-aware training (QAT) that ends in a real INT8 model, through PyTorch 2 export (PT2E).

The float model is captured with ``torch.export`` (batch dimension dynamic), and torchao's ``prepare_qat_pt2e`` with the
``X86InductorQuantizer`` (``is_qat=True``) inserts fake quantization: weights symmetric per output channel, activations
affine per tensor, Conv + BatchNorm folded as in training (the BN statistics keep updating; the weight that is quantized
is ``conv.weight * bn.weight / sqrt(running_var + eps)``). After training, ``convert_pt2e`` turns the fake quantization
into quantize / dequantize ops around int8 weights, and ``torch.compile`` with inductor *freezing* fuses them into
oneDNN INT8 kernels (measured 10x-14x faster than fp32 eager on an AMX CPU; without freezing it is slower than fp32).

The prepared model is an ``fx.GraphModule`` whose parameters keep the float model's names (``features.0.weight``), so
checkpoints, optimizers and :class:`~lightning_compress.GradualMagnitudePruning` masks see the same names; the
Linear/Conv/BatchNorm submodules get their original classes back, so type-based selection (``prunable_weights``,
``skip_first_conv``) works on the prepared model too. An exported graph does not switch BatchNorm and Dropout on
``.train()``/``.eval()``: the graph is rewritten when its mode changes (:func:`set_qat_mode`), which the callback does at
the start of every train/val/test/predict batch, and ``.train()``/``.eval()`` on the prepared model do too.

Two torchao 0.18 problems are worked around here: the X86 quantizer's fusion rules fail on a module called more than
once (torchvision's ``BasicBlock.relu``: "Input partition has more than one output node", pytorch/ao#4478), so each
call of a reused parameter-free module gets its own partition; and its conv-BN passes re-trace up to 96 patterns with
``torch.export`` at every prepare / convert (a minute per convert on 2 cores), so the traces are cached per process.

The ``"int4_weight_only"`` scheme (:func:`prepare_int4_qat`, :func:`convert_to_int4`) is torchao's eager QAT for the
Linear layers of LLM-style models: int4 weights in groups, activations float, no export.

Example:
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
    ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
    >>> prepared = prepare_qat(net, (torch.randn(4, 1, 8, 8),))  # doctest: +SKIP
    >>> int8 = convert_to_int8(prepared)  # doctest: +SKIP
    >>> int8(torch.randn(3, 1, 8, 8)).shape  # doctest: +SKIP
    torch.Size([3, 2])
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import re
import types
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from typing_extensions import override

from lightning_compress.masking import compression_target
from lightning_compress.prunable_weights import FilterFn

__all__ = [
    "FrozenInt8",
    "GROUP_SIZES",
    "QuantizationAwareTraining",
    "SCHEMES",
    "convert_to_int4",
    "convert_to_int8",
    "is_int4_prepared",
    "is_prepared",
    "load_quantized",
    "max_pool_on_int8",
    "prepare_int4_qat",
    "prepare_qat",
    "save_quantized",
    "set_qat_mode",
]

SCHEMES = ("int8", "int4_weight_only")
GROUP_SIZES = (16, 32, 64, 128, 256)
ExampleInputs = Union[Tensor, tuple, Mapping[str, Any]]
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_MARK = "lightning_compress_qat"  # key in a prepared GraphModule's `meta` (kept by deepcopy): its mode state


# --------------------------------------------------------------------------------------------------------- inputs
def _as_args_kwargs(example_inputs: ExampleInputs) -> tuple[tuple, dict[str, Any]]:
    """``(args, kwargs)`` for ``torch.export``: a tensor -> ``((x,), {})``, a dict -> ``((), d)``, a tuple -> itself."""
    if isinstance(example_inputs, Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    raise TypeError(
        "`example_inputs` must be a tensor, a tuple of positional inputs or a dict of keyword inputs,"
        f" got {type(example_inputs).__name__}"
    )


def _batch_dim_spec(value: Any) -> Any:
    """Dimension 0 dynamic; for ``(B, L)`` integer tensors (token ids, attention masks) dimension 1 too."""
    if not isinstance(value, Tensor) or value.dim() == 0:
        return None
    if value.dim() == 2 and not value.is_floating_point() and not value.is_complex():
        return {0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO}
    return {0: torch.export.Dim.AUTO}


def _dynamic_shapes(args: tuple, kwargs: dict[str, Any]) -> Any:
    if kwargs and not args:
        return {k: _batch_dim_spec(v) for k, v in kwargs.items()}
    if args and not kwargs:
        return tuple(_batch_dim_spec(a) for a in args)
    return None  # mixed positional and keyword inputs: static shapes


def _shrink(value: Any, n: int = 2) -> Any:
    """The first ``n`` examples of every tensor (repeated when the batch is smaller: a batch of 1 would specialise)."""
    if isinstance(value, Tensor):
        if value.dim() == 0:
            return value
        value = value[:n]
        return value.repeat(math.ceil(n / value.shape[0]), *([1] * (value.dim() - 1)))[:n].clone()
    if isinstance(value, Mapping):
        return {k: _shrink(v, n) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(_shrink(v, n) for v in value)
    return value


def _export(model: nn.Module, args: tuple, kwargs: dict[str, Any]) -> torch.export.ExportedProgram:
    try:
        return torch.export.export(model, args, kwargs, dynamic_shapes=_dynamic_shapes(args, kwargs))
    except Exception as err:  # torch.export raises many types; all mean "this model cannot be captured"
        raise RuntimeError(
            f"QuantizationAwareTraining needs a model that `torch.export.export` can capture, and"
            f" {type(model).__name__} failed: {_export_error_summary(err)}\n"
            "Hint: data-dependent Python control flow (`if x.sum() > 0`), `.item()`/`.tolist()` on tensors and"
            " unsupported custom ops cannot be exported; rewrite that part with torch.where / torch.cond, or keep it"
            " out of the quantized module. The full torch.export error is chained above."
        ) from err


def _export_error_summary(err: BaseException) -> str:
    """``"<type>: <first message line> (op aten.item at File "m.py", line 7, in forward)"``: what failed, and where."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    first = next((line for line in lines if not line.startswith(("def ", "#", "sum_")) and ":" not in line[:3]), "")
    message = next((line for line in lines if "Could not" in line or "Unsupported" in line), first or type(err).__name__)
    ops = re.findall(r"torch\.ops\.(\w+\.\w+)", str(err))
    files = re.findall(r"# File: (.+)", str(err))
    where = files[-1] if files else None
    where = where or next((lines[i + 1] for i, line in enumerate(lines[:-1]) if "following call raised" in line), None)
    details = ", ".join(x for x in (f"op {ops[-1]}" if ops else "", f"at {where}" if where else "") if x)
    return f"{type(err).__name__}: {message}" + (f" ({details})" if details else "")


# ----------------------------------------------------------------------------------------- conv-BN pattern cache
_PATTERN_FACTORIES = (
    "_get_conv_bn_pattern",
    "_get_qat_conv_bn_pattern",
    "_get_qat_conv_bn_pattern_no_conv_bias",
    "_get_quantized_qat_conv_bn_pattern",
    "_get_folded_quantized_qat_conv_bn_pattern",
)
_CONV_OPS = {
    "conv1d": torch.ops.aten.conv1d,
    "conv2d": torch.ops.aten.conv2d,
    "conv_transpose1d": torch.ops.aten.conv_transpose1d,
    "conv_transpose2d": torch.ops.aten.conv_transpose2d,
}
_PATTERNS: dict[Any, torch.fx.GraphModule] = {}  # aten graphs of torchao's conv-BN patterns, built once per process


def _key(value: Any) -> Any:
    if isinstance(value, Tensor):
        return ("tensor", tuple(value.shape), value.dtype)
    if callable(value):
        return getattr(value, "__name__", repr(value))
    return value


def _never_matching_pattern() -> torch.fx.GraphModule:
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_function(torch.ops.aten.special_zeta.default, (x, x)))
    return torch.fx.GraphModule(nn.Module(), graph)


@contextlib.contextmanager
def _conv_bn_pattern_cache() -> Any:
    """Make torchao's conv-BN QAT fusion (``prepare_qat_pt2e``) and folding (``convert_pt2e``) fast, same result.

    Both rewrite the graph with conv-BN patterns that torchao 0.18 traces with a strict ``torch.export`` at every call
    (96 patterns for one ``convert_pt2e``: 50-90 s on 2 cores, for any model with BatchNorm), for conv1d, conv2d,
    conv_transpose1d and conv_transpose2d alike. Inside this context the traced patterns are kept for the process
    (keyed on the pattern's recipe and the example shapes; a copy is handed out), and conv types the graph does not
    contain are skipped. ``convert_pt2e`` tries 12 variants of each pattern; the graphs here only hold weights
    quantized per channel, a float bias and BatchNorm in evaluation mode (:func:`convert_to_int8` switches it), so the
    10 other variants are replaced by a pattern that matches nothing (a test checks that no BatchNorm is left).
    Only names in ``torchao.quantization.pt2e.qat_utils`` are swapped, and restored on exit.
    """
    from torchao.quantization.pt2e import qat_utils

    saved = {n: getattr(qat_utils, n) for n in (*_PATTERN_FACTORIES, "_get_aten_graph_module_for_pattern",
                                                  "_fuse_conv_bn_qat_helper", "_fold_conv_bn_qat_helper")}  # fmt: skip

    def tagged(name: str) -> Callable[..., Any]:
        def factory(*args: Any) -> Any:
            pattern = saved[name](*args)
            pattern._lightning_compress_key = (name, *map(_key, args))
            return pattern

        return factory

    def traced(pattern: Callable, example_inputs: tuple, is_cuda: bool = False, **kwargs: Any) -> Any:
        recipe = getattr(pattern, "_lightning_compress_key", None)
        if recipe is not None and recipe[0].startswith(("_get_quantized", "_get_folded")):
            is_per_channel, _, bias_is_quantized, _, bn_is_training = recipe[1:]
            if not is_per_channel or bias_is_quantized or bn_is_training:
                return _never_matching_pattern()  # see the docstring
        if recipe is None:
            return saved["_get_aten_graph_module_for_pattern"](pattern, example_inputs, is_cuda, **kwargs)
        shapes = tuple(map(_key, example_inputs))
        key = (recipe, is_cuda, shapes, tuple(sorted((k, _key(v)) for k, v in kwargs.items())))
        if key not in _PATTERNS:
            _PATTERNS[key] = saved["_get_aten_graph_module_for_pattern"](pattern, example_inputs, is_cuda, **kwargs)
        return copy.deepcopy(_PATTERNS[key])

    def present_only(name: str) -> Callable[..., Any]:
        def helper(m: torch.fx.GraphModule, conv_fn: Callable, *args: Any, **kwargs: Any) -> Any:
            op = _CONV_OPS.get(getattr(conv_fn, "__name__", ""))
            targets = {getattr(n.target, "_overloadpacket", None) for n in m.graph.nodes if n.op == "call_function"}
            if op is not None and op not in targets:
                return m
            return saved[name](m, conv_fn, *args, **kwargs)

        return helper

    try:
        for name in _PATTERN_FACTORIES:
            setattr(qat_utils, name, tagged(name))
        qat_utils._get_aten_graph_module_for_pattern = traced
        qat_utils._fuse_conv_bn_qat_helper = present_only("_fuse_conv_bn_qat_helper")
        qat_utils._fold_conv_bn_qat_helper = present_only("_fold_conv_bn_qat_helper")
        yield
    finally:
        for name, value in saved.items():
            setattr(qat_utils, name, value)


# -------------------------------------------------------------------------------------------------------- prepare
def _float_layers(
    model: nn.Module, filter_fn: Optional[FilterFn], skip_first_conv: bool, skip_classifier: bool
) -> tuple[list[str], list[str]]:
    """``(kept in float, to quantize)``: qualified names of the submodules with a ``weight`` parameter.

    To quantize are the ``nn.Linear`` and ``nn.Conv*d`` layers not kept in float by ``filter_fn`` (False keeps a layer
    in float), ``skip_first_conv`` or ``skip_classifier``.
    """
    modules = list(model.named_modules())
    first_conv = next((m for _, m in modules if isinstance(m, _CONV)), None)
    classifier = next((m for _, m in reversed(modules) if isinstance(m, nn.Linear)), None)
    keep, quantize = [], []
    for fqn, sub in modules:
        if not fqn or not isinstance(sub._parameters.get("weight"), nn.Parameter):
            continue
        keep_float = (skip_first_conv and sub is first_conv) or (skip_classifier and sub is classifier)
        if keep_float or (filter_fn is not None and not filter_fn(sub, fqn)):
            keep.append(fqn)
        elif isinstance(sub, (nn.Linear, *_CONV, *_CONV_TRANSPOSE)):
            quantize.append(fqn)
    return keep, quantize


def _quantizer(keep_float: list[str]) -> Any:
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    class Quantizer(xiq.X86InductorQuantizer):
        """The X86 quantizer; a conv kept in float loses its empty "do not quantize" annotation after annotating.

        torchao 0.18's conv-BN QAT fusion reads the input, weight and bias specs of every annotated conv, and an
        empty annotation (``set_module_name_qconfig(fqn, None)`` on a conv followed by BatchNorm) raises IndexError
        in ``_update_conv_input_qspec_map_after_replacement``. Without an annotation the conv stays float.
        """

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            for node in model.graph.nodes:
                annotation = node.meta.get("quantization_annotation")
                is_conv = getattr(node.target, "_overloadpacket", None) in _CONV_OPS.values()
                if is_conv and annotation is not None and not annotation.input_qspec_map:
                    del node.meta["quantization_annotation"]
            return model

    quantizer = Quantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(is_qat=True))
    for fqn in keep_float:
        quantizer.set_module_name_qconfig(fqn, None)
    return quantizer


def _split_reused_call_sites(graph_module: torch.fx.GraphModule) -> list[str]:
    """Give each call of a reused parameter-free module (torchvision's ``BasicBlock.relu``) its own source partition.

    The X86 quantizer groups nodes into "source partitions" by the qualified name of the innermost module that made
    them, so the two calls of one ``nn.ReLU`` form a single partition with two outputs, and its conv-BN-add-ReLU
    fusion rule raises "Input partition has more than one output node" (pytorch/ao#4478). ``torch.export`` marks
    the k-th repeated call with ``@k`` in the ``nn_module_stack`` key; the name of that call becomes ``"<fqn>@k"``.
    Modules with parameters are left alone, so that ``set_module_name_qconfig`` still finds every call by name.

    Returns:
        The qualified names of the reused modules that hold parameters (their fused patterns may still fail).
    """
    owners = dict(graph_module.named_modules())
    reused_with_params = set()
    for node in graph_module.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            continue
        key, (fqn, cls) = next(reversed(stack.items()))
        if "@" not in key:
            continue
        owner = owners.get(fqn)
        if owner is not None and next(owner.parameters(recurse=False), None) is not None:
            reused_with_params.add(fqn)
            continue
        stack[key] = (f"{fqn}@{key.rsplit('@', 1)[1]}", cls)
    return sorted(reused_with_params)


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
    """Those of ``layers`` whose weight reaches its conv/linear without a fake quantizer on the way."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    modules = dict(prepared.named_modules())
    weights = {n.target: n for n in prepared.graph.nodes if n.op == "get_attr"}

    def fake_quantized(node: torch.fx.Node, depth: int = 0) -> bool:
        for user in node.users:
            if user.op == "call_module" and isinstance(modules.get(str(user.target)), FakeQuantizeBase):
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


def _fake_quantizers(prepared: nn.Module) -> list[nn.Module]:
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    return [m for m in prepared.modules() if isinstance(m, FakeQuantizeBase)]


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
    args, kwargs = _as_args_kwargs(_shrink(example_inputs))
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    name = type(model).__name__
    keep_float, to_quantize = _float_layers(model, filter_fn, skip_first_conv, skip_classifier)
    was_training = model.training
    model.train()  # QAT graphs are captured in training mode (BN batch statistics, live dropout)
    try:
        graph_module = _export(model, args, kwargs).module()
    finally:
        model.train(was_training)
    reused = _split_reused_call_sites(graph_module)
    try:
        with _conv_bn_pattern_cache():
            prepared = prepare_qat_pt2e(graph_module, _quantizer(keep_float))
    except (ValueError, AssertionError, IndexError) as err:
        hint = (
            f" The layers {', '.join(reused)} are called more than once in the graph: keep them in float with"
            " `filter_fn`, or give each call its own module."
            if reused
            else ""
        )
        raise RuntimeError(
            f"the X86 INT8 quantizer (torchao PT2E, is_qat=True) failed on {name}: {type(err).__name__}: {err}.{hint}"
        ) from err
    if not _fake_quantizers(prepared):
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
    prepared.meta[_MARK] = {
        "train": True,
        "bn_train": True,
        "dropout_train": True,
        "bn_frozen": False,
        "observers_frozen": False,
    }
    prepared.train = types.MethodType(_train, prepared)  # type: ignore[method-assign]
    prepared.eval = types.MethodType(_eval, prepared)  # type: ignore[method-assign]
    return prepared


def is_prepared(module: nn.Module) -> bool:
    """Whether ``module`` is a graph prepared by :func:`prepare_qat`."""
    return isinstance(module, torch.fx.GraphModule) and _MARK in module.meta


# ------------------------------------------------------------------------------------------------------------ modes
def set_qat_mode(
    prepared: torch.fx.GraphModule, train: bool, freeze_bn: Optional[bool] = None, freeze_observers: Optional[bool] = None
) -> None:
    """Switch the BatchNorm and Dropout ops (attention dropout too) of a prepared graph between training and evaluation.

    Args:
        prepared: A graph from :func:`prepare_qat`.
        train: Training mode (batch statistics, live dropout) or evaluation mode.
        freeze_bn: When given, set whether BatchNorm stays in evaluation mode (running statistics, no updates) while
            training; left as it was when None.
        freeze_observers: When given, set whether the observers stop recording ranges (scales and zero points stay
            fixed) while training; left as it was when None. In evaluation mode the observers never record.

    The graph is rewritten (argument flags, no re-tracing) only when a mode actually changes.
    """
    state = prepared.meta[_MARK]
    if freeze_bn is not None:
        state["bn_frozen"] = bool(freeze_bn)
    if freeze_observers is not None:
        state["observers_frozen"] = bool(freeze_observers)
    for fq in _fake_quantizers(prepared):  # observers record ranges in training only: evaluation never moves scales
        fq.enable_observer(train and not state["observers_frozen"])
    want_bn = train and not state["bn_frozen"]
    if state["dropout_train"] != train or state["bn_train"] != want_bn:
        _set_training_flags(prepared, dropout=train, batchnorm=want_bn)
        state["dropout_train"], state["bn_train"] = train, want_bn
    state["train"] = train
    nn.Module.train(prepared, train)


_DROPOUT_OPS = {
    torch.ops.aten.dropout,
    torch.ops.aten.dropout_,
    torch.ops.aten.feature_dropout,
    torch.ops.aten.alpha_dropout,
    torch.ops.aten.feature_alpha_dropout,
}


def _set_training_flags(prepared: torch.fx.GraphModule, dropout: bool, batchnorm: bool) -> None:
    """Set the ``train`` argument of the dropout ops, the ``training`` argument of ``aten.batch_norm`` and the
    ``dropout_p`` of ``scaled_dot_product_attention`` (0 for evaluation, else the exported value) in the graph.

    This is what torchao's ``move_exported_model_to_eval`` does by matching traced patterns (about half a second per
    switch), done on the nodes directly; it also keeps each dropout's own ``p`` (torchao's rewrite resets it to 0.5).
    A BERT exported in training mode passes its attention dropout to SDPA as a constant, which torchao leaves alone;
    the exported value is kept in the node's ``meta``.
    """
    for node in prepared.graph.nodes:
        if node.op != "call_function":
            continue
        op = getattr(node.target, "_overloadpacket", None)
        if op in _DROPOUT_OPS and len(node.args) >= 3:
            node.args = (*node.args[:2], dropout, *node.args[3:])
        elif op is torch.ops.aten.batch_norm and len(node.args) >= 6:
            node.args = (*node.args[:5], batchnorm, *node.args[6:])
        elif op is torch.ops.aten.scaled_dot_product_attention:
            positional = len(node.args) > 4
            exported = node.meta.setdefault(
                "lightning_compress_dropout_p", node.args[4] if positional else node.kwargs.get("dropout_p", 0.0)
            )
            value = exported if dropout else 0.0
            if positional:
                node.args = (*node.args[:4], value, *node.args[5:])
            elif exported:
                node.kwargs = {**node.kwargs, "dropout_p": value}
    prepared.recompile()


def _train(self: torch.fx.GraphModule, mode: bool = True) -> torch.fx.GraphModule:
    set_qat_mode(self, mode)
    return self


def _eval(self: torch.fx.GraphModule) -> torch.fx.GraphModule:
    set_qat_mode(self, False)
    return self


def _sync_mode(prepared: torch.fx.GraphModule) -> None:
    """Follow ``prepared.training`` (Lightning restores modes by assigning ``.training``, not by calling ``train``)."""
    if prepared.meta[_MARK]["train"] != prepared.training:
        set_qat_mode(prepared, prepared.training)


# --------------------------------------------------------------------------------------------------------- convert
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
            f"`prepared` must be a graph from `prepare_qat` (the callback's prepared model), got {type(prepared).__name__}"
        )
    graph = copy.deepcopy(prepared)
    set_qat_mode(graph, False)
    with _conv_bn_pattern_cache():
        converted = convert_pt2e(graph)
    nn.Module.train(converted, False)  # the converted graph has no train/eval ops left; its own .eval() raises
    _drop_unused_tensors(converted)
    max_pool_on_int8(converted)
    if not compile:
        return converted
    return _compile(converted)


def max_pool_on_int8(graph_module: torch.fx.GraphModule) -> int:
    """Max-pool the quantized tensors themselves: ``quantize(max_pool2d(dequantize(x)))`` becomes ``max_pool2d(x)``.

    The X86 quantizer gives a max-pool the same scale and zero point at input and output, and dequantization is
    increasing (scale > 0), so pooling the uint8 values is exact: the rewritten graph gives bit-identical outputs.
    It matters for speed: Inductor lowers the dequantize -> pool -> quantize pattern to ``quantized::max_pool2d``,
    which has no vectorized path for fewer than 32 channels in channels-last layout (0.71 ms against 0.04 ms for
    Inductor's own uint8 pooling kernel on a 64 x 16 x 28 x 28 tensor, measured on AVX-512 with 2 threads; the MNIST
    SmallCNN's INT8 forward at batch 64 went from 1.99 ms to 1.04 ms, ``experiments/qat/benchmark.py speed``).

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


def _compile(converted: nn.Module) -> nn.Module:
    return FrozenInt8(converted)


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


def save_quantized(model: nn.Module, path: Union[str, os.PathLike], example_inputs: ExampleInputs) -> None:
    """Save a model from :func:`convert_to_int8` or :func:`convert_to_int4` as a ``torch.export`` program.

    The file holds the int8 (or int4-in-int8) weights, their scales and the graph; the batch dimension (and the
    sequence dimension of token inputs) stays dynamic. Loading it needs no model code: :func:`load_quantized`.

    Args:
        model: The converted model (compiled or not).
        path: File to write (``.pt2``).
        example_inputs: Inputs of the model's forward, as for :func:`prepare_qat`.

    Example:
        >>> save_quantized(int8_model, "model_int8.pt2", torch.randn(2, 1, 28, 28))  # doctest: +SKIP
    """
    graph = getattr(model, "_orig_mod", model)
    args, kwargs = _as_args_kwargs(_shrink(example_inputs))
    with torch.no_grad():
        program = torch.export.export(graph, args, kwargs, dynamic_shapes=_dynamic_shapes(args, kwargs))
    torch.export.save(program, path)


def load_quantized(path: Union[str, os.PathLike], compile: bool = True) -> nn.Module:
    """Load a model written by :func:`save_quantized`.

    Args:
        path: The ``.pt2`` file.
        compile: Wrap it in :class:`FrozenInt8` (``torch.compile`` with inductor freezing: the fast path for INT8).

    Returns:
        The model; its forward takes the inputs it was saved with (any batch size).

    Example:
        >>> model = load_quantized("model_int8.pt2")  # doctest: +SKIP
    """
    module = torch.export.load(path).module()
    return _compile(module) if compile else module


# ----------------------------------------------------------------------------------------------------------- int4
def _int4_config(group_size: int) -> Any:
    from torchao.quantization import IntxWeightOnlyConfig, PerGroup

    return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size))


def is_int4_prepared(module: nn.Module) -> bool:
    """Whether ``module`` holds Linear layers prepared by :func:`prepare_int4_qat`."""
    from torchao.quantization.qat import FakeQuantizedLinear

    return any(isinstance(m, FakeQuantizedLinear) for m in module.modules())


def prepare_int4_qat(
    model: nn.Module,
    group_size: int = 32,
    filter_fn: Optional[FilterFn] = None,
    skip_classifier: bool = False,
) -> nn.Module:
    """Fake-quantize the weights of ``model``'s ``nn.Linear`` layers to int4, in groups, in place (torchao QAT).

    Each run of ``group_size`` input weights of an output row shares one scale (symmetric, values -8..7, so a zero
    weight stays zero); activations stay in float. The layers become torchao ``FakeQuantizedLinear`` (a subclass of
    ``nn.Linear``, same parameter names). Convert with :func:`convert_to_int4`.

    Args:
        model: The float model; modified in place.
        group_size: Input features per scale; every quantized layer's ``in_features`` must be a multiple of it.
        filter_fn: ``filter_fn(layer, fqn) -> bool`` for every ``nn.Linear``: False keeps it in float.
        skip_classifier: Keep the last ``nn.Linear`` in float.

    Returns:
        ``model``.

    Raises:
        ValueError: If a Linear layer to quantize has ``in_features`` not divisible by ``group_size`` (the message
            names the layers), or no Linear layer is left to quantize.

    Example:
        >>> net = prepare_int4_qat(torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 2)))
        >>> type(net[0]).__name__, net(torch.randn(3, 64)).shape
        ('FakeQuantizedLinear', torch.Size([3, 2]))
    """
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    linears = [(fqn, m) for fqn, m in model.named_modules() if isinstance(m, nn.Linear)]
    classifier = linears[-1][1] if linears else None
    chosen = {
        fqn
        for fqn, m in linears
        if not (skip_classifier and m is classifier) and (filter_fn is None or filter_fn(m, fqn))
    }
    if not chosen:
        raise ValueError(
            f"`scheme=\"int4_weight_only\"` quantizes nn.Linear layers and {type(model).__name__} has none left to"
            " quantize (after `filter_fn` / `skip_classifier`)"
        )
    bad = [f"{fqn} (in_features={m.in_features})" for fqn, m in linears if fqn in chosen and m.in_features % group_size]
    if bad:
        raise ValueError(
            f"`group_size` {group_size} must divide the in_features of every Linear layer to quantize, and these do"
            f" not: {', '.join(bad)}. Pick a smaller `group_size`, or keep them in float with `filter_fn`"
        )
    quantize_(model, QATConfig(_int4_config(group_size), step="prepare"), filter_fn=lambda m, fqn: fqn in chosen)
    return model


def _int4_fake_quantizers(model: nn.Module) -> list[nn.Module]:
    from torchao.quantization.qat import FakeQuantizedLinear

    return [m.weight_fake_quantizer for m in model.modules() if isinstance(m, FakeQuantizedLinear)]


def _int4_group_size(model: nn.Module) -> int:
    return int(_int4_fake_quantizers(model)[0].config.granularity.group_size)


def convert_to_int4(model: nn.Module) -> nn.Module:
    """The int4 weight-only model of a model prepared by :func:`prepare_int4_qat`; ``model`` is not modified.

    The Linear weights become torchao ``IntxUnpackedToInt8Tensor`` (int4 values held in int8, one float scale per
    group); the output equals the fake-quantized model's output.

    Args:
        model: A model prepared by :func:`prepare_int4_qat` (and trained).

    Returns:
        A copy, in eval mode, with plain ``nn.Linear`` layers holding quantized weights.

    Raises:
        TypeError: If ``model`` has no layer prepared by :func:`prepare_int4_qat`.

    Example:
        >>> net = prepare_int4_qat(torch.nn.Sequential(torch.nn.Linear(64, 2)))
        >>> convert_to_int4(net)(torch.randn(3, 64)).shape
        torch.Size([3, 2])
    """
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    if not is_int4_prepared(model):
        raise TypeError(f"`model` must be prepared by `prepare_int4_qat`, got {type(model).__name__} without any")
    group_size = _int4_group_size(model)
    converted = copy.deepcopy(model)
    quantize_(converted, QATConfig(_int4_config(group_size), step="convert"), filter_fn=None)
    return converted.eval()


# -------------------------------------------------------------------------------------------------------- callback
class QuantizationAwareTraining(Callback):
    """Trains with fake quantization and hands back the real quantized model (fast INT8 by default) after ``fit``.

    Schemes:
        ``"int8"`` (default): weights of Linear and Conv layers int8 symmetric per output channel, activations uint8
        affine per tensor, Conv + BatchNorm folded, through PT2E (:func:`prepare_qat`). In ``setup`` (before Lightning
        restores a checkpoint and before ``configure_optimizers``) the model is exported with the first batch of the
        stage's dataloader (or ``example_inputs``), batch dimension dynamic, and replaced by the prepared graph. The
        result (:func:`convert_to_int8`) runs on oneDNN INT8 kernels.

        ``"int4_weight_only"``: the weights of the ``nn.Linear`` layers only, int4 in groups of ``group_size`` with a
        symmetric scale per group, activations in float (torchao's QAT, :func:`prepare_int4_qat`, for LLM-style
        models); the layers are swapped in place, nothing is exported. Result: :func:`convert_to_int4`.

    The module quantized is ``compression_target(pl_module)`` when the module names one (a distillation student; its
    ``.model`` when the student is a ``ClassificationModule``), else ``pl_module.model`` (a
    :class:`~lightning_compress.ClassificationModule`), or ``pl_module.<attribute>``. Its state (weights, BN
    statistics, observer ranges, scales and zero points) is part of the module's ``state_dict`` under unchanged
    parameter names, so checkpoints hold it and resuming or ``trainer.test(ckpt_path=...)`` re-prepares the same
    model and loads it. Callbacks that select parameters in ``on_fit_start`` (``GradualMagnitudePruning``,
    ``NMSparsity``) therefore see the prepared model, whatever the callback order; pruned weights stay exactly zero
    through fake quantization and conversion (symmetric weight quantization maps 0 to 0).

    Schedules are in epochs, fractional values allowed, counted in optimizer steps (``trainer.global_step``):
    fake quantization is off before ``start_epoch`` (INT8 observers already record ranges), observers are frozen
    from ``freeze_observers_epoch`` and BatchNorm statistics from ``freeze_bn_epoch`` (both INT8 only).

    After ``fit``, :attr:`quantized_model` holds the converted model (INT8: compiled with inductor freezing when
    ``compile_int8``); with ``evaluate_quantized`` its validation metrics are logged as ``val_int8/<metric>`` (or
    ``val_int4/``) at the end of ``fit``, and its test metrics as ``test_int8/<metric>`` next to ``test/<metric>``
    (for a module with ``split_batch`` and ``val_metrics``/``test_metrics``, as a ``ClassificationModule``, or a
    ``DistillationModule`` whose student is one).

    Args:
        scheme: ``"int8"`` or ``"int4_weight_only"`` (see above).
        start_epoch: Epoch (fractional allowed) from which fake quantization is applied.
        freeze_observers_epoch: Epoch from which scales and zero points stop changing; None: never. INT8 only.
        freeze_bn_epoch: Epoch from which BatchNorm uses and keeps its running statistics; None: never. INT8 only.
        filter_fn: ``filter_fn(layer, fqn) -> bool`` for each layer with a ``weight``; False keeps it in float.
        skip_first_conv: Keep the first convolution in float (INT8).
        skip_classifier: Keep the last ``nn.Linear`` (the classifier) in float.
        group_size: Input features per int4 scale (``"int4_weight_only"``): 16, 32, 64, 128 or 256.
        attribute: Name of the submodule of the LightningModule to quantize; None: see above.
        example_inputs: Inputs to export with (INT8); None: the first batch of the stage's dataloader.
        evaluate_quantized: Log the quantized model's metrics (see above).
        compile_int8: Compile the INT8 model with inductor freezing (the fast path; the first call compiles).
        verbose: 0 silent, 1 one line per phase change.

    Raises:
        ValueError: On any bad argument (all reported at once).

    Example:
        >>> qat = QuantizationAwareTraining(freeze_bn_epoch=2)
        >>> trainer = pl.Trainer(max_epochs=3, callbacks=[qat])
        >>> # trainer.fit(ClassificationModule(SmallCNN(), 10), datamodule); qat.quantized_model(x)
    """

    def __init__(
        self,
        scheme: str = "int8",
        start_epoch: float = 0.0,
        freeze_observers_epoch: Optional[float] = None,
        freeze_bn_epoch: Optional[float] = None,
        filter_fn: Optional[FilterFn] = None,
        skip_first_conv: bool = False,
        skip_classifier: bool = False,
        group_size: int = 32,
        attribute: Optional[str] = None,
        example_inputs: Optional[ExampleInputs] = None,
        evaluate_quantized: bool = True,
        compile_int8: bool = True,
        verbose: int = 1,
    ) -> None:
        errors = _validate(
            scheme, start_epoch, freeze_observers_epoch, freeze_bn_epoch, filter_fn, skip_first_conv,
            skip_classifier, group_size, attribute, example_inputs, evaluate_quantized, compile_int8, verbose,
        )  # fmt: skip
        if errors:
            raise ValueError("QuantizationAwareTraining: " + "; ".join(errors))
        self.scheme = scheme
        self.start_epoch = float(start_epoch)
        self.freeze_observers_epoch = freeze_observers_epoch
        self.freeze_bn_epoch = freeze_bn_epoch
        self.filter_fn = filter_fn
        self.skip_first_conv = skip_first_conv
        self.skip_classifier = skip_classifier
        self.group_size = group_size
        self.attribute = attribute
        self.example_inputs = example_inputs
        self.evaluate_quantized = evaluate_quantized
        self.compile_int8 = compile_int8
        self.verbose = verbose

        self.quantized_model: Optional[nn.Module] = None
        self.quantized_metrics: dict[str, float] = {}
        self._prepared: Optional[nn.Module] = None
        self._steps: dict[str, Optional[int]] = {"start": 0, "observers": None, "bn": None}
        self._phase: tuple[bool, bool, bool] = (True, False, False)  # fake quant on, observers frozen, BN frozen
        self._test_metrics: Optional[Any] = None
        self._example: Optional[ExampleInputs] = example_inputs

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(scheme=self.scheme, attribute=self.attribute)

    @property
    def prepared_model(self) -> Optional[nn.Module]:
        """The fake-quantized model being trained (INT8: a ``GraphModule``; None before ``setup``)."""
        return self._prepared

    @property
    def _prefix(self) -> str:
        return "int8" if self.scheme == "int8" else "int4"

    def convert(self) -> nn.Module:
        """The real quantized model of the prepared model as it is now (see :func:`convert_to_int8`).

        Raises:
            RuntimeError: Before ``setup`` (nothing is prepared yet).
        """
        if self._prepared is None:
            raise RuntimeError("nothing is prepared yet: the model is prepared in `setup` of `fit`/`test`")
        if self.scheme == "int8":
            return convert_to_int8(self._prepared, compile=self.compile_int8)  # type: ignore[arg-type]
        return convert_to_int4(self._prepared)

    def save_quantized(self, path: Union[str, os.PathLike]) -> None:
        """Save :attr:`quantized_model` with :func:`save_quantized` (with the inputs the model was exported with).

        Raises:
            RuntimeError: If there is no quantized model yet (before the end of ``fit`` or ``test``), or no example
                inputs are known (``int4_weight_only`` without ``example_inputs`` and no batch seen).
        """
        if self.quantized_model is None or self._example is None:
            raise RuntimeError(
                "there is no quantized model (or no example inputs) yet: it is built at the end of `fit` (or at the"
                " start of `test`)"
            )
        save_quantized(self.quantized_model, path, self._example)

    # ------------------------------------------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        parent, name, module = self._locate(pl_module)
        _check_composition(pl_module)
        if is_prepared(module) or (self.scheme != "int8" and is_int4_prepared(module)):
            self._prepared = module
            return
        if self.scheme == "int8" and isinstance(module, pl.LightningModule):
            raise ValueError(
                f"QuantizationAwareTraining exports a network, and `{name}` is a LightningModule"
                f" ({type(module).__name__}): pass `attribute=\"<its network>\"`"
            )
        inputs = self.example_inputs if self.example_inputs is not None else _first_inputs(trainer, pl_module, stage)
        self._example = _shrink(inputs)
        if self.scheme == "int8":
            prepared: nn.Module = prepare_qat(
                module, inputs, self.filter_fn, self.skip_first_conv, self.skip_classifier
            )
            set_qat_mode(prepared, module.training)  # type: ignore[arg-type]
            setattr(parent, name, prepared)
            count = len(_fake_quantizers(prepared))
        else:
            prepared = prepare_int4_qat(module, self.group_size, self.filter_fn, self.skip_classifier)
            count = len(_int4_fake_quantizers(prepared))
        self._prepared = prepared
        if self.verbose:
            rank_zero_info(f"QAT: {type(module).__name__} -> {self.scheme} fake quantization on {count} tensors")

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        batches = trainer.num_training_batches
        accumulate = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
        steps_per_epoch = math.ceil(batches / accumulate) if not math.isinf(batches) else None
        for key, epoch in (("start", self.start_epoch), ("observers", self.freeze_observers_epoch),
                           ("bn", self.freeze_bn_epoch)):  # fmt: skip
            if epoch is None or epoch == 0:
                self._steps[key] = None if epoch is None else 0
            elif steps_per_epoch is None:
                raise ValueError(
                    "the QAT schedule (`start_epoch`, `freeze_*_epoch`) needs a train dataloader with a length"
                )
            else:
                self._steps[key] = round(epoch * steps_per_epoch)
        self._apply_phase(trainer.global_step, force=True)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._apply_phase(trainer.global_step)
        self._sync(observe=not self._phase[1])

    @override
    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._sync(observe=False)

    @override
    def on_predict_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._sync(observe=False)

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._test_metrics = None
        host = _metrics_host(pl_module, "test_metrics")
        if self.evaluate_quantized and self._prepared is not None and host is not None:
            self.quantized_model = self.convert()
            self._test_metrics = host.test_metrics.clone(prefix=f"test_{self._prefix}/").to(pl_module.device)
            self._test_metrics.reset()

    @override
    def on_test_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._sync(observe=False)

    @override
    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        host = _metrics_host(pl_module, "test_metrics")
        if self._test_metrics is not None and self.quantized_model is not None and host is not None:
            _update_metrics(host, self.quantized_model, batch, self._test_metrics)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._test_metrics is not None:
            values = {k: float(v) for k, v in self._test_metrics.compute().items()}
            self.quantized_metrics.update(values)
            pl_module.log_dict(values)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._prepared is None:
            return
        self.quantized_model = self.convert()
        loaders = trainer.val_dataloaders
        host = _metrics_host(pl_module, "val_metrics")
        if not (self.evaluate_quantized and loaders is not None and host is not None):
            return
        metrics = host.val_metrics.clone(prefix=f"val_{self._prefix}/").to(pl_module.device)
        metrics.reset()
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            for batch in loader:
                batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                _update_metrics(host, self.quantized_model, batch, metrics)
        values = {k: float(v) for k, v in metrics.compute().items()}
        self.quantized_metrics.update(values)
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)
        if self.verbose:
            rank_zero_info(f"QAT: {self.scheme} model " + ", ".join(f"{k} = {v:.4f}" for k, v in values.items()))

    # ------------------------------------------------------------------------------------------------- state dict
    @override
    def state_dict(self) -> dict[str, Any]:
        # Scales, zero points, observer ranges and their enabled flags are buffers of the prepared graph: they are in
        # the module's state_dict. Only the phase flags live here (they are re-derived from the step on resume too).
        return {"phase": list(self._phase)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        phase = state_dict.get("phase", list(self._phase))
        self._phase = (bool(phase[0]), bool(phase[1]), bool(phase[2]))

    # ---------------------------------------------------------------------------------------------------- helpers
    def _locate(self, pl_module: pl.LightningModule) -> tuple[nn.Module, str, nn.Module]:
        """``(parent, attribute name, module)`` of the module to quantize."""
        if self.attribute is not None:
            module = pl_module.get_submodule(self.attribute)
            path = self.attribute
        else:
            target = compression_target(pl_module)
            if target is not pl_module:
                path = next((n for n, m in pl_module.named_modules() if m is target), None)
                if path is None:
                    raise ValueError("`compression_target` of the LightningModule is not one of its submodules")
                module = target
                inner = getattr(target, "model", None)
                if isinstance(target, pl.LightningModule) and isinstance(inner, nn.Module):
                    module, path = inner, f"{path}.model"  # a ClassificationModule student: its network
            elif isinstance(getattr(pl_module, "model", None), nn.Module):
                module, path = pl_module.model, "model"
            else:
                raise ValueError(
                    f"QuantizationAwareTraining does not know which submodule of {type(pl_module).__name__} to"
                    " quantize: pass `attribute=\"<name of the submodule>\"` (a ClassificationModule's is `model`)"
                )
        parent_name, _, name = path.rpartition(".")
        return pl_module.get_submodule(parent_name) if parent_name else pl_module, name, module

    def _apply_phase(self, step: int, force: bool = False) -> None:
        assert self._prepared is not None
        start, observers, bn = self._steps["start"], self._steps["observers"], self._steps["bn"]
        phase = (
            start is not None and step >= start,
            observers is not None and step >= observers,
            bn is not None and step >= bn,
        )
        if phase == self._phase and not force:
            return
        fake_quant, frozen_obs, frozen_bn = phase
        if self.scheme == "int8":
            for fq in _fake_quantizers(self._prepared):
                fq.enable_fake_quant(fake_quant)
            set_qat_mode(
                self._prepared,  # type: ignore[arg-type]
                self._prepared.training,
                freeze_bn=frozen_bn,
                freeze_observers=frozen_obs,
            )
        else:
            for fq in _int4_fake_quantizers(self._prepared):
                fq.enabled = fake_quant
        if self.verbose and phase != self._phase:
            rank_zero_info(
                f"QAT step {step}: fake quant {'on' if fake_quant else 'off'}, observers"
                f" {'frozen' if frozen_obs else 'live'}, BN statistics {'frozen' if frozen_bn else 'live'}"
            )
        self._phase = phase

    def _sync(self, observe: bool) -> None:
        """Follow the module's mode for BatchNorm and Dropout; observers record in training steps only.

        Lightning (>= 2.2) trains a submodule in the mode it was given, so a model passed in eval mode trains with
        frozen BatchNorm statistics and no dropout; its observers must record all the same.
        """
        if self._prepared is not None and is_prepared(self._prepared):
            _sync_mode(self._prepared)  # type: ignore[arg-type]
            for fq in _fake_quantizers(self._prepared):
                fq.enable_observer(observe)


# ---------------------------------------------------------------------------------------------------------- module
def _metrics_host(pl_module: Any, name: str) -> Optional[Any]:
    """The module whose ``split_batch`` and ``<name>`` metrics evaluate the quantized model: ``pl_module`` itself, or
    the student of a distillation module."""
    for host in (pl_module, getattr(pl_module, "student", None)):
        if host is not None and hasattr(host, "split_batch") and hasattr(host, name):
            return host
    return None


def _check_composition(pl_module: Any) -> None:
    """Feature distillation reads submodule outputs through forward hooks, which an exported graph never calls."""
    if getattr(pl_module, "features", None) and hasattr(pl_module, "student") and hasattr(pl_module, "teacher"):
        raise ValueError(
            "QuantizationAwareTraining composes with DistillationModule on logits only: its `features` pairs read"
            " student submodules through forward hooks, which the exported QAT graph does not call; use"
            " `features=()`"
        )


def _first_inputs(trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> Any:
    loop = {
        "fit": trainer.fit_loop,
        "validate": trainer.validate_loop,
        "test": trainer.test_loop,
        "predict": trainer.predict_loop,
    }[stage]
    try:
        loader = loop._data_source.dataloader()
        while isinstance(loader, (list, tuple)) or isinstance(loader, Mapping):
            loader = loader[0] if isinstance(loader, (list, tuple)) else next(iter(loader.values()))
        batch = next(iter(loader))
    except Exception as err:
        raise RuntimeError(
            f"QuantizationAwareTraining exports the model with the first batch of the {stage} dataloader and could not"
            f" get one ({type(err).__name__}: {err}); pass `example_inputs=` to the callback"
        ) from err
    host = _metrics_host(pl_module, "split_batch")
    if host is not None:
        return host.split_batch(batch)[0]
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


@torch.no_grad()
def _update_metrics(host: Any, model: nn.Module, batch: Any, metrics: Any) -> None:
    inputs, labels = host.split_batch(batch)
    out = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
    logits = out.logits if hasattr(out, "logits") else out
    preds = host._predictions(logits) if hasattr(host, "_predictions") else logits
    metrics.update(preds, labels.float() if getattr(host, "is_regression", False) else labels)


def _validate(
    scheme: Any,
    start_epoch: Any,
    freeze_observers_epoch: Any,
    freeze_bn_epoch: Any,
    filter_fn: Any,
    skip_first_conv: Any,
    skip_classifier: Any,
    group_size: Any,
    attribute: Any,
    example_inputs: Any,
    evaluate_quantized: Any,
    compile_int8: Any,
    verbose: Any,
) -> list[str]:
    """Every problem with the constructor arguments, as messages naming the argument, the value and what is allowed."""
    errors = []

    def is_number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if scheme not in SCHEMES:
        errors.append(f"`scheme` can be {', '.join(SCHEMES)}, got {scheme!r}")
    if not (is_number(start_epoch) and start_epoch >= 0):
        errors.append(f"`start_epoch` must be a number >= 0, got {start_epoch!r}")
    for name, value in (("freeze_observers_epoch", freeze_observers_epoch), ("freeze_bn_epoch", freeze_bn_epoch)):
        if value is None:
            continue
        if scheme == "int4_weight_only":
            errors.append(f"`{name}` applies to `scheme=\"int8\"` only (int4 weights have no observers), got {value!r}")
        elif not (is_number(value) and value >= 0):
            errors.append(f"`{name}` must be a number >= 0 or None, got {value!r}")
        elif is_number(start_epoch) and value < start_epoch:
            errors.append(f"`{name}` must be >= `start_epoch` ({start_epoch}) or None, got {value!r}")
    if filter_fn is not None and not callable(filter_fn):
        errors.append(f"`filter_fn` must be a callable(module, fqn) -> bool or None, got {filter_fn!r}")
    for name, value in (
        ("skip_first_conv", skip_first_conv),
        ("skip_classifier", skip_classifier),
        ("evaluate_quantized", evaluate_quantized),
        ("compile_int8", compile_int8),
    ):
        if not isinstance(value, bool):
            errors.append(f"`{name}` must be a bool, got {value!r}")
    if isinstance(group_size, bool) or group_size not in GROUP_SIZES:
        errors.append(f"`group_size` can be {', '.join(map(str, GROUP_SIZES))}, got {group_size!r}")
    if attribute is not None and not (isinstance(attribute, str) and attribute):
        errors.append(f"`attribute` must be a submodule name or None, got {attribute!r}")
    if example_inputs is not None and not isinstance(example_inputs, (Tensor, tuple, list, Mapping)):
        errors.append(
            "`example_inputs` must be a tensor, a tuple of inputs, a dict of keyword inputs or None,"
            f" got {type(example_inputs).__name__}"
        )
    if verbose not in (0, 1) or isinstance(verbose, bool):
        errors.append(f"`verbose` can be 0 or 1, got {verbose!r}")
    return errors
