"""Bool masks packed 8 to a byte (little-endian within a byte, like ``numpy.packbits(bitorder="little")``): how masks
are saved in checkpoints and sent between ranks, 1 bit per weight.

Example:
    >>> packed = pack_mask(torch.tensor([True, False, True]))
    >>> packed, unpack_mask(packed, (3,)).tolist()
    (tensor([5], dtype=torch.uint8), [True, False, True])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor

__all__ = ["pack_mask", "unpack_mask", "unpack_mask_range"]

_SHIFTS = tuple(range(8))


def pack_mask(mask: Tensor) -> Tensor:
    """Pack a bool mask into bits, 8 per byte, little-endian within a byte (like ``numpy.packbits(bitorder="little")``).

    Args:
        mask: A bool tensor of any shape, ``numel`` elements.

    Returns:
        A uint8 tensor of shape ``(ceil(numel / 8),)`` on ``mask``'s device.

    Raises:
        TypeError: If ``mask`` is not a bool tensor.

    Example:
        >>> pack_mask(torch.tensor([True, False, True, True, False, False, False, False, True]))
        tensor([13,  1], dtype=torch.uint8)
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"`mask` must be a bool tensor, got a {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"`mask` must be a bool tensor, got {mask.dtype}")
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    bits = flat.view(-1, 8)
    packed = bits[:, 0].clone()
    for i in _SHIFTS[1:]:
        packed |= bits[:, i] << i
    return packed


def unpack_mask(packed: Tensor, shape: Union[torch.Size, Sequence[int]]) -> Tensor:
    """Inverse of :func:`pack_mask`.

    Args:
        packed: uint8 tensor of shape ``(ceil(numel / 8),)``.
        shape: The shape of the mask, ``numel`` elements.

    Returns:
        A bool tensor of ``shape`` on ``packed``'s device.

    Raises:
        ValueError: If ``packed`` is not uint8 or its size does not fit ``shape``.

    Example:
        >>> unpack_mask(torch.tensor([13, 1], dtype=torch.uint8), (9,)).int().tolist()
        [1, 0, 1, 1, 0, 0, 0, 0, 1]
    """
    shape = torch.Size(shape)
    numel = shape.numel()
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (numel + 7) // 8:
        raise ValueError(
            f"`packed` must be a 1-D uint8 tensor of {(numel + 7) // 8} bytes for shape {tuple(shape)},"
            f" got {packed.dtype} of shape {tuple(packed.shape)}"
        )
    shifts = torch.tensor(_SHIFTS, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(1) >> shifts) & 1
    return bits.reshape(-1)[:numel].to(torch.bool).view(shape)


def unpack_mask_range(packed: Tensor, start: int, stop: int) -> Tensor:
    """Elements ``[start, stop)`` of the flat mask that ``packed`` holds, unpacking only the bytes that cover them
    (a shard's rows of a whole weight's mask, without the whole mask).

    Args:
        packed: uint8 tensor from :func:`pack_mask`.
        start: First flat index, >= 0.
        stop: One past the last flat index, ``start <= stop <= 8 * packed.numel()``.

    Returns:
        A 1-D bool tensor of ``stop - start`` elements on ``packed``'s device.

    Raises:
        ValueError: If ``packed`` is not 1-D uint8 or the range does not fit it.

    Example:
        >>> packed = pack_mask(torch.tensor([True, False, True, True, False, False, False, False, True]))
        >>> unpack_mask_range(packed, 3, 9).int().tolist()
        [1, 0, 0, 0, 0, 1]
    """
    if packed.dtype != torch.uint8 or packed.dim() != 1 or not 0 <= start <= stop <= 8 * packed.numel():
        raise ValueError(
            f"`packed` must be a 1-D uint8 tensor holding bits [{start}, {stop}), got {packed.dtype} of shape"
            f" {tuple(packed.shape)}"
        )
    first, last = start // 8, -(-stop // 8)
    shifts = torch.tensor(_SHIFTS, dtype=torch.uint8, device=packed.device)
    bits = (packed[first:last].unsqueeze(1) >> shifts) & 1
    return bits.reshape(-1)[start - 8 * first : stop - 8 * first].to(torch.bool)
