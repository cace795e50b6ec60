"""Every workaround for torchao 0.18's PT2E quantization, in one place (remove them with the release that fixes them).

* :func:`conv_bn_pattern_cache`: torchao's conv-BN QAT fusion (``prepare_qat_pt2e``) and folding (``convert_pt2e``)
  re-trace up to 96 patterns with ``torch.export`` at every call (most of a convert's time): the traces
  are cached per process, and conv types the graph does not hold are skipped.
* :func:`x86_qat_quantizer`: the X86 quantizer raises IndexError on a conv kept in float that is followed by
  BatchNorm (an empty annotation); the empty annotations are removed.
* :func:`base_layer_classes`: the X86 quantizer finds Conv / Linear layers by the exact class name in the graph's
  ``nn_module_stack``, so a subclass (timm's ``Conv2dSame``: TF "SAME" padding, then ``F.conv2d``) stays
  unquantized; such layers are recorded under their torch base class.
* :func:`split_reused_call_sites`: the X86 quantizer's fusion rules fail on a module called more than once
  (torchvision's ``BasicBlock.relu``: "Input partition has more than one output node", pytorch/ao#4478); each call
  of a reused parameter-free module gets its own partition.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "CONV_OPS",
    "base_layer_classes",
    "conv_bn_pattern_cache",
    "split_reused_call_sites",
    "x86_qat_quantizer",
    "x86_quantizer",
]

_PATTERN_FACTORIES = (
    "_get_conv_bn_pattern",
    "_get_qat_conv_bn_pattern",
    "_get_qat_conv_bn_pattern_no_conv_bias",
    "_get_quantized_qat_conv_bn_pattern",
    "_get_folded_quantized_qat_conv_bn_pattern",
)
CONV_OPS = {
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
def conv_bn_pattern_cache() -> Any:
    """Make torchao's conv-BN QAT fusion (``prepare_qat_pt2e``) and folding (``convert_pt2e``) fast, same result.

    Both rewrite the graph with conv-BN patterns that torchao 0.18 traces with a strict ``torch.export`` at every call
    (96 patterns for one ``convert_pt2e``, for any model with BatchNorm: ``experiments/qat/README.md``), for conv1d,
    conv2d,
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
            op = CONV_OPS.get(getattr(conv_fn, "__name__", ""))
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
def x86_qat_quantizer(keep_float: list[str]) -> Any:
    """:func:`x86_quantizer` with the default QAT configuration (``is_qat=True``)."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    return x86_quantizer(keep_float, xiq.get_default_x86_inductor_quantization_config(is_qat=True))


def x86_quantizer(keep_float: list[str], config: Any) -> Any:
    """torchao's ``X86InductorQuantizer`` with ``config`` for every layer but ``keep_float`` (qualified names)."""
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
                is_conv = getattr(node.target, "_overloadpacket", None) in CONV_OPS.values()
                if is_conv and annotation is not None and not annotation.input_qspec_map:
                    del node.meta["quantization_annotation"]
            return model

    quantizer = Quantizer()
    quantizer.set_global(config)
    for fqn in keep_float:
        quantizer.set_module_name_qconfig(fqn, None)
    return quantizer


def split_reused_call_sites(graph_module: torch.fx.GraphModule) -> list[str]:
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


_BASES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def base_layer_classes(graph_module: torch.fx.GraphModule, model: nn.Module) -> list[str]:
    """Record the nodes of a strict subclass of ``nn.Conv1d/2d/3d`` or ``nn.Linear`` under that torch class.

    torch's ``get_source_partitions`` (which the X86 quantizer uses) compares the innermost ``nn_module_stack`` class
    of an exported node with ``"torch.nn.modules.conv.Conv2d"`` by name, so timm's ``Conv2dSame`` (a pad, then
    ``F.conv2d`` on the layer's own weight) is never annotated and stays float. The module's computation is unchanged;
    only the class name the quantizer matches on is that of its torch base.

    Args:
        graph_module: The exported graph (rewritten in place).
        model: The model it was exported from (to look the modules up).

    Returns:
        The qualified names of the layers so recorded.
    """
    modules = dict(model.named_modules())
    renamed = set()
    for node in graph_module.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if not stack or node.op != "call_function":
            continue
        key, (fqn, cls) = next(reversed(stack.items()))
        module = modules.get(fqn.split("@")[0])
        base = next((b for b in _BASES if isinstance(module, b)), None)
        if base is None or type(module) is base:
            continue
        stack[key] = (fqn, f"{base.__module__}.{base.__qualname__}")
        renamed.add(fqn)
    return sorted(renamed)
