"""The on-disk layout of compressed-tensors checkpoints (the ``quantization_config`` of a Hugging Face ``config.json``
and the tensors of each quantized Linear), written and read without importing the ``compressed-tensors`` package.

Followed: compressed-tensors 0.20 (``compressors/pack_quantized``, ``compressors/naive_quantized``,
``quantization/quant_args.py``) and vLLM's compressed-tensors loader (``CompressedTensorsWNA16`` and
``CompressedTensorsW8A8Int8``, which create exactly these parameters).

vLLM source checked (2026-12-01, read only: vLLM needs a GPU and does not run here), in vllm-project/vllm:
``model_executor/layers/quantization/compressed_tensors/compressed_tensors.py`` at commit ``be696453ee1b`` (the
late-2025 loader, vLLM 0.11 line: ``format`` / ``config_groups[*].targets, weights, input_activations, format`` /
``ignore`` / ``sparsity_config`` / ``transform_config`` read; ``pack-quantized`` + weight-only channel / group ->
``CompressedTensorsWNA16(num_bits, strategy, symmetric, group_size, actorder)``; ``int-quantized`` + 8-bit static
per-tensor inputs, symmetric channel / tensor weights, symmetric or asymmetric inputs -> ``CompressedTensorsW8A8Int8``),
``schemes/compressed_tensors_w8a8_int8.py`` at ``c45614b5d83b`` (``weight`` int8 ``(out, in)``, ``weight_scale``
float32 ``(out, 1)``, ``input_scale`` float32 ``(1,)``, asymmetric ``input_zero_point`` int8 ``(1,)``: "stored in
the dtype of the weights") and ``schemes/compressed_tensors_wNa16.py`` at ``519b90d4648d`` plus a recent copy of that
file (2-8 bits; ``weight_packed`` int32 ``(out, ceil(in * bits / 32))`` packed along dim 1, ``weight_scale``
``(out, groups)`` in the model dtype, ``weight_shape`` int64 ``(2,)``, asymmetric 4 / 8 bits ``weight_zero_point``
int32 ``(ceil(out * bits / 32), groups)`` packed along dim 0, ``weight_g_idx`` only with ``actorder="group"``, which
is never written here). The tensors below match those names, shapes and dtypes (a scale written in fp32 is cast by
vLLM's loader). vLLM checks that the shards of a fused layer (q / k / v, gate / up) are all quantized or all in
``ignore``: keep them alike.

Per quantized Linear ``<name>``:

- ``pack-quantized`` (weight-only, 1-8 bits; vLLM reads 4 and 8): ``<name>.weight_packed`` int32 ``(out, ceil(in *
  bits / 32))``: the signed codes ``q in [-2^(b-1), 2^(b-1))`` offset by ``2^(b-1)`` and packed densely, element
  ``i`` of a row at bit ``i * bits`` of the row's bit stream (for 4 bits: 8 codes per int32, the first in the lowest
  nibble); ``<name>.weight_scale`` ``(out, groups)`` (``(out, 1)`` per channel); ``<name>.weight_shape`` int64
  ``[out, in]``; asymmetric grids also ``<name>.weight_zero_point``: the signed zero points ``(out, groups)`` packed the
  same way along dimension 0. A weight reads back as ``(q - zp) * scale``.
- ``int-quantized`` (W8A8): ``<name>.weight`` int8 ``(out, in)``, ``<name>.weight_scale`` ``(out, 1)``; a static
  input scheme also ``<name>.input_scale`` ``(1,)`` and, asymmetric, ``<name>.input_zero_point`` int8 ``(1,)``: the
  input is fake-quantized as ``(clamp(round(x / s + z), -128, 127) - z) * s``.

Example:
    >>> q = torch.tensor([[-8, 7, 0, 1, -1, 2, 3, 4]], dtype=torch.int8)
    >>> packed = pack_int32(q, 4)
    >>> packed.dtype, packed.shape, torch.equal(unpack_int32(packed, 4, 8), q)
    (torch.int32, torch.Size([1, 1]), True)
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = [
    "CT_VERSION",
    "INT_QUANTIZED",
    "PACK_QUANTIZED",
    "pack_int32",
    "quantization_args",
    "unpack_int32",
]

CT_VERSION = "0.20.1"  # the compressed-tensors release whose layout is written
PACK_QUANTIZED = "pack-quantized"
INT_QUANTIZED = "int-quantized"


def pack_int32(values: Tensor, bits: int, packed_dim: int = 1) -> Tensor:
    """Signed ``bits``-bit codes ``(rows, cols)`` (any integer dtype) packed densely into int32 along ``packed_dim``.

    Raises:
        ValueError: If ``bits`` is outside 1..8, the tensor is not 2-D, or a code is outside its signed range.
    """
    if not 1 <= bits <= 8 or values.dim() != 2:
        raise ValueError(f"pack_int32 packs 2-D codes of 1..8 bits, got bits={bits}, shape {tuple(values.shape)}")
    offset = 1 << (bits - 1)
    v = values.to(torch.int64) + offset
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= 1 << bits):
        raise ValueError(f"codes outside the signed {bits}-bit range [{-offset}, {offset - 1}]")
    if packed_dim == 0:
        v = v.T
    rows, cols = v.shape
    groups = math.ceil(cols / 32)
    v = torch.nn.functional.pad(v, (0, groups * 32 - cols)).reshape(rows * groups, 32)
    start = torch.arange(32, dtype=torch.int64) * bits
    word, offs = start // 32, start % 32
    out = torch.zeros(rows * groups, bits + 1, dtype=torch.int64)
    out.scatter_add_(1, word.expand_as(v), (v << offs) & 0xFFFFFFFF)
    spill = offs + bits > 32  # the high bits of a code that straddles two words
    if bool(spill.any()):
        high = v[:, spill] >> (32 - offs[spill])
        out.scatter_add_(1, (word[spill] + 1).expand_as(high), high)
    words = out[:, :bits].reshape(rows, groups * bits)[:, : math.ceil(cols * bits / 32)]
    words = torch.where(words >= 1 << 31, words - (1 << 32), words).to(torch.int32)
    return (words.T if packed_dim == 0 else words).contiguous()


def unpack_int32(packed: Tensor, bits: int, size: int, packed_dim: int = 1) -> Tensor:
    """The inverse of :func:`pack_int32`: int32 words -> signed int8 codes, ``size`` of them along ``packed_dim``.

    Raises:
        ValueError: If ``packed`` is not a 2-D int32 tensor holding at least ``size`` codes.
    """
    if packed.dtype != torch.int32 or packed.dim() != 2 or not 1 <= bits <= 8:
        raise ValueError(
            f"unpack_int32 reads 2-D int32 words of 1..8-bit codes, got {packed.dtype} {tuple(packed.shape)}"
        )
    w = packed.T if packed_dim == 0 else packed
    rows, words = w.shape
    if words * 32 < size * bits:
        raise ValueError(f"{words} int32 words per row hold {words * 32 // bits} {bits}-bit codes, fewer than {size}")
    u = w.to(torch.int64) & 0xFFFFFFFF
    start = torch.arange(size, dtype=torch.int64) * bits
    word, offs = start // 32, start % 32
    low = u[:, word] >> offs
    nxt = torch.where(word + 1 < words, word + 1, word)
    high = torch.where(offs + bits > 32, u[:, nxt] << (32 - offs), torch.zeros_like(low))
    codes = ((low | high) & ((1 << bits) - 1)) - (1 << (bits - 1))
    codes = codes.to(torch.int8)
    return (codes.T if packed_dim == 0 else codes).contiguous()


def quantization_args(
    bits: int,
    symmetric: bool,
    strategy: str,
    group_size: Optional[int] = None,
    dynamic: bool = False,
) -> dict[str, Any]:
    """The ``QuantizationArgs`` of compressed-tensors as JSON (integer type).

    Example:
        >>> quantization_args(4, True, "group", 128)
        {'num_bits': 4, 'type': 'int', 'symmetric': True, 'group_size': 128, 'strategy': 'group', 'dynamic': False}
    """
    return {"num_bits": bits, "type": "int", "symmetric": symmetric, "group_size": group_size, "strategy": strategy,
            "dynamic": dynamic}  # fmt: skip


def quantization_config(
    groups: dict[str, dict[str, Any]], fmt: str, ignore: list[str], version: str = CT_VERSION
) -> dict[str, Any]:
    """The ``quantization_config`` entry of ``config.json`` (compressed weights, no sparsity, no transforms)."""
    return {
        "config_groups": groups,
        "format": fmt,
        "global_compression_ratio": None,
        "ignore": ignore,
        "kv_cache_scheme": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": version,
    }
