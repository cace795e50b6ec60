"""GPTQ (Frantar et al., 2023, "GPTQ: accurate post-training quantization for generative pre-trained transformers"):
round a layer's weights to a grid one column at a time, spreading each column's rounding error over the columns not
yet rounded through the inverse Hessian, so that the layer's output on calibration inputs changes least.

For ``Y = W X`` with calibration inputs ``X`` the Hessian of ``||W X - W' X||^2`` is ``H = 2 X X^T``. It is
dampened by ``damping * mean(diag(H))``, and its inverse factored as ``U^T U = H^-1`` (upper Cholesky, the dampening
raised tenfold with a warning if ``H`` is not positive definite: never NaN). The columns are walked in blocks
(``blocksize``): rounding column ``j`` to ``q_j`` moves the columns right of it by ``-(w_j - q_j) / U_jj * U_j,>``,
inside the block at once, after it in one matrix product per block. The walk is SparseGPT's
(:func:`~lightning_compress.pruning.one_shot.sparsegpt.obs_column_walk`), so pruning fits in the same pass: with
``sparsity`` or ``n:m`` each column is first pruned (SparseGPT's OBS mask) and then rounded, the joint mode of the
SparseGPT paper.

Grids (:mod:`~lightning_compress.quantization.weight_only.grid`): a group's scale and zero point are set from the
weights as updated when the walk reaches the group's first column. With ``act_order`` the columns are walked in order
of decreasing ``H_jj`` (the most active inputs first, while the most freedom is left to absorb their error); the
groups then stay runs of consecutive inputs (as the INT4 kernels need), with scales from the original weights
(llm-compressor's ``actorder="weight"``).

Example:
    >>> x = torch.randn(512, 64) @ torch.randn(64, 64)          # correlated inputs, (tokens, in)
    >>> w = torch.randn(16, 64)
    >>> q = gptq_quantize(w, 2 * x.T @ x, bits=3, group_size=32)
    >>> rtn = fake_quantize(w, bits=3, group_size=32)
    >>> bool((x @ (w - q.weight).T).norm() < (x @ (w - rtn).T).norm())
    True
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.pruning.one_shot.sparsegpt import obs_column_walk, prepare_hessian
from lightning_compress.quantization.weight_only.grid import (
    Grid,
    QuantizedWeight,
    check_grid,
    fake_quantize,
    grid_parameters,
    group_size_problem,
    searched_grid_parameters,
)
from lightning_compress.sparsity.pattern import check_sparsity_pattern

__all__ = ["fake_quantize", "gptq_quantize"]


class _GroupRounding:
    """The column quantizer of the walk: rounds column ``j`` to its group's grid, setting a group's grid when the walk
    reaches its first column (or using grids fixed beforehand, for ``act_order``)."""

    def __init__(self, grid: Grid, rows: int, cols: int, device: torch.device, perm: Optional[Tensor] = None) -> None:
        self.grid = grid
        self.width = grid.group_width(cols)
        self.scale = torch.ones(rows, cols // self.width, device=device)
        self.zero = torch.zeros_like(self.scale)
        self.group_of: Optional[list[int]] = None if perm is None else (perm // self.width).tolist()
        self._s: Tensor = self.scale[:, 0]
        self._z: Tensor = self.zero[:, 0]

    def fix(self, weight: Tensor, hessian: Optional[Tensor] = None) -> None:
        """Grids from ``weight`` (original column order) before the walk: min-max, or searched against ``hessian``."""
        g = self.grid
        if hessian is None:
            self.scale, self.zero = grid_parameters(weight, g.bits, g.group_size, g.symmetric)
        else:
            self.scale, self.zero = searched_grid_parameters(weight, hessian, g.bits, g.group_size, g.symmetric)

    def __call__(self, j: int, column: Tensor, block: Tensor, i: int) -> Tensor:
        if self.group_of is not None:
            group = self.group_of[j]
            s, z = self.scale[:, group], self.zero[:, group]
        else:
            if j % self.width == 0:
                g = j // self.width
                s, z = grid_parameters(block[:, i : i + self.width], self.grid.bits, None, self.grid.symmetric)
                self.scale[:, g], self.zero[:, g] = s[:, 0], z[:, 0]
                self._s, self._z = self.scale[:, g], self.zero[:, g]
            s, z = self._s, self._z
        q = torch.round(column / s).add_(z).clamp_(0, self.grid.levels)
        return q.sub_(z).mul_(s)


@torch.no_grad()
def gptq_quantize(
    weight: Tensor,
    hessian: Tensor,
    bits: int = 4,
    group_size: Optional[int] = 128,
    symmetric: bool = True,
    act_order: bool = False,
    damping: float = 0.01,
    blocksize: int = 128,
    sparsity: Optional[float] = None,
    n: Optional[int] = None,
    m: Optional[int] = None,
    static_groups: bool = False,
    search_ranges: bool = False,
) -> QuantizedWeight:
    """Quantize a Linear weight with GPTQ (optionally pruning it in the same pass), given its input Hessian.

    Args:
        weight: ``(out, in)``; not modified.
        hessian: ``(in, in)``, ``2 X X^T`` (any positive scale) of the calibration inputs ``X`` ``(in, tokens)``.
        bits: 2..8.
        group_size: Inputs per group (must divide ``in``), or None (per output channel).
        symmetric: Symmetric grids (zero point ``2^(bits-1)``) or asymmetric.
        act_order: Walk the columns in order of decreasing ``H_jj`` (not with N:M).
        damping: Dampening, a fraction of ``mean(diag(H))``, >= 0 (raised with a warning where needed).
        blocksize: Columns per lazy-update block, >= 1; rounded to a multiple of the group size (and of ``m``).
        sparsity: Joint mode: also prune to this unstructured sparsity (SparseGPT's mask), in [0, 1).
        n: Joint mode: keep ``n`` of every ``m`` consecutive inputs.
        m: N:M group size.
        static_groups: Set every group's grid from the original weights before the walk (llm-compressor's way;
            always so with ``act_order``), instead of when the walk reaches the group.
        search_ranges: With fixed grids, shrink each group's min-max range to the factor whose rounding error
            ``d H_gg d^T`` is least (:func:`~lightning_compress.quantization.weight_only.grid.searched_grid_parameters`)
            before the walk; implies ``static_groups``.

    Returns:
        A :class:`~lightning_compress.quantization.weight_only.grid.QuantizedWeight`: the de-quantized weight
        (``weight``'s dtype; exactly 0 where pruned), the grids and (joint mode) the keep-mask.

    Raises:
        ValueError: For a bad argument (every problem listed), a group size that does not divide ``in``, a Hessian of
            the wrong shape or holding NaN/Inf, ``act_order`` with N:M.

    Warns:
        UserWarning: If the dampening had to be raised.

    Example:
        >>> x = torch.randn(256, 64)
        >>> q = gptq_quantize(torch.randn(8, 64), 2 * x.T @ x, bits=4, group_size=32, n=2, m=4)
        >>> q.mask.reshape(8, 16, 4).sum(-1).unique().tolist(), q.scale.shape
        ([2], torch.Size([8, 2]))
    """
    errors = ArgumentErrors()
    check_grid(errors, bits, group_size, symmetric)
    errors.bool("act_order", act_order)
    errors.bool("static_groups", static_groups)
    errors.bool("search_ranges", search_ranges)
    errors.number("damping", damping, minimum=0)
    errors.int("blocksize", blocksize)
    pattern = sparsity is not None or n is not None or m is not None
    if pattern:
        errors.extend(check_sparsity_pattern(sparsity, n, m))
        if act_order is True and m is not None:
            errors.add("`act_order` cannot be True with n:m pruning: the N:M groups are runs of consecutive inputs")
    errors.require(weight.dim() == 2, "weight", "a 2-D (out, in) tensor", tuple(weight.shape))
    errors.raise_if_any()
    rows, cols = weight.shape
    problem = group_size_problem(cols, group_size)
    if problem:
        raise ValueError(f"`group_size`: {problem}")
    if tuple(hessian.shape) != (cols, cols):
        raise ValueError(f"`hessian` must have shape ({cols}, {cols}) for a weight {tuple(weight.shape)}, got"
                         f" {tuple(hessian.shape)}")  # fmt: skip
    grid = Grid(bits, group_size, symmetric)
    w = weight.detach().float().clone()
    h = hessian.detach().to(w.device, torch.float32)
    perm = None
    if act_order:
        perm = torch.argsort(h.diagonal(), descending=True, stable=True)
        h = h[perm][:, perm]
    elif static_groups or search_ranges:
        perm = torch.arange(cols, device=w.device)
    original_h = hessian.detach().to(w.device, torch.float32) if search_ranges else None
    hinv, free = prepare_hessian(h, w, damping)
    del h
    rounding = _GroupRounding(grid, rows, cols, w.device, perm)
    if perm is not None:
        rounding.fix(w, original_h)
        if act_order:
            w = w[:, perm]
    w[:, free == 0] = 0.0  # inputs that were always zero: their weights never reach the output
    step = rounding.width if perm is None else 1
    if m is not None:
        step = step * m // math.gcd(step, m)
    blocksize = max(step, blocksize // step * step)
    pruned = obs_column_walk(w, hinv, blocksize, sparsity=sparsity, n=n, m=m, free=free, quantize=rounding)
    if act_order:
        assert perm is not None
        inverse = torch.argsort(perm)
        w, pruned = w[:, inverse], pruned[:, inverse]
    mask = ~pruned if pattern else None
    return QuantizedWeight(w.to(weight.dtype), rounding.scale, rounding.zero, grid, mask=mask)
