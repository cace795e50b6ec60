"""N:M structured sparsity masks: keep the ``n`` largest-magnitude weights of every ``m`` consecutive weights.

The groups run along the reduction (input) dimension of the GEMM a layer computes: a Linear weight ``(out, in)`` along
``in``; a convolution weight ``(out, in / groups, kh, kw)`` along its rows ``weight.reshape(out, -1)``, that is over
``in_channels x kh x kw`` in that order (the order of PyTorch's ``im2col``). 2:4 along ``in`` is the pattern that
NVIDIA's sparse tensor cores (and ``torch.sparse.to_sparse_semi_structured``) take for a Linear weight.

Ties are broken deterministically: of equal magnitudes, the lower index is kept (a stable sort).

Example:
    >>> nm_mask(torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 1.0, 1.0, 1.0]]), n=2, m=4)
    tensor([[False,  True,  True, False,  True,  True, False, False]])
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from lightning_compress.core.validation import check_finite
from lightning_compress.sparsity.pattern import check_nm, nm_ineligibility

__all__ = ["is_nm_sparse", "nm_mask", "partial_nm_mask"]


def _ranked(weight: Tensor, what: str) -> None:
    """Refuse what cannot be ranked by magnitude: not a tensor, no values (meta), NaN or Inf."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"`weight` must be a tensor, got a {type(weight).__name__}")
    check_finite({"`weight`": weight}, what)


