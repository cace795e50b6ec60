"""Integer codes in the layouts that files and kernels take: two 4-bit codes per byte (the portable layout of saved
files: the even input in the low nibble), the layouts of the ATen INT4 weight-only kernels (CPU and CUDA), and their
``scales_and_zeros``.

The INT4 kernels compute ``x @ ((q - 8) * s + z')^T`` per group, ``q`` in 0..15, with ``s`` and ``z'`` given as
``(groups, out, 2)`` in the activations' dtype. A code of a 2-4-bit grid ``w = (q - z) * s`` fits that exactly with
``z' = (8 - z) * s``. The CPU kernel takes groups of 32, 64, 128 or 256 inputs; a larger group (or one group per row)
is given to it as several groups with the same scale.

Example:
    >>> codes = torch.tensor([[1, 2, 15, 0]], dtype=torch.uint8)
    >>> pack_int4(codes).tolist(), torch.equal(unpack_int4(pack_int4(codes)), codes)
    ([[33, 15]], True)
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["KERNEL_GROUPS", "int4_scales_and_zeros", "kernel_group_size", "pack_int4", "unpack_int4"]

KERNEL_GROUPS = (256, 128, 64, 32)


def pack_int4(codes: Tensor) -> Tensor:
    """``(out, in)`` codes 0..15 -> ``(out, in / 2)`` uint8, input ``2k`` in the low nibble of byte ``k``.

    Raises:
        ValueError: If ``in`` is odd or a code is outside 0..15.
    """
    if codes.shape[-1] % 2 or (codes.numel() and int(codes.max()) > 15):
        raise ValueError(f"pack_int4 needs codes in 0..15 and an even input width, got shape {tuple(codes.shape)}")
    c = codes.to(torch.uint8)
    return c[..., 0::2] | (c[..., 1::2] << 4)


def unpack_int4(packed: Tensor) -> Tensor:
    """The inverse of :func:`pack_int4`: ``(out, in / 2)`` uint8 -> ``(out, in)`` uint8 codes."""
    low, high = packed & 15, packed >> 4
    return torch.stack([low, high], dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


def kernel_group_size(in_features: int, out_features: int, group_size: Optional[int]) -> Optional[int]:
    """The group size to give the CPU INT4 kernel for a grid of ``group_size`` (None: one group per row), or None if
    the kernel cannot take the layer (``out`` not a multiple of 16, or no kernel group size divides the grid's).

    Example:
        >>> kernel_group_size(576, 192, None), kernel_group_size(576, 192, 64), kernel_group_size(576, 10, 64)
        (64, 64, None)
    """
    width = in_features if group_size is None else group_size
    if out_features % 16 or in_features % 2:
        return None
    return next((g for g in KERNEL_GROUPS if width % g == 0), None)


def int4_scales_and_zeros(scale: Tensor, zero: Tensor, repeat: int, dtype: torch.dtype) -> Tensor:
    """``(groups * repeat, out, 2)`` of the INT4 kernels from a grid's ``scale`` and ``zero`` ``(out, groups)``, each
    group given ``repeat`` times (a grid group that is ``repeat`` kernel groups wide).

    Example:
        >>> int4_scales_and_zeros(torch.tensor([[0.5]]), torch.tensor([[8.0]]), 2, torch.float32).tolist()
        [[[0.5, 0.0]], [[0.5, 0.0]]]
    """
    s = scale.float()
    z = (8.0 - zero.float()) * s
    sz = torch.stack([s, z], dim=-1).transpose(0, 1)  # (groups, out, 2)
    return sz.repeat_interleave(repeat, dim=0).to(dtype).contiguous()
