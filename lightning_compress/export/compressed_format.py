"""A file format that realises on disk what sparsity and INT8 save: a bitmask plus the non-zero values.

:func:`save_compressed` writes each tensor of a state dict in the cheapest of three encodings:

- ``dense``: the tensor as it is (small tensors, tensors with few zeros, complex tensors);
- ``bitmask``: the shape, a bitmask of the non-zero positions packed 8 per byte (:func:`~lightning_compress.pack_mask`)
  and the non-zero values (NaN included) in their dtype, in row-major order; when some zeros are ``-0.0`` (a pruned
  negative weight multiplied by a mask is), one more bit per zero keeps their signs. The float path is bit-exact;
- ``int8`` (when asked): the tensor quantized symmetrically per output channel (dimension 0) to int8 with fp32
  scales ``max|w_row| / 127``, stored as a bitmask of the non-zero int8 values plus those values when that is
  smaller. Loading returns exactly :func:`dequantize_per_channel` of what was saved; pruned (zero) weights stay
  exactly zero.

A 90 %-sparse weight costs ``1/8 + 0.1 x 4`` bytes per element as fp32 values (7.6x smaller than dense fp32; 6.3x
with the sign bits of ``-0.0`` zeros) and ``1/8 + 0.1`` bytes with int8 values (17.8x smaller).

The file (format ``lightning_compress.compressed/2``, suffix ``.lc.safetensors`` by convention) is a safetensors file
(:mod:`~lightning_compress.core.tensor_file`): no pickle, memory-mappable by any safetensors reader, written
atomically. Its header holds the format name and version, each state-dict entry's encoding, shape and dtype
(``entries``, JSON) and a SHA-256 checksum that :func:`load_compressed` verifies, so a damaged file is an error
naming it, never a changed value. The parts of an entry ``name`` are the safetensors tensors ``name`` (dense) or
``name::mask``, ``name::values``, ``name::negative_zeros``, ``name::scale``. Sparse-layout tensors are stored as their
dense values; tensor subclasses and quantized dtypes are refused. Files of format 1 (``.lcz``, a ``torch.save``
archive) still load, with ``weights_only=True`` and a :class:`DeprecationWarning`.

Example:
    >>> net = torch.nn.Linear(64, 64)
    >>> with torch.no_grad():
    ...     net.weight[torch.rand(64, 64) < 0.9] = 0.0
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "net.lc.safetensors")
    >>> stats = save_compressed(net, path)
    >>> state = load_compressed(path)
    >>> bool(torch.equal(state["weight"], net.weight))
    True
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn

from lightning_compress.core.checkpoints import load_torch_file
from lightning_compress.core.file_kinds import describe_file, file_kind, require_file
from lightning_compress.core.masks import pack_mask, unpack_mask
from lightning_compress.core.tensor_file import read_tensor_file, write_tensor_file

__all__ = [
    "CompressedStats",
    "FORMAT",
    "LEGACY_FORMAT",
    "SUFFIX",
    "dequantize_per_channel",
    "load_compressed",
    "quantize_per_channel",
    "save_compressed",
]

FORMAT = "lightning_compress.compressed/2"
LEGACY_FORMAT = "lightning_compress.compressed/1"
SUFFIX = ".lc.safetensors"
_EXPECTED = f"a compressed file of save_compressed ({FORMAT}, safetensors) or an old .lcz file ({LEGACY_FORMAT})"
_QUANTIZED = (torch.qint8, torch.quint8, torch.qint32, torch.quint4x2, torch.quint2x4)
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


def _storable(name: str, t: Tensor) -> Tensor:
    """``t`` detached on the CPU, sparse layouts made dense; tensor subclasses and quantized dtypes refused."""
    if t.layout != torch.strided:
        t = t.to_dense()
    if type(t) not in (Tensor, nn.Parameter):
        raise TypeError(
            f"state-dict entry {name!r} is a {type(t).__name__} (a tensor subclass), which a safetensors file cannot"
            " hold: save the model's plain weights (before to_semi_structured_ or a torchao conversion)"
        )
    if t.dtype in _QUANTIZED:
        raise TypeError(f"state-dict entry {name!r} has the quantized dtype {t.dtype}: save its int_repr() and scales")
    return t.detach().cpu().contiguous()


def _default_int8(name: str, t: Tensor) -> bool:
    return t.is_floating_point() and t.dim() >= 2


def _encode(name: str, t: Tensor, int8: Union[bool, Int8Filter]) -> dict[str, Any]:
    t = _storable(name, t)
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
        return {"kind": "dense", "value": t.clone()}
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
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def _decode(name: str, entry: Mapping[str, Any]) -> Tensor:
    kind = entry.get("kind")
    if kind == "dense":
        value = entry["value"]
        return torch.view_as_complex(value) if entry.get("complex") else value
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
        if entry.get("mask") is None:
            q = entry["values"].view(shape)
        else:
            q = torch.zeros(shape, dtype=torch.int8)
            q[unpack_mask(entry["mask"], shape)] = entry["values"]
        return dequantize_per_channel(q, entry["scale"], dtype)
    raise ValueError(f"unknown encoding {kind!r}")


def _to_file(entries: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Tensor], list[Any]]:
    """The safetensors tensors and the ``entries`` table of encoded state-dict entries."""
    tensors: dict[str, Tensor] = {}
    table = []
    for name, entry in entries.items():
        meta: dict[str, Any] = {"encoding": entry["kind"], "parts": {}}
        for key, value in entry.items():
            if key == "kind" or value is None:
                continue
            if not isinstance(value, Tensor):
                meta[key] = value
                continue
            part = name if key == "value" else f"{name}::{key}"
            if part in tensors:
                raise ValueError(f"state-dict entries {name!r} and another one both map to the file tensor {part!r}")
            if value.is_complex():
                meta["complex"] = True
                value = torch.view_as_real(value).contiguous()
            tensors[part] = value
            meta["parts"][key] = part
        if entry["kind"] == "dense":
            value = entry["value"]
            meta.update(shape=list(value.shape), dtype=str(value.dtype).removeprefix("torch."))
        table.append([name, meta])
    return tensors, table


def save_compressed(
    model: Union[nn.Module, Mapping[str, Tensor]],
    path: Union[str, os.PathLike],
    int8: Union[bool, Int8Filter] = False,
) -> CompressedStats:
    """Write ``model``'s state dict with bitmask (and optionally INT8) encodings, atomically (a temporary file in the
    same folder renamed over ``path``: a crash mid-write leaves the previous file as it was).

    Args:
        model: A module (its ``state_dict()``) or a state dict of tensors.
        path: File to write (by convention ``*.lc.safetensors``).
        int8: Quantize float tensors of 2 or more dimensions (Linear/Conv/embedding weights) to int8 per output
            channel; or a ``filter(name, tensor) -> bool`` choosing the tensors. Lossy: see the module docstring.

    Returns:
        :class:`CompressedStats`.

    Raises:
        TypeError: If a state-dict value is not a tensor, is a tensor subclass or has a quantized dtype.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "w.lc.safetensors")
        >>> save_compressed({"w": torch.zeros(128, 128)}, path, int8=True).encodings
        {'w': 'int8'}
    """
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    entries: dict[str, dict[str, Any]] = {}
    dense_bytes = stored = 0
    for name, value in state.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"state-dict entry {name!r} is a {type(value).__name__}, not a tensor")
        if value.is_meta:
            raise ValueError(
                f"state-dict entry {name!r} is on the meta device (no values): load or materialize the weights "
                "before saving"
            )
        entries[name] = _encode(name, value, int8)
        dense_bytes += value.numel() * value.element_size()
        stored += _payload(entries[name])
    tensors, table = _to_file(entries)
    size = write_tensor_file(path, tensors, FORMAT, {"entries": json.dumps(table, separators=(",", ":"))})
    return CompressedStats({n: e["kind"] for n, e in entries.items()}, dense_bytes, stored, size)


def _entries(path: Path, tensors: Mapping[str, Tensor], meta: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The encoded entries of a format-2 file, in the ``_encode`` layout."""
    try:
        table = json.loads(meta["entries"])
        entries = {}
        for name, info in table:
            entry = {"kind": info["encoding"], **{k: v for k, v in info.items() if k not in ("encoding", "parts")}}
            entry.update({key: tensors[part] for key, part in info["parts"].items()})
            entries[name] = entry
        return entries
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"`path` {str(path)!r} must be {_EXPECTED}; its entry table is malformed ({err!r})") from None