def _groups(weight: Tensor, m: int) -> Tensor:
    """``weight`` viewed as ``(out, in_total / m, m)``: the runs of ``m`` along each GEMM row."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"`weight` must be a tensor, got a {type(weight).__name__}")
    reason = nm_ineligibility(weight, m)
    if reason is not None:
        raise ValueError(f"a weight of shape {tuple(weight.shape)} cannot be made N:M: {reason}")
    rows = weight.shape[0]
    return weight.reshape(rows, weight.numel() // rows // m, m)


def _keep_largest(scores: Tensor, n: int) -> Tensor:
    """Bool mask of the ``n`` largest scores along the last dimension; the lower index wins ties.

    For small groups (``m <= 8``) each score's rank is counted from the ``m (m - 1) / 2`` pairwise comparisons, which is
    faster than a stable sort on CPU (one uint8 count per weight, one bool per group as scratch;
    ``experiments/nm_sparsity/README.md``); larger groups are sorted.
    """
    m = scores.shape[-1]
    if m > 8:
        order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :n]
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, order, True)
    beaten = torch.zeros(scores.shape, dtype=torch.uint8, device=scores.device)  # how many scores rank above each
    first_wins = torch.empty(scores.shape[:-1], dtype=torch.bool, device=scores.device)
    for j in range(m):
        for i in range(j + 1, m):
            torch.ge(scores[..., j], scores[..., i], out=first_wins)  # a tie goes to the lower index j
            beaten[..., i] += first_wins
            beaten[..., j] += first_wins.logical_not_()
    return beaten < n


def nm_mask(weight: Tensor, n: int = 2, m: int = 4) -> Tensor:
    """Keep-mask with the ``n`` largest-magnitude weights of every ``m`` consecutive weights of each GEMM row.

    Args:
        weight: ``(out, in)`` (Linear) or ``(out, in / groups, *kernel)`` (Conv); any floating dtype, any device.
            ``weight.numel() / out`` (the reduction dimension) must be a multiple of ``m``.
        n: Weights kept per group, ``0 < n < m``.
        m: Group size.

    Returns:
        A bool tensor of ``weight``'s shape, True where kept: exactly ``n`` True in every group of ``m``.

    Raises:
        TypeError: If ``weight`` is not a tensor.
        ValueError: If ``n`` or ``m`` is not an int with ``0 < n < m``, the reduction dimension is not a multiple of
            ``m`` (the message names the shape), or ``weight`` holds NaN or Inf values (or is on the meta device).

    Example:
        >>> conv_w = torch.randn(8, 4, 3, 3)  # reduction 4 * 3 * 3 = 36
        >>> mask = nm_mask(conv_w, 2, 4)
        >>> mask.reshape(8, -1, 4).sum(-1).unique().tolist()
        [2]
    """
    check_nm(n, m)
    _ranked(weight, "N:M masking")
    groups = _groups(weight.detach(), m)
    return _keep_largest(groups.abs(), n).view(weight.shape)


def partial_nm_mask(weight: Tensor, n: int, m: int, fraction: float, current_mask: Optional[Tensor] = None) -> Tensor:
    """N:M in a ``fraction`` of the groups of ``m``: those where it costs least; the other groups are kept dense.

    The cost of making a group N:M is the sum of the ``m - n`` magnitudes it would lose. ``round(fraction * groups)``
    groups of least cost are made N:M (lower group index first among equal costs). Positions that ``current_mask``
    already prunes rank below every live weight (cost -1 each), so with a non-decreasing ``fraction`` and the previous
    result as ``current_mask`` the masks only ever grow, and a group once N:M stays N:M.

    Args:
        weight: As for :func:`nm_mask`.
        n: Weights kept per N:M group, ``0 < n < m``.
        m: Group size.
        fraction: Fraction of the groups made N:M, in [0, 1]; 1 gives :func:`nm_mask` (given no ``current_mask``).
        current_mask: Optional bool mask of ``weight``'s shape whose False positions stay pruned.

    Returns:
        A bool tensor of ``weight``'s shape, True where kept.

    Raises:
        TypeError: If ``weight`` is not a tensor.
        ValueError: As :func:`nm_mask`; or ``fraction`` outside [0, 1], or ``current_mask`` of another shape or dtype.

    Example:
        >>> w = torch.tensor([[4.0, 3.0, 0.1, 0.1, 4.0, 3.0, 2.0, 1.0]])
        >>> partial_nm_mask(w, 2, 4, fraction=0.5).int().tolist()  # the first group loses least
        [[1, 1, 0, 0, 1, 1, 1, 1]]
    """
    check_nm(n, m)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"`fraction` must be a number in [0, 1], got {fraction!r}")
    _ranked(weight, "N:M masking")
    groups = _groups(weight.detach(), m)
    scores = groups.abs().float()
    if current_mask is not None:
        if not isinstance(current_mask, Tensor):
            raise ValueError(f"`current_mask` must be a bool tensor or None, got a {type(current_mask).__name__}")
        if current_mask.shape != weight.shape or current_mask.dtype != torch.bool:
            raise ValueError(
                f"`current_mask` must be a bool tensor of shape {tuple(weight.shape)},"
                f" got {current_mask.dtype} {tuple(current_mask.shape)}"
            )
        scores = torch.where(current_mask.reshape(groups.shape), scores, -1.0)
    keep = _keep_largest(scores, n)
    if current_mask is not None:
        keep &= current_mask.reshape(groups.shape)
    num_groups = groups.shape[0] * groups.shape[1]
    chosen = int(round(fraction * num_groups))
    if chosen < num_groups:
        cost = scores.masked_fill(keep, 0.0).sum(-1).reshape(-1)  # what N:M removes from each group
        order = torch.sort(cost, stable=True).indices
        dense = torch.ones(num_groups, dtype=torch.bool, device=weight.device)
        dense[order[:chosen]] = False
        keep |= dense.view(groups.shape[:2]).unsqueeze(-1)
        if current_mask is not None:
            keep &= current_mask.reshape(groups.shape)
    return keep.view(weight.shape)


def is_nm_sparse(weight: Tensor, n: int = 2, m: int = 4) -> bool:
    """Whether every group of ``m`` consecutive weights of each GEMM row has at most ``n`` non-zeros.

    Args:
        weight: As for :func:`nm_mask`.
        n: Most non-zeros allowed per group, ``0 < n < m``.
        m: Group size.

    Raises:
        ValueError: As :func:`nm_mask`.

    Example:
        >>> is_nm_sparse(torch.tensor([[1.0, 0.0, 0.0, 2.0]])), is_nm_sparse(torch.tensor([[1.0, 1.0, 0.0, 2.0]]))
        (True, False)
    """
    check_nm(n, m)
    groups = _groups(weight.detach(), m)
    return bool(((groups != 0).sum(-1) <= n).all())
