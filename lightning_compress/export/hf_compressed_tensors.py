"""Hugging Face folders with a compressed-tensors ``quantization_config``: what plain ``transformers`` (with the
``compressed-tensors`` package) and vLLM load, for the schemes this library produces.

- **W4A16 / W8A16** (weight-only, ``pack-quantized``): a Hugging Face model whose Linear layers were swapped for
  :class:`~lightning_compress.quantization.weight_only.weight_only_linear.Int4WeightOnlyLinear` /
  ``Int8WeightOnlyLinear`` (``one_shot_quantize`` then ``to_weight_only_``: GPTQ, AWQ, RTN). INT4 grids keep their
  group scales (and zero points when asymmetric); INT8 is symmetric per output channel.
- **W8A8** (``int-quantized``): an INT8 model of QAT or PTQ (``convert_to_int8``, ``quantize``: weights int8
  symmetric per channel, inputs of each Linear uint8 affine per tensor, static), written into the architecture of
  ``hf_model``, the float Hugging Face model it was quantized from. Every tensor comes from the INT8 graph (the
  trained or smoothed weights, the int8 weights and the activation scales); uint8 activations ``(q, z)`` are stored as
  compressed-tensors' int8 ``(q - 128, z - 128)``: the same values. The folder refuses graphs that quantize anything
  but Linear inputs and weights (a Conv, a quantized max-pool), and the dynamic scheme.
- A float (or pruned) Hugging Face model: a plain dense ``save_pretrained`` folder, no ``quantization_config``.
  compressed-tensors removed its sparse formats (``sparse-bitmask``, ``sparse-24-bitmask``, ``marlin-24``) in 2026,
  so pruned models are written dense: the zeros are stored as zeros.

The reference is the fake-quantized model that was exported: transformers de-compresses the weights to exactly the
float weights our modules compute with, and fake-quantizes W8A8 inputs with the stored scales (its rounding of
``x / s + z`` may differ from PT2E's ``x * (1 / s)`` by one step at exact ties). Layers with AWQ input scales are
refused: the library keeps ``x / s`` with the layer, and a compressed-tensors Linear has no place for it.

Example:
    >>> model, result = one_shot_quantize(lm, windows, method="gptq", bits=4, group_size=64)  # doctest: +SKIP
    >>> to_weight_only_(model, result, dtype=torch.float32)  # doctest: +SKIP
    >>> save_hf_compressed_tensors(model, "smollm2-w4a16")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from lightning_compress.core.files import atomic_folder
from lightning_compress.export.compressed_tensors_layout import (
    INT_QUANTIZED,
    PACK_QUANTIZED,
    pack_int32,
    quantization_args,
    quantization_config,
)
from lightning_compress.export.int8_graph import (
    Int8Layer,
    int8_layers,
    is_int8_graph,
    reference_graph,
    stray_quantized_ops,
)
from lightning_compress.quantization.weight_only.weight_only_linear import Int4WeightOnlyLinear, Int8WeightOnlyLinear

__all__ = ["HFExport", "is_hf_model", "save_hf_compressed_tensors"]

_WEIGHTS = "model.safetensors"
ASYMMETRIC_WARNING = (
    "asymmetric weight grids are written in compressed-tensors' packed layout (zero points packed along the output"
    " dimension), which vLLM and load_packed read; transformers 5.24 with compressed-tensors 0.20 cannot load them: it"
    " builds the compressed layers on the meta device, where compressed-tensors leaves weight_zero_point unpacked, and"
    " refuses the size mismatch. Use symmetric grids (the default) for folders that transformers must load"
)


@dataclass
class HFExport:
    """What :func:`save_hf_compressed_tensors` wrote.

    Attributes:
        path: The folder.
        scheme: ``"W4A16"``, ``"W8A16"``, ``"W8A8"``, a ``+``-joined mix, or ``"dense"``.
        format: The compressed-tensors format (``pack-quantized``, ``int-quantized``) or ``"dense"``.
        quantized: The quantized Linear layers.
        ignored: The Linear layers left in float (the ``ignore`` list).
        bytes: Size of the weights file.
    """

    path: Path
    scheme: str
    format: str
    quantized: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    bytes: int = 0


def is_hf_model(model: Any) -> bool:
    """Whether ``model`` is a transformers ``PreTrainedModel``."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is in the nlp extra
        return False
    return isinstance(model, PreTrainedModel)


