"""Bool masks held bit-packed: 1 bit per weight instead of the 1 byte of a bool tensor.

A one-shot pruning of a whole LLM returns a keep-mask for every pruned weight; as bool tensors those are a byte per
weight (113 MiB for SmolLM2-135M's 119 M block weights, more than the rest of SparseGPT's working memory), held until
the caller lets the result go. :class:`PackedMasks` keeps them packed (8 per byte, :func:`~lightning_compress.core.
bit_packing.pack_mask`) and unpacks one on access, so the result costs 1/8 of that and a caller that needs the bool
masks (a :class:`~lightning_compress.core.masks.ParameterMasks`) unpacks them one at a time.

Example:
    >>> masks = PackedMasks()
    >>> masks["w"] = torch.tensor([[True, False], [False, True]])
    >>> masks["w"]
    tensor([[ True, False],
            [False,  True]])
    >>> masks.nbytes, len(masks), masks.num_kept("w")
    (1, 1, 2)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Optional, Union

import torch
from torch import Tensor

from lightning_compress.core.bit_packing import pack_mask, unpack_mask

__all__ = ["PackedMasks"]


class PackedMasks(MutableMapping[str, Tensor]):
    """``{name: bool mask}``, stored bit-packed; reading a mask unpacks it (a new bool tensor each time).

    Args:
        masks: Optional initial masks (bool tensors, any shapes), in order.

    Raises:
        TypeError: When a value set is not a bool tensor.
    """

    def __init__(self, masks: Optional[Union[Mapping[str, Tensor], Iterable[tuple[str, Tensor]]]] = None) -> None:
        self._packed: dict[str, tuple[Tensor, torch.Size, int]] = {}
        if masks is not None:
            for name, mask in masks.items() if isinstance(masks, Mapping) else masks:
                self[name] = mask

    def __setitem__(self, name: str, mask: Tensor) -> None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise TypeError(f"mask {name!r} must be a bool tensor, got {got}")
        self._packed[name] = (pack_mask(mask), mask.shape, int(mask.count_nonzero()))

    def __getitem__(self, name: str) -> Tensor:
        packed, shape, _ = self._packed[name]
        return unpack_mask(packed, shape)

    def __delitem__(self, name: str) -> None:
        del self._packed[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name!r}: {tuple(shape)}" for name, (_, shape, _) in self._packed.items())
        return f"PackedMasks({{{shapes}}}, {self.nbytes} bytes)"

    def shape(self, name: str) -> torch.Size:
        """The shape of mask ``name`` (without unpacking it)."""
        return self._packed[name][1]

    def num_kept(self, name: str) -> int:
        """The True (kept) elements of mask ``name`` (counted when it was set)."""
        return self._packed[name][2]

    def reordered(self, names: Iterable[str]) -> PackedMasks:
        """The masks of ``names`` that are present, in that order (no unpacking)."""
        out = PackedMasks()
        out._packed = {name: self._packed[name] for name in names if name in self._packed}
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of the packed masks."""
        return sum(packed.numel() for packed, _, _ in self._packed.values())
