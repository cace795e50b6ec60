"""Teacher logits computed once and reused: keyed by the content of each example, in memory or in a ``.pt`` file.

The key of an example is a 128-bit BLAKE2b hash of its model inputs (dtype, shape and bytes of each input tensor; for a
dict batch every key but ``labels``, each tensor trimmed to the positions where ``attention_mask`` is 1, so that the
same sentence padded to another length has the same key). Keying by content, rather than by a data-set index, needs no
change to the data pipeline, stays right under any shuffling, subsetting or batch size, and can never serve the
logits of another example: a randomly augmented input is simply a miss, computed and stored (so a cache pays only when
inputs repeat exactly). Hashing costs a device-to-host copy of the inputs and one BLAKE2b pass over them.

On disk the cache is ``<folder>/teacher-logits-<teacher fingerprint>.rank<r>.pt``, the fingerprint covering the
teacher's weights and dtype (:func:`~lightning_compress.distillation.teacher.module_fingerprint`): every job that uses
the same teacher (sweep jobs, reruns, other data subsets) reads all the files of that teacher and adds what it computed,
merged and written atomically at the end of each epoch with new entries.

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
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor

__all__ = ["TeacherCache", "example_keys", "select_examples"]

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
        folder: Where to keep the ``.pt`` files; ``None`` keeps the cache in memory only.
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
        self._new = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def file(self, rank: int = 0) -> Optional[Path]:
        """This rank's cache file, or None for an in-memory cache."""
        if self.folder is None:
            return None
        return self.folder / f"teacher-logits-{self.fingerprint}.rank{rank}.pt"

    def logits(self, inputs: Any, teacher: Callable[[Any], Tensor]) -> Tensor:
        """The teacher's logits for a batch: cached rows where present, ``teacher(missing examples)`` for the rest.

        Args:
            inputs: A batch of model inputs (a tensor or a dict of tensors), ``B`` examples.
            teacher: Maps a batch of inputs to ``(b, C)`` logits; called once, on the missing examples only, or not at
            all.

        Returns:
            ``(B, C)`` float32 logits on the inputs' device.
        """
        keys = example_keys(inputs)
        missing = [i for i, key in enumerate(keys) if key not in self._rows]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = teacher(select_examples(inputs, missing) if len(missing) < len(keys) else inputs)
            for i, row in zip(missing, computed.detach().float().cpu()):
                if keys[i] not in self._rows:
                    self._new += 1
                self._rows[keys[i]] = row.clone()
        device = inputs.device if isinstance(inputs, Tensor) else next(iter(inputs.values())).device
        return torch.stack([self._rows[key] for key in keys]).to(device)

    def hit_rate(self) -> float:
        """Fraction of the examples served from the cache so far (0 before any)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    # ------------------------------------------------------------------------------------------------------ disk
    def load(self) -> int:
        """Adds the entries of every file of this teacher in ``folder``; returns how many entries were added."""
        if self.folder is None or not self.folder.is_dir():
            return 0
        before = len(self._rows)
        for path in sorted(self.folder.glob(f"teacher-logits-{self.fingerprint}.rank*.pt")):
            self._merge(path)
        return len(self._rows) - before

    def save(self, rank: int = 0) -> Optional[Path]:
        """Writes the cache (merged with what the file already holds) atomically, if it has new entries.

        Returns:
            The file written, or None (in memory only, or nothing new).
        """
        path = self.file(rank)
        if path is None or self._new == 0:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            self._merge(path)  # keep what another job with the same teacher wrote meanwhile
        keys = list(self._rows)
        payload = {
            "fingerprint": self.fingerprint,
            "keys": torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).view(len(keys), KEY_BYTES),
            "logits": torch.stack([self._rows[k] for k in keys]),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        self._new = 0
        return path

    def _merge(self, path: Path) -> None:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if data.get("fingerprint") != self.fingerprint:
            return
        raw = data["keys"].contiguous().numpy().tobytes()
        for i, row in enumerate(data["logits"]):
            self._rows.setdefault(raw[i * KEY_BYTES : (i + 1) * KEY_BYTES], row)
