"""Writing files so that nothing is lost: every file the library writes goes to a temporary file in the same folder,
is flushed to disk and renamed over the target, so a crash or a kill mid-write leaves the previous file intact (or no
file), never a truncated one. Permissions follow the umask, as for a file opened normally.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "out.txt")
    >>> with atomic_write(path) as f:
    ...     _ = f.write(b"done")
    >>> open(path, "rb").read()
    b'done'
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Union

__all__ = ["atomic_path", "atomic_write", "atomic_write_text", "file_sha256"]

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: Path, path: Path) -> None:
    """Flush ``tmp`` to disk, give it the permissions a new file gets, and rename it over ``path``."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # make the rename itself durable where directories can be opened
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write to (with any writer that takes a path); on success it is renamed
    over ``path``, on an exception it is deleted and ``path`` is left as it was.

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "x.bin")
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_bytes(b"1")
        >>> os.path.getsize(target)
        1
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _publish(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file in ``path``'s folder for writing (``"wb"`` or ``"w"``); renamed over ``path`` when the
    block ends without an exception, deleted otherwise.

    Raises:
        ValueError: If ``mode`` is not a write mode.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"`mode` can be wb or w, got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
