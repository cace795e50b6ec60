"""The integer grid of weight-only quantization: ``bits``-bit codes in groups of ``group_size`` consecutive inputs of
each output row, one scale and one zero point per group.

A weight ``w`` of group ``g`` is stored as the code ``q = clamp(round(w / s_g) + z_g, 0, 2^bits - 1)`` and read back
as ``(q - z_g) * s_g``. Symmetric grids (the default, as GPTQ, AWQ and llm-compressor's W4A16 use them) have
``z = 2^(bits - 1)`` and ``s = max|w| / ((2^bits - 1) / 2)`` (codes -8..7 around 0 at 4 bits, ``max|w|`` at 7.5
steps); asymmetric grids span ``[min(w, 0), max(w, 0)]`` with ``s = (max - min) / (2^bits - 1)`` and an integer
``z = round(-min / s)``. Zero is on every grid, so a pruned weight stays exactly zero. ``group_size=None`` is one
group per output row (per channel).

Example:
    >>> w = torch.tensor([[0.1, -0.7, 0.3, 0.6]])
    >>> scale, zero = grid_parameters(w, bits=4, group_size=2)
    >>> quantize(w, scale, zero, bits=4).tolist()  # -0.7 is -7.5 steps: rounded to -8; 0.6 is +7.5: clamped to 7
    [[9, 0, 12, 15]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from lightning_compress.core.validation import ArgumentErrors, is_int

__all__ = [
    "Grid",
    "QuantizedWeight",
    "check_grid",
    "dequantize",
    "fake_quantize",
    "grid_parameters",
    "group_size_problem",
    "quantize",
    "searched_grid_parameters",
]


@dataclass(frozen=True)
class Grid:
    """A weight grid: ``bits`` in 2..8, ``group_size`` (None: per channel), symmetric or not."""

    bits: int = 4
    group_size: Optional[int] = 128
    symmetric: bool = True

    @property
    def levels(self) -> int:
        """``2^bits - 1``, the largest code."""
        return (1 << self.bits) - 1

    def groups(self, in_features: int) -> int:
        """Groups per output row."""
        return 1 if self.group_size is None else in_features // self.group_size

    def group_width(self, in_features: int) -> int:
        """Inputs per group."""
        return in_features if self.group_size is None else self.group_size


@dataclass
class QuantizedWeight:
    """One layer's weight on its grid.

    Attributes:
        weight: The de-quantized weight, the original's shape and dtype (what the float layer holds afterwards).
        scale: float32 ``(out, groups)``.
        zero: float32 ``(out, groups)``, integers.
        grid: The grid.
        mask: bool keep-mask (joint pruning and quantization), or None.
        input_scale: AWQ's per-input scale ``s`` ``(in,)``, or None: the codes are those of ``weight * s`` and the
            layer computes ``(x / s) @ ((q - z) * scale)^T``.
    """

    weight: Tensor
    scale: Tensor
    zero: Tensor
    grid: Grid
    mask: Optional[Tensor] = None
    input_scale: Optional[Tensor] = None

    def codes(self) -> Tensor:
        """The integer codes ``(out, in)`` uint8, recovered exactly from the de-quantized weight."""
        w = self.weight.detach().float()
        if self.input_scale is not None:
            w = w * self.input_scale.to(w.device).float().unsqueeze(0)
        return quantize(w, self.scale, self.zero, self.grid.bits)


def check_grid(errors: ArgumentErrors, bits: Any, group_size: Any, symmetric: Any) -> None:
    """The checks of a grid's arguments, into ``errors``: bits 2..8; a group size >= 1 or None; for bits above 4
    (run by the INT8 kernel ``_weight_int8pack_mm``, which takes one scale per output channel and no zero point)
    only per-channel symmetric grids.

    Example:
        >>> errors = ArgumentErrors()
        >>> check_grid(errors, 8, 64, True)
        >>> list(errors)  # doctest: +ELLIPSIS
        ['`group_size` must be None (per output channel) for bits=8: ...']
    """
    if errors.require(is_int(bits) and 2 <= bits <= 8, "bits", "an int in 2..8", bits):
        if bits > 4 and group_size is not None:
            errors.add(
                f"`group_size` must be None (per output channel) for bits={bits}: grids of 5-8 bits are run by the"
                f" INT8 weight-only kernel (_weight_int8pack_mm), which takes one scale per output channel, got"
                f" group_size={group_size!r}"
            )
        if bits > 4 and symmetric is False:
            errors.add(
                f"`symmetric` must be True for bits={bits}: the INT8 weight-only kernel (_weight_int8pack_mm) has no"
                " zero point"
            )
    errors.int("group_size", group_size, optional=True)
    errors.bool("symmetric", symmetric)


def group_size_problem(in_features: int, group_size: Optional[int]) -> Optional[str]:
    """Why ``group_size`` cannot split ``in_features`` inputs (None when it can).

    Example:
        >>> group_size_problem(576, 128)
        'group_size=128 does not divide the input width 576 (group sizes that do: 32, 64, 96, 192, 288, 576)'
    """
    if group_size is None or in_features % group_size == 0:
        return None
    divisors = [g for g in range(1, in_features + 1) if in_features % g == 0]
    fits = [g for g in divisors if g % 32 == 0] or divisors  # multiples of 32 suit the INT4 kernel
    return (
        f"group_size={group_size} does not divide the input width {in_features} (group sizes that do:"
        f" {', '.join(map(str, fits))})"
    )


def _grouped(w: Tensor, group_size: Optional[int]) -> Tensor:
    rows, cols = w.shape
    width = cols if group_size is None else group_size
    if cols % width:
        raise ValueError(group_size_problem(cols, group_size))
    return w.reshape(rows, cols // width, width)


def grid_parameters(
    weight: Tensor, bits: int = 4, group_size: Optional[int] = 128, symmetric: bool = True
) -> tuple[Tensor, Tensor]:
    """The min-max scale and zero point of every group of ``weight``.

    Args:
        weight: ``(out, in)``.
        bits: 2..8.
        group_size: Inputs per group (must divide ``in``), or None for one group per row.
        symmetric: Symmetric grid (``z = 2^(bits-1)``) or asymmetric (integer ``z`` from the min and max).

    Returns:
        ``(scale, zero)``, both float32 ``(out, groups)``; the scale is never 0 (an all-zero group gets 1).

    Raises:
        ValueError: If ``group_size`` does not divide ``in``.

    Example:
        >>> scale, zero = grid_parameters(torch.tensor([[-1.0, 0.5]]), bits=4, group_size=None, symmetric=False)
        >>> scale.tolist(), zero.tolist()
        ([[0.10000000149011612]], [[10.0]])
    """
    g = _grouped(weight.detach().float(), group_size)
    levels = (1 << bits) - 1
    if symmetric:
        scale = g.abs().amax(-1) / (levels / 2)
        zero = torch.full_like(scale, float(1 << (bits - 1)))
    else:
        low = g.amin(-1).clamp(max=0.0)
        high = g.amax(-1).clamp(min=0.0)
        scale = (high - low) / levels
        zero = torch.round(-low / torch.where(scale > 0, scale, torch.ones_like(scale))).clamp_(0, levels)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, zero


def searched_grid_parameters(
    weight: Tensor,
    hessian: Tensor,
    bits: int = 4,
    group_size: Optional[int] = 128,
    symmetric: bool = True,
    steps: int = 20,
    max_shrink: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Like :func:`grid_parameters`, but each group's range is the min-max range shrunk by the factor (``1, 0.95,
    ..., 1 - max_shrink``; ``steps`` per unit) whose rounding error changes the layer's output least:
    ``d H_gg d^T`` with ``d`` the group's rounding error and ``H_gg`` its block of the input Hessian (AWQ's clipping
    search, and an MSE observer weighted by the inputs).

    Args:
        weight: ``(out, in)``.
        hessian: ``(in, in)``, ``X X^T`` (any positive scale) of the layer's inputs.
        bits: 2..8.
        group_size: Inputs per group, or None.
        symmetric: Symmetric or asymmetric grids.
        steps: Shrink factors per unit.
        max_shrink: The largest shrink tried.

    Returns:
        ``(scale, zero)`` float32 ``(out, groups)``.

    Example:
        >>> w = torch.tensor([[0.1, 0.25, 0.3, 1.0]])  # an outlier on an input that barely matters
        >>> scale, _ = searched_grid_parameters(w, torch.diag(torch.tensor([1.0, 1.0, 1.0, 1e-4])), bits=3,
        ...                                     group_size=None)
        >>> bool(scale[0, 0] < grid_parameters(w, 3, None)[0][0, 0])
        True
    """
    w = weight.detach().float()
    h = hessian.detach().to(w.device, torch.float32)
    rows, cols = w.shape
    width = cols if group_size is None else group_size
    groups = cols // width
    blocks = torch.stack([h[g * width : (g + 1) * width, g * width : (g + 1) * width] for g in range(groups)])
    wg = _grouped(w, group_size)
    levels = (1 << bits) - 1
    low, high = wg.amin(-1).clamp(max=0.0), wg.amax(-1).clamp(min=0.0)
    best_err = torch.full((rows, groups), float("inf"), device=w.device)
    best_scale, best_zero = grid_parameters(w, bits, group_size, symmetric)
    for k in range(int(round(steps * max_shrink)) + 1):
        c = 1.0 - k / steps
        if symmetric:
            s = torch.maximum(-low, high) * c / (levels / 2)
            z = torch.full_like(s, float(1 << (bits - 1)))
        else:
            s = (high - low) * c / levels
            z = torch.round(-low * c / torch.where(s > 0, s, torch.ones_like(s))).clamp_(0, levels)
        s = torch.where(s > 0, s, torch.ones_like(s))
        q = torch.round(wg / s.unsqueeze(-1)).add_(z.unsqueeze(-1)).clamp_(0, levels)
        d = wg - (q - z.unsqueeze(-1)) * s.unsqueeze(-1)
        err = torch.einsum("rgi,gij,rgj->rg", d, blocks, d)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale, best_zero = torch.where(better, s, best_scale), torch.where(better, z, best_zero)
    return best_scale, best_zero