def _legacy_entries(path: Path) -> dict[str, dict[str, Any]]:
    data = load_torch_file(path, "`path`", _EXPECTED)
    if (
        not isinstance(data, Mapping)
        or data.get("format") != LEGACY_FORMAT
        or not isinstance(data.get("tensors"), Mapping)
    ):
        found = f"format {data.get('format')!r}" if isinstance(data, Mapping) else f"a {type(data).__name__}"
        raise ValueError(f"`path` {str(path)!r} must be {_EXPECTED}, found a torch.save file holding {found}")
    warnings.warn(
        f"{str(path)!r} is a {LEGACY_FORMAT} (.lcz) file, a torch.save archive; it loads (weights_only=True) but the"
        f" format is deprecated: save it again with save_compressed to get a {FORMAT} (safetensors) file",
        DeprecationWarning,
        stacklevel=3,
    )
    return dict(data["tensors"])


def load_compressed(path: Union[str, os.PathLike]) -> dict[str, Tensor]:
    """Read a file written by :func:`save_compressed` into a state dict (CPU tensors, the saved dtypes and shapes),
    after verifying its checksum.

    Float tensors saved without ``int8`` come back bit for bit; int8-encoded tensors come back as exactly
    :func:`dequantize_per_channel` of the saved int8 values and scales. An old ``.lcz`` file (format 1) loads with
    ``torch.load(weights_only=True)`` and a :class:`DeprecationWarning`.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If the file is not in this format, or is damaged (checksum, truncation); the message names the
            file, what was expected and what was found.

    Example:
        >>> model.load_state_dict(load_compressed("model.lc.safetensors"))  # doctest: +SKIP
    """
    path = require_file(path, "`path`", _EXPECTED)
    kind = file_kind(path)
    if kind in ("safetensors", "truncated-safetensors"):
        tensors, meta = read_tensor_file(path, FORMAT, "`path`", _EXPECTED)
        entries = _entries(path, tensors, meta)
    elif kind in ("torch-zip", "pickle", "damaged-zip"):
        entries = _legacy_entries(path)
    else:
        raise ValueError(f"`path` {str(path)!r} must be {_EXPECTED}, found {describe_file(path)}")
    state = {}
    for name, entry in entries.items():
        try:
            state[name] = _decode(name, entry)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            raise ValueError(
                f"`path` {str(path)!r}: tensor {name!r} does not decode ({type(err).__name__}: {err}); the file is"
                " inconsistent"
            ) from None
    return state
