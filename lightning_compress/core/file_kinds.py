"""What a file is, read from its first bytes, never by unpickling it: for choosing a loader and for error messages
that say what was expected and what was found.

:func:`file_kind` names the kind (``"safetensors"``, ``"torch-zip"``, ``"pt2"``, ``"zip"``, ``"pickle"``, ``"json"``,
``"text"``, ``"empty"``, ``"folder"``, ``"missing"``, ``"binary"``); :func:`describe_file` says it in words
(``"an empty file (0 bytes)"``, ``"a zip archive that is no torch file (entries: a.txt)"``);
:func:`require_file` raises :class:`FileNotFoundError` naming the argument and what it should be.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.bin")
    >>> _ = open(path, "wb").write(b"")
    >>> file_kind(path), describe_file(path)
    ('empty', 'an empty file (0 bytes)')
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Union

__all__ = ["describe_file", "file_kind", "require_file", "safetensors_header_size"]

PathLike = Union[str, os.PathLike]
_HEAD = 4096
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on a header


def safetensors_header_size(head: bytes, size: int) -> int | None:
    """The header length of a safetensors file from its first bytes and its size, or None if it is not one."""
    if len(head) < 9:
        return None
    (n,) = struct.unpack("<Q", head[:8])
    if n < 2 or n > _MAX_HEADER or head[8:9] != b"{":
        return None
    return n if 8 + n <= size else -1  # -1: the header runs past the end of the file (truncated)


def _zip_names(path: Path) -> list[str] | None:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None


def file_kind(path: PathLike) -> str:
    """The kind of ``path`` from its first bytes (see the module docstring); reads no more than the zip directory.

    Example:
        >>> file_kind("no/such/file")
        'missing'
    """
    path = Path(path)
    if not path.exists():
        return "missing"
    if path.is_dir():
        return "folder"
    size = path.stat().st_size
    if size == 0:
        return "empty"
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    header = safetensors_header_size(head, size)
    if header is not None:
        return "safetensors" if header > 0 else "truncated-safetensors"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        names = _zip_names(path)
        if names is None:
            return "damaged-zip"
        if any(n.endswith("/archive_format") or n == "archive_format" for n in names):
            return "pt2"
        if any(n.endswith("data.pkl") for n in names):
            return "torch-zip"
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
        if len(head) == _HEAD:  # a multi-byte character cut at the end of the sample
            try:
                text = head[:-3].decode("utf-8")
            except UnicodeDecodeError:
                text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        stripped = text.lstrip()
        if stripped[:1] in ("{", "["):
            try:
                json.loads(path.read_text(encoding="utf-8")) if size <= 10 * 1024 * 1024 else None
                return "json"
            except (ValueError, UnicodeDecodeError):
                pass
        return "text"
    return "binary"


def describe_file(path: PathLike) -> str:
    """``path``'s kind in words, for an error message (``"a JSON file"``, ``"random-looking binary data of 100
    bytes (starts 0x1f8b...)"``).

    Example:
        >>> describe_file("no/such/file")
        'no such file or folder'
    """
    path = Path(path)
    kind = file_kind(path)
    if kind == "missing":
        return "no such file or folder"
    if kind == "folder":
        return "a folder"
    size = path.stat().st_size
    if kind == "empty":
        return "an empty file (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(64)
    if kind == "safetensors":
        return f"a safetensors file ({size:,} bytes)"
    if kind == "truncated-safetensors":
        return f"a truncated safetensors file ({size:,} bytes, shorter than its own header says)"
    if kind == "pt2":
        return f"a torch.export .pt2 archive ({size:,} bytes)"
    if kind == "torch-zip":
        return f"a torch.save archive ({size:,} bytes)"
    if kind == "damaged-zip":
        return f"a truncated or damaged zip archive ({size:,} bytes)"
    if kind == "zip":
        names = _zip_names(path) or []
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        return f"a zip archive that is no torch file (entries: {shown or 'none'})"
    if kind == "pickle":
        return f"a pickle stream ({size:,} bytes: pickle.dump or a legacy torch.save)"
    if kind == "json":
        return f"a JSON file ({size:,} bytes)"
    if kind == "text":
        first = head.decode("utf-8", "replace").splitlines()[0][:40] if head.strip() else ""
        return f"a text file ({size:,} bytes, starting {first!r})"
    return f"binary data of {size:,} bytes that is no known format (starts 0x{head[:8].hex()})"


def require_file(path: PathLike, what: str, expected: str) -> Path:
    """``path`` as a ``Path`` if it is a file.

    Args:
        path: The file.
        what: The argument's name in messages (``"`--checkpoint`"``).
        expected: What the file should be (``"a Lightning checkpoint or a state dict"``).

    Raises:
        FileNotFoundError: If ``path`` is missing or a folder; the message names ``what``, the path and ``expected``.

    Example:
        >>> require_file("no/such.ckpt", "`--checkpoint`", "a Lightning checkpoint")
        Traceback (most recent call last):
        ...
        FileNotFoundError: `--checkpoint` 'no/such.ckpt' must be a Lightning checkpoint, found no such file or folder
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} must be {expected}, found {describe_file(path)}")
    return path