def _group_key(args: dict[str, Any], inputs: Optional[dict[str, Any]]) -> str:
    return json.dumps([args, inputs], sort_keys=True)


def _weight_only_tensors(fqn: str, module: nn.Module, dtype: torch.dtype) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The pack-quantized tensors and the weight ``QuantizationArgs`` of one weight-only module."""
    if module.input_scale_inv is not None:
        raise ValueError(
            f"layer {fqn!r} carries AWQ input scales (it computes (x / s) @ W^T), which the compressed-tensors format"
            " cannot hold: a compressed-tensors Linear has no per-input scale. Quantize with method='gptq' or 'rtn'"
            " for this format, or save the model with save_weight_only"
        )
    tensors: dict[str, Tensor] = {}
    if isinstance(module, Int4WeightOnlyLinear):
        bits, offset = module.bits, 1 << (module.bits - 1)
        codes = module.codes().to(torch.int16) - offset  # signed codes
        zero = module.zero.round().to(torch.int16)
        symmetric = bool((zero == offset).all())
        strategy = "channel" if module.group_size is None else "group"
        args = quantization_args(bits, symmetric, strategy, module.group_size)
        tensors["weight_packed"] = pack_int32(codes, bits)
        tensors["weight_scale"] = module.scale.to(dtype).contiguous()
        if not symmetric:
            tensors["weight_zero_point"] = pack_int32(zero - offset, bits, packed_dim=0)
            warnings.warn(ASYMMETRIC_WARNING, UserWarning, stacklevel=4)
    else:
        codes = module.weight_int8.to(torch.int16)
        args = quantization_args(8, True, "channel")
        tensors["weight_packed"] = pack_int32(codes, 8)
        tensors["weight_scale"] = module.scale.to(dtype).reshape(-1, 1).contiguous()
    tensors["weight_shape"] = torch.tensor([module.out_features, module.in_features], dtype=torch.int64)
    if module.bias is not None:
        tensors["bias"] = module.bias.to(dtype).contiguous()
    return {f"{fqn}.{k}": v for k, v in tensors.items()}, args


def _weight_only_state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, tuple[dict, list[str]]], str]:
    """The state dict with each weight-only module's entries replaced by pack-quantized ones, the config groups."""
    dtype = _model_dtype(model)
    modules = {
        fqn: m for fqn, m in model.named_modules() if isinstance(m, (Int4WeightOnlyLinear, Int8WeightOnlyLinear))
    }
    state = {k: v for k, v in model.state_dict().items() if not any(k.startswith(f"{fqn}.") for fqn in modules)}
    groups: dict[str, tuple[dict, list[str]]] = {}
    names = []
    for fqn, module in modules.items():
        tensors, args = _weight_only_tensors(fqn, module, dtype)
        state.update(tensors)
        scheme = f"W{args['num_bits']}A16" + ("" if args["symmetric"] else "-asym")
        names.append(scheme)
        groups.setdefault(_group_key(args, None), ({"weights": args}, []))[1].append(fqn)
    return state, groups, "+".join(sorted(set(names)))


def _model_dtype(model: nn.Module) -> torch.dtype:
    floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
    return floats[0] if floats else torch.float32


def _graph_state(graph: torch.fx.GraphModule) -> dict[str, Tensor]:
    return {name: t.detach() for name, t in (*graph.named_parameters(), *graph.named_buffers())}


def _prefix(hf_keys: list[str], graph_keys: list[str]) -> str:
    """The prefix the INT8 graph puts before the Hugging Face model's names (``""``, ``"model."``)."""
    for key in sorted(hf_keys, key=len, reverse=True):
        found = [g for g in graph_keys if g.endswith(key) and (len(g) == len(key) or g[-len(key) - 1] == ".")]
        if len(found) == 1:
            return found[0][: -len(key)]
    return ""


