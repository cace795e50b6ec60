"""Wanda (Sun et al., 2023, "A simple and effective pruning approach for large language models"): prune by weight
magnitude times input activation norm, compared within each output row.

The score of weight ``W[i, j]`` is ``|W[i, j]| * ||X_j||_2``, with ``X_j`` the ``j``-th input feature over every
calibration token (for a convolution, the ``j``-th row of the ``im2col`` matrix). Within each output row the weights
of lowest score are pruned (unstructured), or the ``n`` highest of every ``m`` consecutive inputs are kept (N:M). The
weights that stay are not changed.

Example:
    >>> w = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    >>> norms = torch.tensor([10.0, 1.0, 1.0, 1.0])  # input 0 is large
    >>> wanda_mask(w, norms, sparsity=0.5).int().tolist()
    [[1, 0, 0, 1], [1, 1, 0, 0]]
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from lightning_compress.sparsity.nm_masks import nm_mask
from lightning_compress.sparsity.pattern import check_sparsity_pattern

__all__ = ["wanda_mask", "wanda_scores"]


def wanda_scores(weight: Tensor, input_norms: Tensor) -> Tensor:
    """``|W| * ||X_j||_2``: the Wanda importance of every weight.

    Args:
        weight: ``(out, in)`` (Linear) or ``(out, in / groups, *kernel)`` (Conv); rows are ``weight.reshape(out, -1)``.
        input_norms: ``(in_total,)`` L2 norm of each input feature over the calibration tokens, ``in_total =
            weight.numel() / out`` (for a convolution, in ``im2col`` order: channel, then kernel position).

    Returns:
        float32 scores of shape ``(out, in_total)``.

    Raises:
        ValueError: If ``input_norms`` does not match the reduction dimension of ``weight``.

    Example:
        >>> wanda_scores(torch.tensor([[-2.0, 1.0]]), torch.tensor([1.0, 3.0]))
        tensor([[2., 3.]])
    """
    if weight.dim() < 2:
        raise ValueError(f"`weight` must have an output and a reduction dimension, got shape {tuple(weight.shape)}")
    rows = weight.detach().reshape(weight.shape[0], -1).float()
    if input_norms.dim() != 1 or input_norms.numel() != rows.shape[1]:
        raise ValueError(
            f"`input_norms` must have shape ({rows.shape[1]},) for a weight of shape {tuple(weight.shape)},"
            f" got {tuple(input_norms.shape)}"
        )
    return rows.abs() * input_norms.to(rows.device, torch.float32).unsqueeze(0)


def wanda_mask(
    weight: Tensor,
    input_norms: Tensor,
    sparsity: Optional[float] = None,
    n: Optional[int] = None,
    m: Optional[int] = None,
) -> Tensor:
    """Keep-mask of Wanda: per output row, prune the lowest ``|W| * ||X_j||`` (or keep ``n`` of every ``m``).

    Args:
        weight: ``(out, in)`` or ``(out, in / groups, *kernel)``, any floating dtype and device.
        input_norms: ``(in_total,)`` per-input L2 norms over the calibration tokens (see :func:`wanda_scores`).
        sparsity: Unstructured, in [0, 1): prune ``k = round(sparsity * numel)`` weights, ``k // out`` in every row
            (one more in the first ``k % out`` rows), so the layer's count is exact and the rows as even as can be.
        n: N:M: weights kept per group of ``m`` consecutive inputs (give ``n`` and ``m``, not ``sparsity``).
        m: N:M group size; ``in_total`` must be a multiple of it.

    Returns:
        A bool tensor of ``weight``'s shape, True where kept. Ties: the lower input index is kept.

    Raises:
        ValueError: For a bad pattern (the message names the argument), mismatched ``input_norms``, or (N:M) a reduction
            dimension that is not a multiple of ``m``.

    Example:
        >>> w, norms = torch.randn(8, 16), torch.rand(16)
        >>> mask = wanda_mask(w, norms, n=2, m=4)
        >>> mask.reshape(8, 4, 4).sum(-1).unique().tolist()
        [2]
    """
    errors = check_sparsity_pattern(sparsity, n, m)
    if errors:
        raise ValueError("; ".join(errors))
    scores = wanda_scores(weight, input_norms)
    if sparsity is None:
        assert n is not None and m is not None
        return nm_mask(scores, n, m).view(weight.shape)
    rows, cols = scores.shape
    total = int(round(sparsity * rows * cols))
    per_row = torch.full((rows, 1), total // rows, dtype=torch.long, device=scores.device)
    per_row[: total % rows] += 1  # the remainder: one more in the first rows, so that the layer total is exact
    # stable ascending sort: among equal scores the higher index is pruned first, so the lower one is kept
    order = torch.sort(scores.flip(1), dim=1, stable=True).indices
    prune = torch.arange(cols, device=scores.device).unsqueeze(0) < per_row  # the first k_i of each row's order
    keep = torch.ones_like(scores, dtype=torch.bool).scatter_(1, cols - 1 - order, ~prune)
    return keep.view(weight.shape)
