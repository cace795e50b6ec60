"""Tensor files that cannot run code and cannot be silently wrong: safetensors with a format name and a checksum.

A tensor file is an ordinary `safetensors <https://github.com/huggingface/safetensors>`_ file (an 8-byte header length,
a JSON header naming each tensor's dtype, shape and byte range, then the raw bytes), so any safetensors reader can
open or memory-map it. Its header metadata (``__metadata__``, strings only) also holds:

- ``lightning_compress.format``: what the file is, e.g. ``lightning_compress.compressed/2``;
- ``lightning_compress.sha256``: the SHA-256 of the header (every tensor's dtype, shape and offsets and the other
  metadata, as canonical JSON) followed by the data bytes. :func:`read_tensor_file` recomputes it, so a flipped
  byte anywhere in the file is an error that names the file, never a changed value.

Tensors are stored in the order 8-byte, 4-byte, 2-byte, 1-byte dtypes, so each starts at a multiple of its element
size (the safetensors layout has no padding between tensors). Files are written with
:func:`~lightning_compress.core.files.atomic_write` (temporary file, fsync, rename; permissions from the umask).

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    >>> _ = write_tensor_file(path, {"w": torch.arange(4.0)}, "example/1", {"note": "hi"})
    >>> tensors, meta = read_tensor_file(path, "example/1")
    >>> tensors["w"].tolist(), meta["note"]
    ([0.0, 1.0, 2.0, 3.0], 'hi')
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor

from lightning_compress.core.file_kinds import describe_file, require_file
from lightning_compress.core.files import atomic_write

__all__ = [
    "CHECKSUM_KEY",
    "FORMAT_KEY",
    "read_tensor_file",
    "read_tensor_header",
    "tensor_file_format",
    "write_tensor_file",
]

PathLike = Union[str, os.PathLike]
FORMAT_KEY = "lightning_compress.format"
CHECKSUM_KEY = "lightning_compress.sha256"
_MAX_HEADER = 100 * 1024 * 1024
_CHUNK = 1 << 22

DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
    torch.uint16: "U16", torch.uint32: "U32", torch.uint64: "U64",
}  # fmt: skip
_CODES = {code: dtype for dtype, code in DTYPES.items()}


def _raw(tensor: Tensor) -> memoryview:
    """The bytes of a plain CPU tensor, row-major."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def _canonical(header: Mapping[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def write_tensor_file(
    path: PathLike, tensors: Mapping[str, Tensor], fmt: str, metadata: Optional[Mapping[str, str]] = None
) -> int:
    """Write ``tensors`` to a checksummed safetensors file (atomically); returns its size in bytes.

    Args:
        path: The file to write.
        tensors: Name -> plain strided tensor of a dtype safetensors holds (see ``DTYPES``); any device.
        fmt: The format name stored as ``lightning_compress.format``.
        metadata: More header strings (keys must not start with ``lightning_compress.``).

    Raises:
        TypeError: If a value is not a tensor of a storable dtype, or a metadata value is not a string.
        ValueError: If a metadata key is reserved.
    """
    meta = dict(metadata or {})
    if any(k.startswith("lightning_compress.") for k in meta):
        raise ValueError(f"metadata keys starting with 'lightning_compress.' are reserved, got {sorted(meta)}")
    if not all(isinstance(v, str) for v in meta.values()):
        raise TypeError("safetensors metadata values must be strings")
    for name, t in tensors.items():
        if not isinstance(t, Tensor) or t.layout != torch.strided or t.dtype not in DTYPES:
            what = type(t).__name__ if not isinstance(t, Tensor) else f"{t.dtype} / {t.layout}"
            raise TypeError(
                f"tensor {name!r} ({what}) cannot be stored; storable: strided tensors of {sorted(map(str, DTYPES))}"
            )
    order = sorted(tensors, key=lambda n: -tensors[n].element_size())  # stable: aligned offsets, no padding
    header: dict[str, Any] = {}
    offset = 0
    for name in order:
        t = tensors[name]
        size = t.numel() * t.element_size()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    meta[FORMAT_KEY] = fmt
    digest = hashlib.sha256(_canonical({"tensors": header, "metadata": meta}))
    raws = [_raw(tensors[name]) for name in order]
    for raw in raws:
        digest.update(raw)
    meta[CHECKSUM_KEY] = digest.hexdigest()
    encoded = json.dumps({"__metadata__": meta, **header}, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with atomic_write(path) as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for raw in raws:
            f.write(raw)
    return 8 + len(encoded) + offset


def _damaged(path: Path, what: str, expected: str, problem: str) -> ValueError:
    return ValueError(f"{what} {str(path)!r} must be {expected}; it is damaged or truncated: {problem}")


def read_tensor_header(path: PathLike, what: str = "file", expected: str = "a safetensors file") -> tuple[dict, dict]:
    """The tensor table and the metadata of a safetensors file, checked for consistency (not yet the checksum).

    Returns:
        ``(tensors, metadata)``: name -> ``{"dtype", "shape", "data_offsets"}``, and the ``__metadata__`` strings.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If it is no safetensors file (the message says what it is) or its header is inconsistent.
    """
    path = require_file(path, what, expected)
    size = path.stat().st_size
    with open(path, "rb") as f:
        first = f.read(8)
        (n,) = struct.unpack("<Q", first) if len(first) == 8 else (0,)
        if len(first) < 8 or n < 2 or n > _MAX_HEADER:
            raise ValueError(f"{what} {str(path)!r} must be {expected}, found {describe_file(path)}")
        raw = f.read(n)
    if len(raw) < n:
        raise _damaged(path, what, expected, f"the header is {n:,} bytes long but the file has {size:,} bytes")
    if raw[:1] != b"{":
        raise ValueError(f"{what} {str(path)!r} must be {expected}, found {describe_file(path)}")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise _damaged(path, what, expected, f"its JSON header does not parse ({err})") from None
    if not isinstance(header, dict):
        raise _damaged(path, what, expected, "its header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _damaged(path, what, expected, "its __metadata__ is not a map of strings")
    end = 0
    for name, entry in sorted(header.items(), key=lambda kv: _start(kv[1])):
        ok = (isinstance(entry, dict) and entry.get("dtype") in _CODES and isinstance(entry.get("shape"), list)
              and all(isinstance(s, int) and s >= 0 for s in entry["shape"])
              and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2)  # fmt: skip
        if not ok:
            raise _damaged(path, what, expected, f"tensor {name!r} has a malformed entry {entry!r}")
        begin, stop = entry["data_offsets"]
        nbytes = math.prod(entry["shape"]) * torch.empty((), dtype=_CODES[entry["dtype"]]).element_size()
        if begin != end or stop - begin != nbytes:
            raise _damaged(path, what, expected, f"tensor {name!r} has byte range {entry['data_offsets']}, expected "
                           f"[{end}, {end + nbytes}] for {entry['dtype']} {entry['shape']}")  # fmt: skip
        end = stop
    if 8 + n + end != size:
        raise _damaged(path, what, expected, f"the header describes {8 + n + end:,} bytes, the file has {size:,}")
    return header, meta


def _start(entry: Any) -> int:
    try:
        return int(entry["data_offsets"][0])
    except (TypeError, KeyError, IndexError, ValueError):
        return -1


def tensor_file_format(path: PathLike) -> Optional[str]:
    """The ``lightning_compress.format`` of a safetensors file, or None (not safetensors, or no such entry)."""
    try:
        return read_tensor_header(path)[1].get(FORMAT_KEY)
    except (ValueError, OSError):
        return None


def read_tensor_file(
    path: PathLike,
    fmt: Union[str, tuple[str, ...]],
    what: str = "file",
    expected: Optional[str] = None,
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a file of :func:`write_tensor_file`, verifying its format and checksum.

    Args:
        path: The file.
        fmt: The accepted ``lightning_compress.format`` value(s).
        what: How to call the file in messages (an argument's name).
        expected: What the file should be, in words (default: a safetensors file of format ``fmt``).

    Returns:
        ``(tensors, metadata)``: CPU tensors in their stored order (views of one buffer holding the file's data),
        and the header metadata (format and checksum included).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If it is not such a file, of another format, or damaged (the checksum differs); the message names
            the file, what was expected and what was found.
    """
    formats = (fmt,) if isinstance(fmt, str) else tuple(fmt)
    expected = expected or f"a safetensors file of format {' or '.join(formats)}"
    path = Path(path)
    header, meta = read_tensor_header(path, what, expected)
    found = meta.get(FORMAT_KEY)
    if found not in formats:
        said = f"format {found!r}" if found else f"no {FORMAT_KEY!r} entry (metadata keys: {sorted(meta)})"
        raise ValueError(f"{what} {str(path)!r} must be {expected}, found a safetensors file with {said}")
    checksum = meta.get(CHECKSUM_KEY)
    rest = {k: v for k, v in meta.items() if k != CHECKSUM_KEY}
    digest = hashlib.sha256(_canonical({"tensors": header, "metadata": rest}))
    order = sorted(header, key=lambda name: header[name]["data_offsets"][0])
    total = header[order[-1]]["data_offsets"][1] if order else 0
    data = bytearray(total)
    with open(path, "rb") as f:
        f.seek(path.stat().st_size - total)
        view = memoryview(data)
        read = 0
        while read < total:
            got = f.readinto(view[read : read + _CHUNK])
            if not got:
                raise _damaged(path, what, expected, "the file ended while its tensors were read")
            read += got
    digest.update(data)
    if checksum != digest.hexdigest():
        raise _damaged(path, what, expected, "its SHA-256 checksum does not match its content"
                       if checksum else f"it has no {CHECKSUM_KEY!r} entry")  # fmt: skip
    tensors = {}
    for name in order:
        entry = header[name]
        begin, stop = entry["data_offsets"]
        dtype = _CODES[entry["dtype"]]
        if stop > begin:
            flat = torch.frombuffer(data, dtype=dtype, count=(stop - begin) // dtype.itemsize, offset=begin)
        else:
            flat = torch.empty(0, dtype=dtype)
        tensors[name] = flat.view(entry["shape"])
    return tensors, meta
