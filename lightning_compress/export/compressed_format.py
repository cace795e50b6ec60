"""A file format that realises on disk what sparsity and INT8 save: a bitmask plus the non-zero values.

:func:`save_compressed` writes each tensor of a state dict in the cheapest of three encodings:

- ``dense``: the tensor as it is (small tensors, tensors with few zeros, tensor subclasses, non-strided layouts);
- ``bitmask``: the shape, a bitmask of the non-zero positions packed 8 per byte (:func:`~lightning_compress.pack_mask`)
  and the non-zero values (NaN included) in their dtype, in row-major order; when some zeros are ``-0.0`` (a pruned
  negative weight multiplied by a mask is), one more bit per zero keeps their signs. The float path is bit-exact;
- ``int8`` (when asked): the tensor quantized symmetrically per output channel (dimension 0) to int8 with fp32
  scales ``max|w_row| / 127``, stored as a bitmask of the non-zero int8 values plus those values when that is
  smaller. Loading returns exactly :func:`dequantize_per_channel` of what was saved; pruned (zero) weights stay
  exactly zero.

A 90 %-sparse weight costs ``1/8 + 0.1 x 4`` bytes per element as fp32 values (7.6x smaller than dense fp32; 6.3x
with the sign bits of ``-0.0`` zeros) and ``1/8 + 0.1`` bytes with int8 values (17.8x smaller). The file is an ordinary
``torch.save`` archive loaded with
``weights_only=True``.

Example:
    >>> net = torch.nn.Linear(64, 64)
    >>> with torch.no_grad():
    ...     net.weight[torch.rand(64, 64) < 0.9] = 0.0
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "net.lcz")
    >>> stats = save_compressed(net, path)
    >>> state = load_compressed(path)
    >>> bool(torch.equal(state["weight"], net.weight))
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import Tensor, nn

from lightning_compress.core.masks import pack_mask, unpack_mask

__all__ = [
    "CompressedStats",
    "FORMAT",
    "dequantize_per_channel",
    "load_compressed",
    "quantize_per_channel",
    "save_compressed",
]

FORMAT = "lightning_compress.compressed/1"
Int8Filter = Callable[[str, Tensor], bool]


@dataclass(frozen=True)
class CompressedStats:
    """What :func:`save_compressed` wrote: the encoding of each tensor and the payload bytes, dense and stored."""

    encodings: dict[str, str] = field(default_factory=dict)
    dense_bytes: int = 0
    stored_bytes: int = 0
    file_bytes: int = 0

    @property
    def ratio(self) -> float:
        """Dense payload bytes over stored payload bytes."""
        return self.dense_bytes / self.stored_bytes if self.stored_bytes else math.inf


def quantize_per_channel(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per output channel: ``q = clamp(round(w / s), -127, 127)``, ``s = max|w_row| / 127``.

    Args:
        weight: Float tensor ``(out, ...)``, at least 1-D.

    Returns:
        ``(q, scale)``: int8 of ``weight``'s shape and fp32 ``(out,)`` (1.0 for an all-zero row).

    Example:
        >>> q, s = quantize_per_channel(torch.tensor([[0.5, -1.0], [0.0, 0.0]]))
        >>> q.tolist(), s.tolist()
        ([[64, -127], [0, 0]], [0.007874015718698502, 1.0])
    """
    w = weight.detach().float()
    amax = w.reshape(w.shape[0], -1).abs().amax(dim=1) if w.numel() else w.new_zeros(w.shape[0])
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(torch.round(w / scale.view(shape)), -127, 127).to(torch.int8)
    return q, scale


