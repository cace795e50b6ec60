"""INT4 weight-only quantization-aware training of Linear layers (torchao's eager QAT): int4 weights in groups with a
symmetric scale per group, activations in float, for LLM-style models.

Example:
    >>> net = prepare_int4_qat(torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 2)))
    >>> convert_to_int4(net)(torch.randn(3, 64)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
from torch import nn

from lightning_compress.core.selection import FilterFn, select_layers

__all__ = [
    "GROUP_SIZES",
    "convert_to_int4",
    "int4_fake_quantizers",
    "int4_group_size",
    "is_int4_prepared",
    "prepare_int4_qat",
]

GROUP_SIZES = (16, 32, 64, 128, 256)


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
    chosen = set(
        select_layers(
            model,
            lambda m, fqn: isinstance(m, nn.Linear) and (filter_fn is None or bool(filter_fn(m, fqn))),
            skip_classifier=skip_classifier,
        )
    )
    if not chosen:
        raise ValueError(
            f'`scheme="int4_weight_only"` quantizes nn.Linear layers and {type(model).__name__} has none left to'
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


def int4_fake_quantizers(model: nn.Module) -> list[nn.Module]:
    from torchao.quantization.qat import FakeQuantizedLinear

    return [m.weight_fake_quantizer for m in model.modules() if isinstance(m, FakeQuantizedLinear)]


def int4_group_size(model: nn.Module) -> int:
    return int(int4_fake_quantizers(model)[0].config.granularity.group_size)


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
    group_size = int4_group_size(model)
    converted = copy.deepcopy(model)
    quantize_(converted, QATConfig(_int4_config(group_size), step="convert"), filter_fn=None)
    return converted.eval()


# -------------------------------------------------------------------------------------------------------- callback
