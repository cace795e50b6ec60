"""Writing files so that nothing is lost: every file the library writes goes to a temporary file in the same folder,
is flushed to disk and renamed over the target, so a crash or a kill mid-write leaves the previous file intact (or no
file), never a truncated one. Permissions follow the umask, as for a file opened normally.

A kill (``SIGKILL``, power loss) mid-write can leave the temporary file behind. It is always named
``.<target name>.<random>.tmp`` (hidden, in the target's folder), and no loader of the library ever reads such a file;
it can be deleted at any time. A folder (a ``save_pretrained`` folder) is written the same way by
:func:`atomic_folder`: into a temporary sibling ``.<name>.<random>.tmp``, then swapped in.

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
import ctypes
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Union

__all__ = ["atomic_folder", "atomic_path", "atomic_write", "atomic_write_text", "file_sha256", "temp_name_prefix"]

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_name_prefix(path: PathLike) -> str:
    """The prefix of the temporary files and folders written for ``path``: ``.<name>.`` (they end in ``.tmp``)."""
    return f".{Path(path).name}."


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # make a rename durable where directories can be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(tmp: Path, path: Path) -> None:
    """Flush ``tmp`` to disk, give it the permissions a new file gets, and rename it over ``path``."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=temp_name_prefix(path), suffix=".tmp")
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


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError), open(os.path.join(root, name), "rb+") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(root))


@contextlib.contextmanager
def atomic_folder(path: PathLike) -> Iterator[Path]:
    """A temporary sibling folder to write a whole folder into (``save_pretrained``); on success it replaces ``path``
    (swapped in atomically where Linux allows, else renamed after moving the old folder aside), on an exception it is
    deleted and ``path`` is left as it was. The folder's permissions follow the umask.

    Raises:
        NotADirectoryError: If ``path`` exists and is a file.

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "model")
        >>> with atomic_folder(target) as tmp:
        ...     _ = (tmp / "config.json").write_text("{}")
        >>> os.listdir(target)
        ['config.json']
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{str(path)!r} is a file; a folder was to be written there")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_name_prefix(path), suffix=".tmp"))
    try:
        yield tmp
        _fsync_tree(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if not path.exists():
            os.rename(tmp, path)
        elif _exchange(tmp, path):  # `tmp` now holds the old folder, removed in `finally`
            pass
        else:
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_name_prefix(path), suffix=".old.tmp"))
            os.rmdir(old)
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
