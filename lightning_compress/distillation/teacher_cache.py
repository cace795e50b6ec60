"""Teacher logits computed once and reused: keyed by the content of each example, in memory or in a file.

The key of an example is a 128-bit BLAKE2b hash of its model inputs (dtype, shape and bytes of each input tensor; for a
dict batch every key but ``labels``, each tensor trimmed to the positions where ``attention_mask`` is 1, so that the
same sentence padded to another length has the same key). Keying by content, rather than by a data-set index, needs no
change to the data pipeline, stays right under any shuffling, subsetting or batch size, and can never serve the
logits of another example: a randomly augmented input is simply a miss, computed and stored (so a cache pays only when
inputs repeat exactly). Hashing costs a device-to-host copy of the inputs and one BLAKE2b pass over them.

On disk the cache is ``<folder>/teacher-logits-<teacher fingerprint>.rank<r>.safetensors``, the fingerprint covering
the teacher's weights and dtype (:func:`~lightning_compress.distillation.teacher.module_fingerprint`): every job that
uses the same teacher (sweep jobs, reruns, other data subsets) reads all the files of that teacher and adds what it
computed, merged and written atomically at the end of each epoch with new entries (temporary file and rename, the
permissions of a new file under the umask, so a group-shared folder works for the group).

Under data parallelism (DDP, or ``ModelParallelStrategy`` with the teacher sharded too) each rank has its own cache,
holding the teacher's outputs for the examples of its own batches (the distributed sampler's share), and writes
them to its own file ``rank<r>``; at the start of training a rank reads every rank's files of this teacher (a row is
right whichever rank computed it), but writes back only its own rows, so no file absorbs another rank's. A sharded
teacher's forward is a collective: the ranks agree at each step whether any of them needs it
(:meth:`TeacherCache.logits` with ``group``).

A file is a checksummed safetensors file (:mod:`~lightning_compress.core.tensor_file`, format
``lightning_compress.teacher_cache/1``): no pickle, and the header holds what identifies its content: the teacher
fingerprint, the row count, the class count and the key size; the tensors are the example keys ``(N, 16)`` uint8 (the
data fingerprint of each row) and the logits ``(N, C)`` float32. :meth:`TeacherCache.load` verifies all of it and the
checksum; a file that fails (damaged, truncated, another format, another teacher's fingerprint inside, a class count
that differs from the other files' or from the teacher's own logits) is ignored with a warning, never used. Files of
older versions (``.pt``) are not read. The checks catch damage and misplaced files, not forgery: anyone who can write
to the folder and knows the teacher's weights can write a consistent file, so keep a shared cache folder writable
only by the people whose jobs you trust.

Example:
    >>> calls = []
    >>> def teacher(x):
    ...     calls.append(len(x))
    ...     return torch.stack([x.sum(1), -x.sum(1)], dim=1)
    >>> cache, x = TeacherCache(), torch.randn(4, 5)
    >>> torch.equal(cache.logits(x, teacher), cache.logits(x.flip(0), teacher).flip(0)), calls
    (True, [4])
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor

from lightning_compress.core.tensor_file import read_tensor_file, write_tensor_file
from lightning_compress.distillation.sharded import sync_needed

__all__ = ["FORMAT", "TeacherCache", "example_keys", "select_examples"]

FORMAT = "lightning_compress.teacher_cache/1"
SUFFIX = ".safetensors"
KEY_BYTES = 16
_IGNORED = ("labels",)


def _row_bytes(tensor: Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def example_keys(inputs: Union[Tensor, Mapping[str, Tensor]]) -> list[bytes]:
    """One 16-byte content key per example of a batch of model inputs.

    Args:
        inputs: A ``(B, ...)`` tensor, or a dict of ``(B, ...)`` tensors (Hugging Face); ``labels`` is ignored, and
            tensors of ``attention_mask``'s ``(B, L)`` shape are trimmed to its non-zero positions.

    Returns:
        ``B`` keys, equal for two examples exactly when their (trimmed) inputs are equal, up to hash collisions.

    Example:
        >>> a, b = example_keys({"input_ids": torch.tensor([[5, 6, 0], [5, 6, 7]]),
        ...                      "attention_mask": torch.tensor([[1, 1, 0], [1, 1, 1]])})
        >>> short = {"input_ids": torch.tensor([[5, 6]]), "attention_mask": torch.tensor([[1, 1]])}
        >>> a == example_keys(short)[0], a == b
        (True, False)
    """
    if isinstance(inputs, Tensor):
        items = [("", inputs.detach().cpu())]
        mask = None
    else:
        items = [
            (k, v.detach().cpu()) for k, v in sorted(inputs.items()) if k not in _IGNORED and isinstance(v, Tensor)
        ]
        mask = dict(items).get("attention_mask")
    if not items:
        raise ValueError("a batch needs at least one input tensor to key the cache, got none")
    size = items[0][1].shape[0]
    keys = []
    for i in range(size):
        digest = hashlib.blake2b(digest_size=KEY_BYTES)
        keep = mask[i].bool() if mask is not None else None
        for name, tensor in items:
            row = tensor[i]
            if keep is not None and row.shape[:1] == keep.shape:
                row = row[keep]
            digest.update(f"{name}|{row.dtype}|{tuple(row.shape)}|".encode())
            digest.update(_row_bytes(row))
        keys.append(digest.digest())
    return keys


def select_examples(inputs: Any, index: Sequence[int]) -> Any:
    """The examples at ``index`` of a batch of inputs (a tensor, or a dict of tensors)."""
    idx = torch.as_tensor(list(index), dtype=torch.long)
    if isinstance(inputs, Tensor):
        return inputs[idx.to(inputs.device)]
    return {k: v[idx.to(v.device)] if isinstance(v, Tensor) else v for k, v in inputs.items()}


class TeacherCache:
    """Teacher logits by example content (see the module docstring), in memory and optionally on disk.

    Args:
        folder: Where to keep the cache files; ``None`` keeps the cache in memory only.
        fingerprint: Identifies the teacher (weights and dtype); required with ``folder``.

    Raises:
        ValueError: If ``folder`` is given without a ``fingerprint``.

    Example:
        >>> cache = TeacherCache()
        >>> cache.logits(torch.ones(2, 3), lambda x: x @ torch.ones(3, 4)).shape, len(cache)
        (torch.Size([2, 4]), 1)
    """

    def __init__(self, folder: Optional[Union[str, os.PathLike]] = None, fingerprint: str = "") -> None:
        if folder is not None and not fingerprint:
            raise ValueError("`fingerprint` must name the teacher when the cache has a `folder`, got an empty string")
        self.folder = Path(folder).expanduser() if folder is not None else None
        self.fingerprint = fingerprint
        self._rows: dict[bytes, Tensor] = {}
        self._from_disk: dict[
            bytes, Path
        ] = {}  # rows read from a file, until the teacher's own logits confirm the width
        self._own: set[bytes] = set()  # this rank's rows: computed here or read from this rank's file (what it saves)
        self._new = 0
        self.hits = 0
        self.misses = 0
        self.collective_runs = 0  # teacher forwards run only because another rank of a sharded teacher needed one

    def __len__(self) -> int:
        return len(self._rows)

    def keys(self, own: bool = False) -> list[bytes]:
        """The example keys held (``own``: only this rank's, the rows its file gets: computed here or read from it)."""
        return [k for k in self._rows if k in self._own] if own else list(self._rows)

    def file(self, rank: int = 0) -> Optional[Path]:
        """This rank's cache file, or None for an in-memory cache."""
        if self.folder is None:
            return None
        return self.folder / f"teacher-logits-{self.fingerprint}.rank{rank}{SUFFIX}"

    def logits(self, inputs: Any, teacher: Callable[[Any], Tensor], group: Any = None) -> Tensor:
        """The teacher's logits for a batch: cached rows where present, ``teacher(missing examples)`` for the rest.

        Args:
            inputs: A batch of model inputs (a tensor or a dict of tensors), ``B`` examples.
            teacher: Maps a batch of inputs to ``(b, C)`` logits; called once, on the missing examples only, or not at
                all.
            group: For a sharded teacher, whose forward is a collective, the process group of its shards: the ranks
                first agree (a 1-element all-reduce) whether any of them misses an example; if one does, every rank
                runs the teacher (a rank with nothing missing on its first example, the output dropped), so that no
                rank waits in an all-gather the others never enter. None: no collective.

        Returns:
            ``(B, C)`` float32 logits on the inputs' device.
        """
        keys = example_keys(inputs)
        missing = [i for i, key in enumerate(keys) if key not in self._rows]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        device = inputs.device if isinstance(inputs, Tensor) else next(iter(inputs.values())).device
        if group is not None and sync_needed(len(missing), group, device) and not missing:
            teacher(select_examples(inputs, [0]))  # the other ranks' forward: in step with them
            self.collective_runs += 1
        if missing:
            computed = teacher(select_examples(inputs, missing) if len(missing) < len(keys) else inputs)
            self._check_width(computed.shape[-1])
            for i, row in zip(missing, computed.detach().float().cpu()):
                if keys[i] not in self._rows:
                    self._new += 1
                self._rows[keys[i]] = row.clone()
                self._own.add(keys[i])
        return torch.stack([self._rows[key] for key in keys]).to(device)

    def hit_rate(self) -> float:
        """Fraction of the examples served from the cache so far (0 before any)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def _check_width(self, classes: int) -> None:
        """Drops the rows read from files whose class count is not the teacher's own (with a warning)."""
        if not self._from_disk:
            return
        wrong = {key: path for key, path in self._from_disk.items() if self._rows[key].shape[-1] != classes}
        for key in wrong:
            del self._rows[key]
            self._own.discard(key)
        if wrong:
            files = sorted({str(p) for p in wrong.values()})
            warnings.warn(
                f"teacher cache: ignored {len(wrong)} rows of {files}: they hold logits of another width than the"
                f" teacher's {classes}",
                RuntimeWarning,
                stacklevel=3,
            )
        self._from_disk = {}

    # ------------------------------------------------------------------------------------------------------ disk
    def load(self, rank: int = 0) -> int:
        """Adds the entries of every valid file of this teacher in ``folder`` (see the module docstring: a file that
        fails a check is ignored with a warning); returns how many entries were added.

        Every rank reads every rank's file (a row is the teacher's output for that content, whichever rank computed
        it); only the rows of ``rank``'s own file become this rank's (written back by :meth:`save`).
        """
        if self.folder is None or not self.folder.is_dir():
            return 0
        before = len(self._rows)
        own = self.file(rank)
        for path in sorted(self.folder.glob(f"teacher-logits-{self.fingerprint}.rank*{SUFFIX}")):
            self._merge(path, own=path == own)
        return len(self._rows) - before

    def save(self, rank: int = 0) -> Optional[Path]:
        """Writes this rank's rows (computed here, or read from this rank's file; merged with what the file holds
        now) atomically to this rank's file, if it has new entries. Rows read from other ranks' files are not copied
        into it, so each rank's file holds the examples that rank saw.

        Returns:
            The file written, or None (in memory only, or nothing new).
        """
        path = self.file(rank)
        if path is None or self._new == 0:
            return None
        if path.is_file():
            self._merge(path, own=True)  # keep what another job with the same teacher wrote meanwhile
        keys = self.keys(own=True)
        logits = torch.stack([self._rows[k] for k in keys]).float().contiguous()
        tensors = {
            "keys": torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).view(len(keys), KEY_BYTES),
            "logits": logits,
        }
        meta = {"fingerprint": self.fingerprint, "rows": str(len(keys)), "classes": str(logits.shape[-1]),
                "key_bytes": str(KEY_BYTES)}  # fmt: skip
        write_tensor_file(path, tensors, FORMAT, meta)
        self._new = 0
        return path

    def _ignore(self, path: Path, why: str) -> None:
        warnings.warn(f"teacher cache: ignored {str(path)!r}: {why}", RuntimeWarning, stacklevel=3)

    def _merge(self, path: Path, own: bool = False) -> None:
        try:
            tensors, meta = read_tensor_file(path, FORMAT, "teacher cache file", "a teacher-cache file")
        except (ValueError, OSError) as err:
            self._ignore(path, str(err))
            return
        keys, logits = tensors.get("keys"), tensors.get("logits")
        if meta.get("fingerprint") != self.fingerprint:
            self._ignore(path, f"it holds the logits of teacher {meta.get('fingerprint')!r}, not {self.fingerprint!r}")
            return
        if (keys is None or logits is None or keys.dtype != torch.uint8 or keys.dim() != 2
                or keys.shape[1] != KEY_BYTES or logits.dtype != torch.float32 or logits.dim() != 2
                or keys.shape[0] != logits.shape[0] or meta.get("rows") != str(keys.shape[0])
                or meta.get("classes") != str(logits.shape[1])):  # fmt: skip
            shapes = {k: (str(v.dtype), tuple(v.shape)) for k, v in tensors.items()}
            self._ignore(path, f"its tensors {shapes} do not match its header {meta}")
            return
        widths = {row.shape[-1] for row in self._rows.values()}
        if widths and widths != {logits.shape[1]}:
            self._ignore(path, f"it holds {logits.shape[1]} logits per example, the cache {sorted(widths)}")
            return
        raw = keys.contiguous().numpy().tobytes()
        for i, row in enumerate(logits.clone()):
            key = raw[i * KEY_BYTES : (i + 1) * KEY_BYTES]
            if key not in self._rows:
                self._rows[key] = row
                self._from_disk[key] = path
            if own:
                self._own.add(key)