def _w8a8_state(int8_model: nn.Module, hf_model: nn.Module) -> tuple[dict[str, Tensor], dict, list[str]]:
    """The HF state dict of an INT8 graph: the graph's float tensors by name, its int8 Linear layers compressed."""
    graph = reference_graph(int8_model)
    stray = stray_quantized_ops(graph)
    layers = int8_layers(graph)
    hf_state = hf_model.state_dict()
    graph_state = _graph_state(graph)
    prefix = _prefix(list(hf_state), list(graph_state))
    linears = {fqn for fqn, m in hf_model.named_modules() if isinstance(m, nn.Linear)}
    problems = [f"{fqn} ({layer.op})" for fqn, layer in layers.items() if fqn.removeprefix(prefix) not in linears]
    problems += [f"{fqn} (dynamic activation scales)" for fqn, layer in layers.items() if layer.input_scale is None]
    if stray or problems:
        listed = "; ".join([*problems, *stray][:8])
        raise ValueError(
            "the hf-compressed-tensors format holds INT8 Linear layers (int8 weights per channel, static per-tensor"
            f" input scales) and nothing else, and this INT8 graph quantizes more: {listed}. Quantize only the Linear"
            " layers of a transformers model (static scheme), or export it to ONNX instead"
        )
    dtype = _model_dtype(hf_model)
    state: dict[str, Tensor] = {}
    missing = []
    quantized = {fqn.removeprefix(prefix): layer for fqn, layer in layers.items()}
    for key, value in hf_state.items():
        module, _, leaf = key.rpartition(".")
        if module in quantized and leaf == "weight":
            continue
        found = graph_state.get(prefix + key)
        if found is None and module in quantized and leaf == "bias" and quantized[module].bias is not None:
            found = quantized[module].bias
        if found is None:
            missing.append(key)
            continue
        state[key] = found.to(value.dtype).reshape(value.shape).contiguous()
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise ValueError(
            f"`hf_model` ({type(hf_model).__name__}) has tensors the INT8 graph does not hold: {shown}. Pass the float"
            " Hugging Face model the INT8 model was quantized from"
        )
    args: dict[str, Any] = {}
    for fqn, layer in quantized.items():
        state.update(_w8a8_tensors(fqn, layer, dtype))
        args = quantization_args(8, True, "channel")
    inputs = quantization_args(8, False, "tensor")
    groups = {_group_key(args, inputs): ({"weights": args, "input_activations": inputs}, list(quantized))}
    return state, groups, list(quantized)


def _w8a8_tensors(fqn: str, layer: Int8Layer, dtype: torch.dtype) -> dict[str, Tensor]:
    if bool((layer.weight_zero_point != 0).any()) or layer.weight.dim() != 2:
        raise ValueError(f"layer {fqn!r}: expected a symmetric int8 Linear weight, got zero points / shape "
                         f"{tuple(layer.weight.shape)}")  # fmt: skip
    low, high = layer.input_range
    shift = 128 if (low, high) == (0, 255) else 0  # uint8 (q, z) are the int8 (q - 128, z - 128)
    if (low - shift, high - shift) != (-128, 127):
        raise ValueError(f"layer {fqn!r}: its input is quantized to [{low}, {high}], not to 8 bits")
    assert layer.input_scale is not None and layer.input_zero_point is not None
    return {
        f"{fqn}.weight": layer.weight.contiguous(),
        f"{fqn}.weight_scale": layer.weight_scale.to(dtype).reshape(-1, 1).contiguous(),
        f"{fqn}.input_scale": torch.tensor([layer.input_scale], dtype=dtype),
        f"{fqn}.input_zero_point": torch.tensor([layer.input_zero_point - shift], dtype=torch.int8),
    }


def _dedupe(state: dict[str, Tensor], config: Any) -> dict[str, Tensor]:
    """Tensors shared under several names stored once where the config re-ties them on load, else copied."""
    tied = bool(getattr(config.get_text_config() if hasattr(config, "get_text_config") else config,
                        "tie_word_embeddings", False))  # fmt: skip
    seen: dict[tuple, str] = {}
    out = {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape)) if tensor.numel() else None
        if key is not None and key in seen:
            if tied:
                continue
            tensor = tensor.clone()
        if key is not None:
            seen.setdefault(key, name)
        out[name] = tensor.detach().cpu().contiguous()
    return out


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"`path` {str(path)!r} exists; pass overwrite=True to replace it (written to a temporary"
                              " folder and swapped in)")  # fmt: skip
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"`path` {str(path)!r} is a file; the hf-compressed-tensors format writes a folder")


