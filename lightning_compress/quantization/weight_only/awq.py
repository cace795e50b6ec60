"""AWQ (Lin et al., 2024, "AWQ: activation-aware weight quantization for LLM compression and acceleration"): scale
each input channel of a layer by ``s_j`` before rounding, so that the channels that carry large activations lose
less to the grid, with ``s`` searched on calibration data.

The layer computes ``W X = (W diag(s)) (diag(s)^-1 X)``; rounding ``W diag(s)`` instead of ``W`` shrinks the relative
error of the columns with ``s_j > 1``. The candidates are llm-compressor's (``duo_scaling``):
``s = mean|x_j|^r / mean_rows(|W_ij| / max_group|W_i.|)^(1 - r)`` for ``r = 0, 1/grid, ..., (grid-1)/grid``,
normalised to a geometric mean of 1, plus ``s = 1`` (plain rounding, so the search never does worse than it on the
calibration data). Each candidate is scored by the output error on the calibration inputs, computed from the input
Hessian without storing the inputs: ``||(W - W') X||^2 = tr(dW H dW^T)`` with ``dW = W - Q(W diag(s)) diag(s)^-1``.
The error is measured at the layer's output (the original measures it at the output of the module around the layers
that share an input, such as an attention block).

The scale is kept with the layer rather than folded into the operation before it: the float layer holds
``Q(W diag(s)) diag(s)^-1`` (exactly the de-quantized weight), and the INT4 module divides its input by ``s`` (``in``
floats, one multiply) before the kernel. That works for any Linear, whatever comes before it.

Example:
    >>> x = torch.randn(512, 64) * torch.linspace(0.1, 4.0, 64)   # a few large input channels, (tokens, in)
    >>> w = torch.randn(16, 64)
    >>> q = awq_quantize(w, 2 * x.T @ x / 512, x.abs().mean(0), bits=3, group_size=32)
    >>> rtn = fake_quantize(w, bits=3, group_size=32)
    >>> bool((x @ (w - q.weight).T).norm() <= (x @ (w - rtn).T).norm())
    True
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.quantization.weight_only.grid import (
    Grid,
    QuantizedWeight,
    check_grid,
    dequantize,
    fake_quantize,
    grid_parameters,
    group_size_problem,
    quantize,
    searched_grid_parameters,
)

__all__ = ["awq_candidates", "awq_quantize", "fake_quantize", "output_error"]


def output_error(delta: Tensor, hessian: Tensor) -> Tensor:
    """``tr(dW H dW^T)``: the squared output change ``||dW X||^2`` (up to H's scale), from ``dW`` ``(out, in)`` and
    ``H`` ``(in, in)``.

    Example:
        >>> output_error(torch.ones(1, 2), torch.eye(2)).item()
        2.0
    """
    return ((delta @ hessian) * delta).sum()


def awq_candidates(
    weight: Tensor, input_abs_mean: Tensor, grid: Grid, points: int = 20, duo_scaling: bool = True
) -> Tensor:
    """The per-input scales AWQ tries, ``(points + 1, in)``: ``s = 1`` first, then one per ratio ``r = k / points``.

    Example:
        >>> awq_candidates(torch.ones(2, 4), torch.tensor([1.0, 1.0, 4.0, 4.0]), Grid(4, 2), points=2)[2].tolist()
        [0.7071067690849304, 0.7071067690849304, 1.4142135381698608, 1.4142135381698608]
    """
    w = weight.detach().float().abs()
    rows, cols = w.shape
    width = grid.group_width(cols)
    g = w.reshape(rows, cols // width, width)
    w_mean = (g / g.amax(-1, keepdim=True).clamp(min=1e-12)).reshape(rows, cols).mean(0)
    x_mean = input_abs_mean.detach().float().to(w.device)
    out = [torch.ones(cols, device=w.device)]
    for k in range(points):
        r = k / points
        s = x_mean.pow(r) / w_mean.pow(1 - r).clamp(min=1e-4) if duo_scaling else x_mean.pow(r)
        s = s.clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        s = torch.where(torch.isfinite(s), s, torch.ones_like(s))
        out.append(s)
    return torch.stack(out)


@torch.no_grad()
def awq_quantize(
    weight: Tensor,
    hessian: Tensor,
    input_abs_mean: Tensor,
    bits: int = 4,
    group_size: Optional[int] = 128,
    symmetric: bool = True,
    points: int = 20,
    duo_scaling: bool = True,
    clip: bool = True,
) -> QuantizedWeight:
    """Quantize a Linear weight with AWQ's searched per-input scale.

    Args:
        weight: ``(out, in)``; not modified.
        hessian: ``(in, in)``, ``X X^T`` (any positive scale) of the calibration inputs.
        input_abs_mean: ``(in,)`` mean ``|x_j|`` over the calibration tokens.
        bits: 2..8.
        group_size: Inputs per group (must divide ``in``), or None (per output channel).
        symmetric: Symmetric or asymmetric grids.
        points: Ratios searched, >= 1.
        duo_scaling: Divide by the normalised weight magnitude too (llm-compressor's default), or not (the paper's).
        clip: Then search, for every group of every row, a shrunk range (``1, 0.975, ..., 0.525`` of its min-max)
            that lowers that group's output error ``d H_gg d^T`` (the original AWQ's clipping search).

    Returns:
        A :class:`~lightning_compress.quantization.weight_only.grid.QuantizedWeight` whose ``input_scale`` is the
        chosen ``s`` (None when plain rounding won).

    Raises:
        ValueError: For a bad argument, a group size that does not divide ``in``, or mismatched shapes.

    Example:
        >>> x = torch.randn(100, 32)
        >>> q = awq_quantize(torch.randn(4, 32), x.T @ x, x.abs().mean(0), bits=4, group_size=32)
        >>> q.weight.shape, q.scale.shape
        (torch.Size([4, 32]), torch.Size([4, 1]))
    """
    errors = ArgumentErrors()
    check_grid(errors, bits, group_size, symmetric)
    errors.int("points", points)
    errors.bool("duo_scaling", duo_scaling)
    errors.require(weight.dim() == 2, "weight", "a 2-D (out, in) tensor", tuple(weight.shape))
    errors.raise_if_any()
    rows, cols = weight.shape
    problem = group_size_problem(cols, group_size)
    if problem:
        raise ValueError(f"`group_size`: {problem}")
    if tuple(hessian.shape) != (cols, cols) or tuple(input_abs_mean.shape) != (cols,):
        got = f"{tuple(hessian.shape)} and {tuple(input_abs_mean.shape)}"
        raise ValueError(f"`hessian` must be ({cols}, {cols}) and `input_abs_mean` ({cols},) for a weight"
                         f" {tuple(weight.shape)}, got {got}")  # fmt: skip
    grid = Grid(bits, group_size, symmetric)
    w = weight.detach().float()
    h = hessian.detach().to(w.device, torch.float32)
    best, best_err = None, None
    for s in awq_candidates(w, input_abs_mean, grid, points, duo_scaling):
        scaled = w * s
        scale, zero = grid_parameters(scaled, bits, group_size, symmetric)
        deq = dequantize(quantize(scaled, scale, zero, bits), scale, zero) / s
        err = float(output_error(w - deq, h))
        if best_err is None or err < best_err:
            best, best_err = (s, deq, scale, zero), err
    assert best is not None
    s, deq, scale, zero = best
    if clip:
        scaled = w * s
        scale, zero = searched_grid_parameters(scaled, h / s.unsqueeze(0) / s.unsqueeze(1), bits, group_size, symmetric)
        deq = dequantize(quantize(scaled, scale, zero, bits), scale, zero) / s
    identity = bool((s == 1).all())
    return QuantizedWeight(deq.to(weight.dtype), scale, zero, grid, input_scale=None if identity else s)
