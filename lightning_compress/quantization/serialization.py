"""Saving and loading a converted quantized model as a ``torch.export`` program (``.pt2``).

Example:
    >>> save_quantized(int8_model, "model_int8.pt2", torch.randn(2, 1, 28, 28))  # doctest: +SKIP
    >>> model = load_quantized("model_int8.pt2")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Union

import torch
from torch import nn

from lightning_compress.quantization.export_inputs import ExampleInputs, as_args_kwargs, dynamic_shapes, shrink_inputs
from lightning_compress.quantization.pt2e import FrozenInt8

__all__ = ["load_quantized", "save_quantized"]


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
    args, kwargs = as_args_kwargs(shrink_inputs(example_inputs))
    with torch.no_grad():
        program = torch.export.export(graph, args, kwargs, dynamic_shapes=dynamic_shapes(args, kwargs))
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
    return FrozenInt8(module) if compile else module


# ----------------------------------------------------------------------------------------------------------- int4