def save_hf_compressed_tensors(
    model: nn.Module,
    path: Union[str, os.PathLike],
    hf_model: Optional[nn.Module] = None,
    tokenizer: Any = None,
    overwrite: bool = False,
) -> HFExport:
    """Write a Hugging Face folder (``config.json`` with a compressed-tensors ``quantization_config``,
    ``model.safetensors``) atomically: into a temporary sibling folder, then swapped in.

    Args:
        model: A ``PreTrainedModel`` (float, pruned, or holding weight-only INT4 / INT8 modules), or an INT8 model of
            QAT / PTQ (then ``hf_model`` is required).
        path: The folder to write.
        hf_model: The float ``PreTrainedModel`` an INT8 ``model`` was quantized from (its class and config; its
            tensor names and shapes).
        tokenizer: A tokenizer to save beside the weights (what vLLM and pipelines read), or None.
        overwrite: Replace an existing folder.

    Returns:
        :class:`HFExport`.

    Raises:
        FileExistsError: If ``path`` exists and ``overwrite`` is False.
        ValueError: If the model holds what the format cannot (AWQ input scales, a quantized Conv or max-pool, dynamic
            activation scales), naming the layer; or an INT8 model comes without ``hf_model``.
        TypeError: If ``model`` is neither a ``PreTrainedModel`` nor an INT8 graph.

    Example:
        >>> save_hf_compressed_tensors(int8_bert, "minilm-w8a8", hf_model=bert)  # doctest: +SKIP
        HFExport(path=PosixPath('minilm-w8a8'), scheme='W8A8', format='int-quantized', ...)
    """
    from safetensors.torch import save_file

    path = Path(path)
    _check_target(path, overwrite)
    if is_int8_graph(model):
        if not is_hf_model(hf_model):
            raise ValueError(
                "an INT8 graph exports to hf-compressed-tensors inside the architecture it was quantized from: pass"
                f" `hf_model=` the float transformers model (got {type(hf_model).__name__})"
            )
        assert hf_model is not None
        state, groups, quantized = _w8a8_state(model, hf_model)
        scheme, fmt, base = "W8A8", INT_QUANTIZED, hf_model
    elif is_hf_model(model):
        state, groups, scheme = _weight_only_state(model)
        quantized = [fqn for _, members in groups.values() for fqn in members]
        fmt, base = (PACK_QUANTIZED if quantized else "dense"), model
        scheme = scheme or "dense"
    else:
        raise TypeError(
            "the hf-compressed-tensors format writes transformers models: a PreTrainedModel (float, pruned or with"
            " weight-only INT4 / INT8 layers) or an INT8 graph with `hf_model=`; got"
            f" {type(model).__name__}, which is not one (export it to ONNX instead)"
        )
    linears = [fqn for fqn, m in base.named_modules() if isinstance(m, nn.Linear) or fqn in quantized]
    ignored = [fqn for fqn in linears if fqn not in quantized]
    config = base.config
    with atomic_folder(path) as tmp:
        config.save_pretrained(tmp)
        generation = getattr(base, "generation_config", None)
        if generation is not None and getattr(base, "can_generate", lambda: False)():
            generation.save_pretrained(tmp)
        data = json.loads((tmp / "config.json").read_text())
        data["architectures"] = [type(base).__name__]  # as save_pretrained records it: what loaders build
        if quantized:
            one = len(groups) == 1  # one scheme: every Linear but the ignored ones, as llm-compressor writes it
            entries = {f"group_{i}": {"targets": ["Linear"] if one else members, **spec, "output_activations": None,
                                      "format": fmt} for i, (spec, members) in enumerate(groups.values())}  # fmt: skip
            for entry in entries.values():
                entry.setdefault("input_activations", None)
            data["quantization_config"] = quantization_config(entries, fmt, ignored)
        (tmp / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        save_file(_dedupe(state, config), str(tmp / _WEIGHTS), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return HFExport(path, scheme, fmt, quantized, ignored, (path / _WEIGHTS).stat().st_size)