def dequantize_per_channel(q: Tensor, scale: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``q * scale`` per output channel, in ``dtype``: the values :func:`load_compressed` returns for int8 entries.

    Example:
        >>> dequantize_per_channel(torch.tensor([[64, -127]], dtype=torch.int8), torch.tensor([0.5])).tolist()
        [[32.0, -63.5]]
    """
    shape = (-1,) + (1,) * (q.dim() - 1)
    return (q.to(torch.float32) * scale.to(torch.float32).view(shape)).to(dtype)


def _plain(t: Any) -> bool:
    return type(t) in (Tensor, nn.Parameter) and t.layout == torch.strided and not t.is_complex()


def _default_int8(name: str, t: Tensor) -> bool:
    return t.is_floating_point() and t.dim() >= 2


def _encode(name: str, t: Tensor, int8: Union[bool, Int8Filter]) -> dict[str, Any]:
    t = t.detach().cpu().contiguous()
    use_int8 = bool(int8) and _plain(t) and (int8(name, t) if callable(int8) else _default_int8(name, t))
    if use_int8:
        q, scale = quantize_per_channel(t)
        mask = q != 0
        nnz = int(mask.sum())
        entry: dict[str, Any] = {"kind": "int8", "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                                 "scale": scale.contiguous()}  # fmt: skip
        if (t.numel() + 7) // 8 + nnz < t.numel():
            entry.update(mask=pack_mask(mask), values=q[mask].clone())
        else:
            entry.update(mask=None, values=q.reshape(-1).clone())
        return entry
    if not _plain(t) or t.numel() < 64:
        return {"kind": "dense", "value": t.clone() if _plain(t) else t}
    mask = t != 0 if t.dtype != torch.bool else t.clone()  # NaN != 0: NaNs are stored as values, bits intact
    nnz = int(mask.sum())
    negative_zeros = None
    if t.is_floating_point():
        signs = torch.signbit(t[~mask])  # a pruned negative weight times 0 is -0.0: keep its sign bit
        negative_zeros = pack_mask(signs) if bool(signs.any()) else None
    sign_bytes = 0 if negative_zeros is None else negative_zeros.numel()
    if (t.numel() + 7) // 8 + sign_bytes + nnz * t.element_size() >= t.numel() * t.element_size():
        return {"kind": "dense", "value": t.clone()}
    return {"kind": "bitmask", "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
            "mask": pack_mask(mask), "values": t[mask].clone(), "negative_zeros": negative_zeros}  # fmt: skip


def _payload(entry: Mapping[str, Any]) -> int:
    return sum(v.numel() * v.element_size() for v in entry.values() if isinstance(v, Tensor))


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r} in a compressed file")
    return dtype


def _decode(name: str, entry: Mapping[str, Any]) -> Tensor:
    kind = entry.get("kind")
    if kind == "dense":
        return entry["value"]
    shape, dtype = torch.Size(entry["shape"]), _dtype(entry["dtype"])
    if kind == "bitmask":
        mask = unpack_mask(entry["mask"], shape)
        out = torch.zeros(shape, dtype=dtype)
        signs = entry.get("negative_zeros")
        if signs is not None:
            zeros = ~mask
            negative = unpack_mask(signs, (int(zeros.sum()),))
            out[zeros] = torch.where(negative, -0.0, 0.0).to(dtype)
        out[mask] = entry["values"]
        return out
    if kind == "int8":
        if entry["mask"] is None:
            q = entry["values"].view(shape)
        else:
            q = torch.zeros(shape, dtype=torch.int8)
            q[unpack_mask(entry["mask"], shape)] = entry["values"]
        return dequantize_per_channel(q, entry["scale"], dtype)
    raise ValueError(f"tensor {name!r}: unknown encoding {kind!r}")


def save_compressed(
    model: Union[nn.Module, Mapping[str, Tensor]],
    path: Union[str, os.PathLike],
    int8: Union[bool, Int8Filter] = False,
) -> CompressedStats:
    """Write ``model``'s state dict with bitmask (and optionally INT8) encodings.

    Args:
        model: A module (its ``state_dict()``) or a state dict of tensors.
        path: File to write.
        int8: Quantize float tensors of 2 or more dimensions (Linear/Conv/embedding weights) to int8 per output
            channel; or a ``filter(name, tensor) -> bool`` choosing the tensors. Lossy: see the module docstring.

    Returns:
        :class:`CompressedStats`.

    Raises:
        TypeError: If a state-dict value is not a tensor.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "w.lcz")
        >>> save_compressed({"w": torch.zeros(128, 128)}, path, int8=True).encodings
        {'w': 'int8'}
    """
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    entries: dict[str, dict[str, Any]] = {}
    dense_bytes = stored = 0
    for name, value in state.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"state-dict entry {name!r} is a {type(value).__name__}, not a tensor")
        entries[name] = _encode(name, value, int8)
        dense_bytes += value.numel() * value.element_size()
        stored += _payload(entries[name])
    torch.save({"format": FORMAT, "tensors": entries}, path)
    return CompressedStats({n: e["kind"] for n, e in entries.items()}, dense_bytes, stored, os.path.getsize(path))


def load_compressed(path: Union[str, os.PathLike]) -> dict[str, Tensor]:
    """Read a file written by :func:`save_compressed` into a state dict (CPU tensors, the saved dtypes and shapes).

    Float tensors saved without ``int8`` come back bit for bit; int8-encoded tensors come back as exactly
    :func:`dequantize_per_channel` of the saved int8 values and scales.

    Raises:
        ValueError: If the file is not in this format.

    Example:
        >>> model.load_state_dict(load_compressed("model.lcz"))  # doctest: +SKIP
    """
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"{path} is not a {FORMAT} file (found {found!r})")
    return {name: _decode(name, entry) for name, entry in data["tensors"].items()}
