"""Loading a compressed-tensors weight-only folder (``pack-quantized``: W4A16, W8A16, from this library or from
llm-compressor) with its Linear layers as this library's packed INT4 / INT8 modules, run by the weight-only kernels.

``transformers`` loads such a folder as dense float ``Linear`` layers (it de-compresses every weight on the first
forward pass): the memory and the speed of the float model. :func:`load_packed` builds the architecture its
``config.json`` names (transformers classes only, never remote code), swaps every quantized Linear for an
:class:`~lightning_compress.quantization.weight_only.weight_only_linear.Int4WeightOnlyLinear` (2-4 bits) or
``Int8WeightOnlyLinear`` (5-8 bits, symmetric per channel) built from the stored codes, scales and zero points, and
loads the other tensors. The model computes what transformers' model computes, up to the kernels' compute dtype.
Files are read with safetensors (no pickle) after their headers are checked.

Example:
    >>> lm = load_packed("smollm2-w4a16", dtype=torch.bfloat16)  # doctest: +SKIP
    >>> type(lm.model.layers[0].mlp.up_proj).__name__  # doctest: +SKIP
    'Int4WeightOnlyLinear'
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn

from lightning_compress.core.file_kinds import describe_file, file_kind
from lightning_compress.core.tensor_file import read_tensor_header
from lightning_compress.export.compressed_tensors_layout import PACK_QUANTIZED, unpack_int32
from lightning_compress.quantization.weight_only.weight_only_linear import Int4WeightOnlyLinear, Int8WeightOnlyLinear

__all__ = ["load_packed", "read_hf_folder"]

_EXPECTED = "a Hugging Face folder with a compressed-tensors pack-quantized config.json and safetensors weights"


def _config(folder: Path, what: str) -> dict[str, Any]:
    path = folder / "config.json"
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {str(folder)!r} must be {_EXPECTED}, found {describe_file(folder)}")
    if file_kind(path) != "json":
        raise ValueError(f"{what} {str(folder)!r} must be {_EXPECTED}; its config.json is {describe_file(path)}")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{what} {str(folder)!r}: config.json holds a {type(data).__name__}, not a JSON object")
    return data


def _weight_files(folder: Path, what: str) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        if file_kind(index) != "json":
            raise ValueError(f"{what} {str(folder)!r}: {index.name} is {describe_file(index)}, not JSON")
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        names = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
        if not names or not all(isinstance(n, str) and "/" not in n and n.endswith(".safetensors") for n in names):
            raise ValueError(f"{what} {str(folder)!r}: {index.name} names no shard files (or names files elsewhere)")
        return [folder / n for n in names]
    single = folder / "model.safetensors"
    if not single.exists():
        raise FileNotFoundError(f"{what} {str(folder)!r} must be {_EXPECTED}; it has no model.safetensors")
    return [single]


def read_hf_folder(folder: Union[str, os.PathLike], what: str = "`path`") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(config.json as a dict, every tensor)`` of a Hugging Face safetensors folder, each weight file's header
    checked before it is read.

    Raises:
        FileNotFoundError: If the folder or its weights are missing.
        ValueError: If config.json is not JSON or a weight file is not a consistent safetensors file (named).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    config = _config(folder, what)
    tensors: dict[str, Tensor] = {}
    for path in _weight_files(folder, what):
        read_tensor_header(path, f"{what} weight file", "a safetensors file of weights")
        try:
            tensors.update(load_file(str(path)))
        except Exception as err:  # safetensors' own errors: a file it cannot read
            raise ValueError(f"{what} weight file {str(path)!r} does not load: {type(err).__name__}: {err}") from None
    return config, tensors


def _architecture(config: dict[str, Any], folder: Path, what: str) -> type:
    import transformers

    names = config.get("architectures") or []
    cls = getattr(transformers, names[0], None) if names and isinstance(names[0], str) else None
    if cls is None or not hasattr(cls, "_from_config"):
        raise ValueError(f"{what} {str(folder)!r}: config.json names the architecture {names[:1]}, which is no"
                         " transformers class (models that need their own code are not loaded)")  # fmt: skip
    return cls


def _matches(name: str, module: nn.Module, targets: list[str]) -> bool:
    for target in targets:
        if target.startswith("re:"):
            if re.match(target[3:], name):
                return True
        elif target == name or target == type(module).__name__:
            return True
    return False


def _packed_module(fqn: str, tensors: dict[str, Tensor], args: dict[str, Any], dtype: torch.dtype) -> nn.Module:
    bits, symmetric = int(args.get("num_bits", 0)), bool(args.get("symmetric", True))
    group_size, strategy = args.get("group_size"), args.get("strategy")
    if args.get("type", "int") != "int" or not 2 <= bits <= 8 or strategy not in ("group", "channel"):
        raise ValueError(f"layer {fqn!r}: weights of {args} have no packed module here (integer grids of 2-8 bits per"
                         " group or channel)")  # fmt: skip
    shape = tensors.get(f"{fqn}.weight_shape")
    packed, scale = tensors[f"{fqn}.weight_packed"], tensors.get(f"{fqn}.weight_scale")
    if shape is None or scale is None or shape.numel() != 2:
        raise ValueError(f"layer {fqn!r}: weight_shape / weight_scale missing or malformed")
    out_features, in_features = (int(v) for v in shape.tolist())
    offset = 1 << (bits - 1)
    signed = unpack_int32(packed, bits, in_features)
    groups = 1 if strategy == "channel" else in_features // int(group_size)
    if tuple(signed.shape) != (out_features, in_features) or tuple(scale.shape) != (out_features, groups):
        raise ValueError(f"layer {fqn!r}: weight_packed {tuple(packed.shape)} / weight_scale {tuple(scale.shape)} do"
                         f" not fit a {out_features} x {in_features} weight in {groups} group(s)")  # fmt: skip
    zero = torch.full((out_features, groups), float(offset))
    if not symmetric:
        zp = tensors.get(f"{fqn}.weight_zero_point")
        if zp is None:
            raise ValueError(f"layer {fqn!r}: an asymmetric grid without weight_zero_point")
        zero = unpack_int32(zp, bits, out_features, packed_dim=0).float() + offset
    bias = tensors.get(f"{fqn}.bias")
    if bits <= 4:
        codes = (signed.to(torch.int16) + offset).to(torch.uint8)
        return Int4WeightOnlyLinear.from_codes(codes, scale.float(), zero, None if strategy == "channel" else
                                               int(group_size), bias, bits, dtype=dtype)  # fmt: skip
    if not symmetric or strategy != "channel":
        raise ValueError(f"layer {fqn!r}: {bits}-bit weights run on the INT8 weight-only kernel, which takes symmetric"
                         f" per-channel grids; got symmetric={symmetric}, strategy={strategy!r}")  # fmt: skip
    return Int8WeightOnlyLinear.from_codes(signed, scale.reshape(-1).float(), bias, dtype=dtype)


def _set(model: nn.Module, fqn: str, module: nn.Module) -> None:
    parent, _, child = fqn.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def load_packed(path: Union[str, os.PathLike], dtype: torch.dtype = torch.bfloat16, what: str = "`path`") -> nn.Module:
    """The model of a compressed-tensors ``pack-quantized`` folder with its quantized Linear layers as packed INT4 /
    INT8 weight-only modules, in evaluation mode on the CPU.

    Args:
        path: The folder (``config.json`` + ``model.safetensors`` or shards with an index).
        dtype: Compute dtype of the weight-only kernels (``torch.bfloat16``: the CPU INT4 kernel's fastest; or
            ``torch.float32``). The float layers keep the dtype of the config.
        what: How to call the folder in messages.

    Raises:
        FileNotFoundError: If the folder or its weights are missing.
        ValueError: If it is not such a folder (no compressed-tensors config, another format such as W8A8
            ``int-quantized``, an unknown architecture), a weight file is truncated or foreign, or the tensors do not
            fit the architecture; the message names the folder and the layer.

    Example:
        >>> lm = load_packed("smollm2-w4a16")  # doctest: +SKIP
    """
    from transformers import AutoConfig

    folder = Path(path)
    config_data, tensors = read_hf_folder(folder, what)
    qc = config_data.get("quantization_config")
    if not isinstance(qc, dict) or qc.get("quant_method") != "compressed-tensors":
        raise ValueError(f"{what} {str(folder)!r} must be {_EXPECTED}; its config.json has no compressed-tensors"
                         " quantization_config (a float folder loads with transformers' from_pretrained)")  # fmt: skip
    groups = qc.get("config_groups") or {}
    formats = {g.get("format") or qc.get("format") for g in groups.values() if isinstance(g, dict)}
    if formats != {PACK_QUANTIZED}:
        raise ValueError(
            f"{what} {str(folder)!r} holds the compressed-tensors format(s) {sorted(map(str, formats))}; load_packed"
            f" reads {PACK_QUANTIZED} (weight-only W4A16 / W8A16). A W8A8 int-quantized folder loads with"
            " transformers' from_pretrained (compressed-tensors installed) or runs in vLLM"
        )
    cls = _architecture(config_data, folder, what)
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = cls._from_config(config)
    ignore = list(qc.get("ignore") or [])
    swapped: set[str] = set()
    for fqn, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or f"{fqn}.weight_packed" not in tensors:
            continue
        spec = next((g for g in groups.values() if _matches(fqn, module, list(g.get("targets") or []))), None)
        if spec is None or _matches(fqn, module, ignore):
            raise ValueError(f"{what} {str(folder)!r}: layer {fqn!r} is stored packed but no config group targets it")
        _set(model, fqn, _packed_module(fqn, tensors, spec.get("weights") or {}, dtype))
        swapped.add(fqn)
    rest = {k: v for k, v in tensors.items() if k.rpartition(".")[0] not in swapped}
    result = model.load_state_dict(rest, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in result.missing_keys if k not in tied and k.rpartition(".")[0] not in swapped]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{what} {str(folder)!r}: the weights do not fit {cls.__name__}: missing {missing[:6]}, unexpected"
            f" {list(result.unexpected_keys)[:6]}"
        )
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.eval()