def quantize(weight: Tensor, scale: Tensor, zero: Tensor, bits: int) -> Tensor:
    """Integer codes ``(out, in)`` (uint8) of ``weight`` on the grid ``(scale, zero)`` (``(out, groups)``)."""
    rows, cols = weight.shape
    g = weight.detach().float().reshape(rows, scale.shape[1], -1)
    q = torch.round(g / scale.unsqueeze(-1)) + zero.unsqueeze(-1)
    return q.clamp_(0, (1 << bits) - 1).to(torch.uint8).reshape(rows, cols)


def dequantize(codes: Tensor, scale: Tensor, zero: Tensor) -> Tensor:
    """The float32 weight ``(out, in)`` of integer codes: ``(q - z) * s`` per group."""
    rows, cols = codes.shape
    g = codes.float().reshape(rows, scale.shape[1], -1)
    return ((g - zero.unsqueeze(-1)) * scale.unsqueeze(-1)).reshape(rows, cols)


def fake_quantize(weight: Tensor, bits: int = 4, group_size: Optional[int] = 128, symmetric: bool = True) -> Tensor:
    """Round-to-nearest: ``weight`` rounded to its own min-max grid, as float32 ``(out, in)``.

    Example:
        >>> fake_quantize(torch.tensor([[0.0, 0.26, 1.0]]), bits=2, group_size=None).tolist()
        [[0.0, 0.0, 0.6666666865348816]]
    """
    scale, zero = grid_parameters(weight, bits, group_size, symmetric)
    return dequantize(quantize(weight, scale, zero, bits), scale, zero)
