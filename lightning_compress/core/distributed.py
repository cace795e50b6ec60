"""The same masks and weights on every rank: rank 0's, broadcast in one collective each.

Masks go packed to 1 bit per weight, so that every replica prunes the same weights even where their float values
differ in the last bit. Without an initialised process group of more than one rank every function returns its input
unchanged.

Example:
    >>> broadcast_masks([torch.tensor([True, False])])
    [tensor([ True, False])]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_compress.core.masks import pack_mask, unpack_mask

__all__ = ["broadcast_masks", "broadcast_tensors_", "is_distributed"]


def is_distributed() -> bool:
    """Whether a process group of more than one rank is initialised."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_masks(masks: list[Tensor]) -> list[Tensor]:
    """Rank 0's masks on every rank, packed to 1 bit per weight in one broadcast.

    Args:
        masks: Bool tensors, the same shapes on every rank.

    Returns:
        Bool tensors of the same shapes, equal to rank 0's (``masks`` itself when not distributed).

    Example:
        >>> broadcast_masks([torch.tensor([True, False])])
        [tensor([ True, False])]
    """
    if not is_distributed():
        return masks
    packed = [pack_mask(m) for m in masks]
    flat = torch.cat(packed)
    torch.distributed.broadcast(flat, src=0)
    out, offset = [], 0
    for m, p in zip(masks, packed):
        out.append(unpack_mask(flat[offset : offset + p.numel()], m.shape))
        offset += p.numel()
    return out


@torch.no_grad()
def broadcast_tensors_(tensors: Sequence[Tensor]) -> None:
    """Overwrite ``tensors`` in place with rank 0's values (nothing when not distributed).

    Example:
        >>> w = torch.ones(2)
        >>> broadcast_tensors_([w])
    """
    if not is_distributed():
        return
    for tensor in tensors:
        torch.distributed.broadcast(tensor.data, src=0)
