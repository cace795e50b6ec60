"""Saving and loading a model whose Linear layers were swapped for weight-only INT4 / INT8 modules, as one
safetensors file (no pickle: loading runs no code).

The file holds the model's whole ``state_dict`` (the quantized layers' portable tensors: ``qweight`` with two 4-bit
codes per byte, ``scale``, ``zero``, or ``weight_int8`` and ``scale``; an ``Int8Embedding``'s int8 rows and float32
row scales) and, in its metadata, which layers are which module with which grid. A tensor held under several names
(an output head tied to the embedding; the int8 codes a tied head shares with an ``Int8Embedding``) is stored once;
the metadata names its aliases, and a shared buffer is one storage again after loading. Loading needs the float
architecture (e.g. ``AutoModelForCausalLM.from_config``): the listed layers are swapped for empty quantized modules,
then the tensors are loaded.

Example:
    >>> save_weight_only(model, "smollm2_w4.safetensors")  # doctest: +SKIP
    >>> model = load_weight_only(AutoModelForCausalLM.from_config(config), "smollm2_w4.safetensors")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from typing import Union

import torch
from torch import nn

from lightning_compress.core.files import atomic_path
from lightning_compress.quantization.weight_only.int8_embedding import Int8Embedding
from lightning_compress.quantization.weight_only.weight_only_linear import (
    Int4WeightOnlyLinear,
    Int8WeightOnlyLinear,
    _replace,
)

__all__ = ["FORMAT", "load_weight_only", "save_weight_only"]

FORMAT = "lightning_compress.weight_only/1"
_DTYPES = {"torch.bfloat16": torch.bfloat16, "torch.float32": torch.float32, "torch.float16": torch.float16}


def save_weight_only(model: nn.Module, path: Union[str, os.PathLike]) -> int:
    """Write ``model``'s state dict and its weight-only layout to ``path`` (safetensors, written atomically).

    Returns:
        The file's size in bytes.

    Raises:
        ValueError: If the model holds no weight-only layer.
    """
    from safetensors.torch import save_file

    layers = {}
    for fqn, module in model.named_modules():
        if isinstance(module, Int4WeightOnlyLinear):
            layers[fqn] = {"kind": "int4", "in": module.in_features, "out": module.out_features,
                           "group_size": module.group_size, "bits": module.bits, "bias": module.bias is not None,
                           "dtype": str(module.dtype)}  # fmt: skip
        elif isinstance(module, Int8WeightOnlyLinear):
            layers[fqn] = {"kind": "int8", "in": module.in_features, "out": module.out_features,
                           "bias": module.bias is not None, "dtype": str(module.dtype)}  # fmt: skip
        elif isinstance(module, Int8Embedding):
            layers[fqn] = {"kind": "int8_embedding", "in": module.num_embeddings, "out": module.embedding_dim,
                           "dtype": str(module.dtype)}  # fmt: skip
    if not layers:
        raise ValueError("save_weight_only: the model holds no Int4WeightOnlyLinear / Int8WeightOnlyLinear layer;"
                         " run to_weight_only_(model, result) first")  # fmt: skip
    tensors, aliases, seen = {}, {}, {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape)) if tensor.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        tensors[name] = tensor.detach().contiguous().cpu()
    meta = {"format": FORMAT, "layers": json.dumps(layers), "aliases": json.dumps(aliases)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return os.path.getsize(path)


def load_weight_only(model: nn.Module, path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu"):
    """Load a file of :func:`save_weight_only` into ``model``, the float architecture it was saved from (its weights
    are overwritten; the listed Linear layers are swapped for weight-only modules). In place; returns ``model``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If ``path`` is not such a file, or its layers do not fit ``model`` (named).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise FileNotFoundError(f"`path`: no such file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for a damaged header
        raise ValueError(f"`path` {path} is not a safetensors file: {err}") from err
    if meta.get("format") != FORMAT:
        raise ValueError(f"`path` {path} is not a weight-only model file (format {meta.get('format')!r}, expected"
                         f" {FORMAT!r}); write it with save_weight_only")  # fmt: skip
    layers, aliases = json.loads(meta["layers"]), json.loads(meta["aliases"])
    for fqn, spec in layers.items():
        try:
            old = model.get_submodule(fqn)
        except AttributeError as err:
            raise ValueError(f"{path}: the model has no layer {fqn!r} that the file quantized") from err
        shape = (
            ("num_embeddings", "embedding_dim") if spec["kind"] == "int8_embedding" else ("in_features", "out_features")
        )
        if (getattr(old, shape[0], None), getattr(old, shape[1], None)) != (spec["in"], spec["out"]):
            raise ValueError(f"{path}: layer {fqn!r} is {type(old).__name__} of another shape than the file's"
                             f" ({spec['in']} -> {spec['out']})")  # fmt: skip
        dtype = _DTYPES.get(spec["dtype"], torch.bfloat16)
        if spec["kind"] == "int4":
            new = Int4WeightOnlyLinear(spec["in"], spec["out"], spec["group_size"], spec["bias"], spec["bits"], dtype,
                                       device)  # fmt: skip
        elif spec["kind"] == "int8_embedding":
            new = Int8Embedding(spec["in"], spec["out"], dtype, device)
        else:
            new = Int8WeightOnlyLinear(spec["in"], spec["out"], spec["bias"], dtype, device)
        _replace(model, fqn, new)
    tensors = load_file(str(path), device=str(device))
    for name, target in aliases.items():
        tensors[name] = tensors[target]
    model.load_state_dict(tensors, strict=True)
    for name, target in aliases.items():  # a buffer saved once (int8 codes a tied head shares) is one storage again
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner)
        if attr in module._buffers:
            source, _, source_attr = target.rpartition(".")
            module._buffers[attr] = model.get_submodule(source)._buffers[source_attr]
    return model
