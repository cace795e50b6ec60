"""Statistics of a layer's inputs on calibration data, gathered by a forward hook: what Wanda and SparseGPT need.

A Linear layer computes ``W X`` with ``X`` its inputs, one column per token; a convolution computes the same GEMM
over the ``im2col`` matrix of its input (``F.unfold``: rows ordered channel, then kernel position, the order of
``weight.reshape(out, -1)``). Per layer this keeps, summed over every calibration token, either the squared norm of
each input feature (``diag(X X^T)``, for Wanda; ``in`` floats) or the Hessian ``2 X X^T / tokens`` (for SparseGPT;
``in x in`` floats), on the layer's device. Each input's contribution is computed in float32 and added to float64 sums
(float32 on MPS, which has no float64); the Hessian is divided by the tokens and handed out in float32 when asked
for. The float64 sums make the result independent of the order the batches were added in, to the float32 bit in all
but the rarest cases (the float64 rounding of the sums would have to cross a float32 rounding boundary), which is
what lets data-parallel calibration (below) give the same masks and GPTQ grids as one process: GPTQ's rounding
feeds each column's error into the next, so a difference of one float32 ulp in the Hessian can flip codes, and the
flips grow block after block.

Handled: ``nn.Linear`` (any input ``(..., in)``) and ``nn.Conv1d`` / ``nn.Conv2d`` with ``groups=1`` and zero
padding. Anything else gets a reason from :func:`unsupported_reason`.

Data-parallel calibration (the model whole on every rank, each rank running its share of the batches):
:func:`all_reduce_statistics` turns each rank's statistics into those of all ranks' tokens together, the same on
every rank: the float64 sums (Hessian, squared norms, ``|x|``) and the token counts are summed over the ranks. The
float64 sums then differ from one process's only in their float64 rounding (grouped by rank instead of batch after
batch: ~1e-16 relative), so the float32 statistics handed out are equal to one process's on all the batches except
where that rounding crosses a float32 boundary (then by one float32 ulp, ~6e-8 relative). The 2-process tests
(``tests/sharded/test_data_parallel_calibration.py``) find the statistics, masks and GPTQ / AWQ grids bit-identical.

Example:
    >>> lin = torch.nn.Linear(3, 2)
    >>> stats = InputStatistics(lin, hessian=True)
    >>> _ = lin(torch.ones(4, 3)); stats.remove()
    >>> stats.tokens, stats.hessian()[0].tolist()
    (4, [2.0, 2.0, 2.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_compress.core.distributed import DataParallel

__all__ = ["InputStatistics", "all_reduce_statistics", "gemm_inputs", "unsupported_reason"]


def unsupported_reason(module: nn.Module) -> Optional[str]:
    """Why the inputs of ``module`` cannot be gathered as a GEMM's (None when they can).

    Example:
        >>> unsupported_reason(torch.nn.Linear(2, 2)) is None, unsupported_reason(torch.nn.Embedding(4, 2))
        (True, 'Embedding is not a Linear, Conv1d or Conv2d layer')
    """
    if isinstance(module, nn.Linear):
        return None
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if module.groups != 1:
            return f"{type(module).__name__} with groups={module.groups} (only groups=1 is handled)"
        if module.padding_mode != "zeros":
            return f"{type(module).__name__} with padding_mode={module.padding_mode!r} (only 'zeros' is handled)"
        if isinstance(module.padding, str):
            return f"{type(module).__name__} with padding={module.padding!r} (only numeric padding is handled)"
        return None
    return f"{type(module).__name__} is not a Linear, Conv1d or Conv2d layer"


def gemm_inputs(module: nn.Module, x: Tensor) -> Tensor:
    """The inputs of ``module``'s GEMM, one row per token.

    Args:
        module: A layer that :func:`unsupported_reason` accepts.
        x: The layer's input: ``(..., in)`` (Linear), ``(B, C, L)`` or ``(C, L)`` (Conv1d), ``(B, C, H, W)`` or
            ``(C, H, W)`` (Conv2d).

    Returns:
        ``(tokens, in_total)``, ``in_total = weight.numel() / out``; a Linear's tokens are all leading positions, a
        convolution's are its output positions of every batch element.

    Example:
        >>> conv = torch.nn.Conv2d(2, 4, 3)
        >>> gemm_inputs(conv, torch.randn(5, 2, 6, 6)).shape  # 5 images x 4 x 4 positions, 2 x 3 x 3 inputs
        torch.Size([80, 18])
    """
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(module, nn.Conv1d):
        if x.dim() == 2:
            x = x.unsqueeze(0)
        cols = F.unfold(
            x.unsqueeze(2), (1, module.kernel_size[0]), dilation=(1, module.dilation[0]),
            padding=(0, module.padding[0]), stride=(1, module.stride[0]),
        )  # fmt: skip
    elif isinstance(module, nn.Conv2d):
        if x.dim() == 3:
            x = x.unsqueeze(0)
        cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride)
    else:
        raise TypeError(unsupported_reason(module))
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (B, in_total, positions) -> (B * positions, in_total)


class InputStatistics:
    """Running input statistics of one layer, fed by a forward hook until :meth:`remove`.

    Args:
        module: A Linear, Conv1d or Conv2d layer (see :func:`unsupported_reason`).
        hessian: True: keep ``2 X X^T / tokens`` (``(in, in)``, SparseGPT); False: keep only ``sum_t x_tj^2``
            (``(in,)``, Wanda).
        abs_mean: Also keep ``sum_t |x_tj|`` (``(in,)``, AWQ's activation scale).

    Attributes:
        token_mask: Optional bool ``(B, L)``: which tokens of the next inputs are real (an attention mask). While set,
            a Linear input of shape ``(B, L, in)`` contributes only those tokens; other shapes are taken whole.
        tokens: Tokens the statistics hold (all ranks' after :func:`all_reduce_statistics`).
        local_tokens: Tokens this process saw.

    Raises:
        TypeError: If ``module`` is not handled.

    Example:
        >>> conv = torch.nn.Conv1d(2, 3, 2)
        >>> stats = InputStatistics(conv, hessian=False)
        >>> _ = conv(torch.ones(1, 2, 5)); stats.remove()
        >>> stats.tokens, stats.input_norms().tolist()
        (4, [2.0, 2.0, 2.0, 2.0])
    """

    def __init__(self, module: nn.Module, hessian: bool, abs_mean: bool = False) -> None:
        reason = unsupported_reason(module)
        if reason is not None:
            raise TypeError(reason)
        weight = module.weight
        size = weight.numel() // weight.shape[0]
        dtype = torch.float32 if weight.device.type == "mps" else torch.float64
        self.module = module
        self.token_mask: Optional[Tensor] = None
        self.tokens = 0
        self.local_tokens = 0
        self._sq = torch.zeros(size, dtype=dtype, device=weight.device)
        self._abs: Optional[Tensor] = torch.zeros_like(self._sq) if abs_mean else None
        self._h: Optional[Tensor] = torch.zeros(size, size, dtype=dtype, device=weight.device) if hessian else None
        self._mean: Optional[Tensor] = None  # the float32 Hessian handed out (the sum is dropped then)
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.add(args[0])

    @torch.no_grad()
    def add(self, x: Tensor) -> None:
        """Add one input of the layer (its shape as in :func:`gemm_inputs`)."""
        x = x.detach()
        mask = self.token_mask
        if mask is not None and isinstance(self.module, nn.Linear) and tuple(x.shape[:-1]) == tuple(mask.shape):
            x = x[mask.to(x.device)]  # padding positions are not calibration data
        rows = gemm_inputs(self.module, x).float()
        count = rows.shape[0]
        if count == 0:
            return
        self._sq += torch.linalg.vector_norm(rows, dim=0).square_()  # no (tokens, in) temporary
        if self._abs is not None:
            self._abs += torch.linalg.vector_norm(rows, ord=1, dim=0)
        if self._h is not None or self._mean is not None:
            self._hessian_sum().add_(rows.T @ rows)  # float32 GEMM, float64 sum
        self.tokens += count
        self.local_tokens += count

    def input_norms(self) -> Tensor:
        """``(in,)`` float32: ``||X_j||_2`` over every token seen."""
        return self._sq.sqrt().float()

    def input_abs_mean(self) -> Tensor:
        """``(in,)``: the mean ``|x_j|`` over every token seen (AWQ).

        Raises:
            RuntimeError: If this was built without ``abs_mean=True``.
        """
        if self._abs is None:
            raise RuntimeError("this InputStatistics keeps no mean |x| (built with abs_mean=False)")
        return (self._abs / max(self.tokens, 1)).float()

    def hessian(self) -> Tensor:
        """``(in, in)`` float32: ``2 X X^T / tokens``; the same tensor at every call until more input is added.

        Raises:
            RuntimeError: If this was built with ``hessian=False``.
        """
        if self._mean is None:
            if self._h is None:
                raise RuntimeError("this InputStatistics keeps only the input norms (built with hessian=False)")
            self._mean = self._h.mul_(2.0 / max(self.tokens, 1)).float()
            self._h = None  # the float64 sum is not kept beside it
        return self._mean

    def _hessian_sum(self) -> Tensor:
        """The Hessian's running sum ``X X^T`` (rebuilt from the handed-out mean if more input comes after it)."""
        if self._h is None:
            assert self._mean is not None
            dtype = torch.float32 if self._mean.device.type == "mps" else torch.float64
            self._h = self._mean.to(dtype).mul_(max(self.tokens, 1) / 2.0)
            self._mean = None
        return self._h

    def remove(self) -> None:
        """Stop gathering (remove the hook); the statistics stay."""
        self._handle.remove()


@torch.no_grad()
def all_reduce_statistics(stats: Sequence[InputStatistics], parallel: Optional[DataParallel]) -> None:
    """Make each of ``stats`` hold the statistics of every rank's tokens, in place and the same on every rank: one
    all-reduce of the token counts, then one per statistic of each layer that some rank saw (nothing when
    ``parallel`` is None).

    Every rank must call this with the same layers in the same order. A layer no rank saw keeps 0 tokens.

    Args:
        stats: The layers' statistics, gathered on this rank's share of the batches.
        parallel: The ranks (:func:`~lightning_compress.core.distributed.data_parallel`), or None.

    Example:
        >>> lin = torch.nn.Linear(2, 2)
        >>> stats = InputStatistics(lin, hessian=False)
        >>> all_reduce_statistics([stats], None)  # one process: unchanged
    """
    if parallel is None or not stats:
        return
    counts = torch.tensor([s.tokens for s in stats], dtype=torch.int64, device=stats[0]._sq.device)
    parallel.all_reduce_sum_([counts])
    for s, total in zip(stats, counts.tolist()):
        if total == 0:
            continue
        h = s._hessian_sum() if (s._h is not None or s._mean is not None) else None
        parallel.all_reduce_sum_([t for t in (s._sq, s._abs, h) if t is not None])
        s.tokens = total
