"""Magnitude pruning masks: keep the weights of largest absolute value, one tensor at a time or over many at once.

The global criterion ranks every selected weight of a model against one threshold without concatenating them: the
absolute values are read as float32, whose bit patterns, taken as int32, sort like the values themselves for
non-negative numbers. A two-pass radix select (a histogram of the top 16 bits, then of the low 16 bits inside the one
bin that holds the cut) finds the exact threshold, one tensor at a time (the int32 keys of all tensors are kept between
the passes only while they total at most 16 M elements). Ties at the threshold are pruned in a fixed order (tensor
order, then flat index), so exactly ``round(sparsity * total)`` weights are pruned and the result does not depend on
the hardware.

Already-pruned positions (``current_masks`` False) rank below every live weight, so masks only ever grow.

Example:
    >>> w = torch.tensor([[0.5, -0.1], [0.3, -2.0]])
    >>> magnitude_mask(w, 0.5)
    tensor([[ True, False],
            [False,  True]])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["global_magnitude_masks", "magnitude_mask", "num_to_prune"]

_PRUNED_KEY = -1  # below the int32 bit pattern of every non-negative float32: marks already-pruned positions
_LOW_BITS = 16
_NONFINITE_BIN = (0x7F800000 >> _LOW_BITS) + 1  # pass-1 bins from here on hold |w| = Inf (0x7f800000) or NaN
_CACHE_KEYS_UP_TO = 1 << 24  # elements (64 MiB of int32 keys); above it the keys are recomputed in every pass


def num_to_prune(sparsity: float, numel: int) -> int:
    """The number of weights a sparsity prunes: ``round(sparsity * numel)`` (Python rounding, half to even).

    Example:
        >>> num_to_prune(0.9, 1000)
        900
    """
    return int(round(sparsity * numel))


def magnitude_mask(weight: Tensor, sparsity: float, current_mask: Optional[Tensor] = None) -> Tensor:
    """Keep-mask that prunes the ``round(sparsity * numel)`` weights of smallest absolute value.

    Args:
        weight: Any shape, any floating dtype.
        sparsity: Fraction to prune, in [0, 1].
        current_mask: Optional bool mask of ``weight``'s shape; its False positions are pruned first, so the new mask is
            a subset of it.

    Returns:
        A bool tensor of ``weight``'s shape, True where the weight is kept.

    Raises:
        TypeError: If ``weight`` (or ``current_mask``) is not a tensor.
        ValueError: If ``sparsity`` is not a number in [0, 1], ``current_mask`` has another shape, ``weight`` is on the
            ``meta`` device, or a weight that would be ranked is NaN or Inf (its magnitude has no rank).

    Example:
        >>> magnitude_mask(torch.tensor([3.0, -1.0, 2.0, 0.5]), 0.5)
        tensor([ True, False,  True, False])
    """
    if not isinstance(weight, Tensor):
        raise TypeError(f"`weight` must be a tensor, got {type(weight).__name__}")
    if current_mask is not None and not isinstance(current_mask, Tensor):
        raise TypeError(f"`current_mask` must be a bool tensor or None, got {type(current_mask).__name__}")
    current = None if current_mask is None else [current_mask]
    return _masks([weight], sparsity, current, ["`weight`"], ["`current_mask`"])[0]


def global_magnitude_masks(
    weights: Sequence[Tensor],
    sparsity: float,
    current_masks: Optional[Sequence[Tensor]] = None,
) -> list[Tensor]:
    """Keep-masks that prune ``round(sparsity * total)`` weights of smallest absolute value across all ``weights``.

    One threshold is found over all tensors together, reading one tensor at a time (no concatenated copy). Ties at the
    threshold are pruned in tensor order, then by flat index. If ``current_masks`` already prune more than that, the
    result equals ``current_masks``: masks never shrink.

    Args:
        weights: Tensors of any shapes and floating dtypes, on one device; scores are computed in float32.
        sparsity: Fraction of all elements to prune, in [0, 1].
        current_masks: Optional bool masks, one per weight, same shapes; False positions stay pruned and are counted.

    Returns:
        One bool mask per weight, same shape, True where kept.

    Raises:
        TypeError: If ``weights`` is a single tensor or not a sequence of tensors, or ``current_masks`` is not a
            sequence of tensors.
        ValueError: If ``weights`` is empty, ``sparsity`` is not a number in [0, 1], ``current_masks`` does not match,
            a weight is on the ``meta`` device, or a weight that would be ranked is NaN or Inf (the message names
            ``weights[i]`` and the count).

    Example:
        >>> a, b = torch.tensor([1.0, 4.0]), torch.tensor([[3.0], [2.0]])
        >>> global_magnitude_masks([a, b], 0.5)
        [tensor([False,  True]), tensor([[ True],
                [False]])]
    """
    _check_sequence(
        "weights", weights, "global_magnitude_masks([weight], sparsity) or magnitude_mask(weight, sparsity)"
    )
    if current_masks is not None:
        _check_sequence("current_masks", current_masks, "one bool mask per weight, in a list")
    names = [f"`weights[{i}]`" for i in range(len(weights))]
    return _masks(weights, sparsity, current_masks, names, [f"`current_masks[{i}]`" for i in range(len(weights))])


def _check_sequence(name: str, value: Any, hint: str) -> None:
    """A list or tuple of tensors: a single tensor (a sequence of its rows) or anything else is refused."""
    if isinstance(value, Tensor):
        raise TypeError(f"`{name}` must be a list of tensors, got a Tensor of shape {tuple(value.shape)}; write {hint}")
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise TypeError(f"`{name}` must be a list of tensors, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, Tensor):
            raise TypeError(f"`{name}[{i}]` must be a tensor, got {type(item).__name__}")


def _masks(
    weights: Sequence[Tensor],
    sparsity: Any,
    current_masks: Optional[Sequence[Tensor]],
    names: Sequence[str],
    mask_names: Sequence[str],
) -> list[Tensor]:
    """:func:`global_magnitude_masks`, with the names its messages give each weight and mask."""
    if len(weights) == 0:
        raise ValueError("`weights` must hold at least one tensor, got an empty sequence")
    real = isinstance(sparsity, numbers.Real) and not isinstance(sparsity, bool) and math.isfinite(sparsity)
    if not (real and 0.0 <= sparsity <= 1.0):
        raise ValueError(f"`sparsity` must be a number in [0, 1], got {sparsity!r}")
    meta = [name for name, w in zip(names, weights) if w.device.type == "meta"]
    if meta:
        raise ValueError(
            f"{', '.join(meta)} {'is' if len(meta) == 1 else 'are'} on the meta device (shapes without values), which"
            " magnitude pruning cannot rank: load the weights first"
        )
    if current_masks is not None:
        if len(current_masks) != len(weights):
            raise ValueError(
                f"`current_masks` must hold one mask per weight ({len(weights)}), got {len(current_masks)}"
            )
        for name, w, m in zip(mask_names, weights, current_masks):
            if m.shape != w.shape or m.dtype != torch.bool:
                raise ValueError(
                    f"{name} must be a bool tensor of shape {tuple(w.shape)}, got {m.dtype} {tuple(m.shape)}"
                )
    lives: list[Optional[Tensor]] = list(current_masks) if current_masks is not None else [None] * len(weights)

    total = sum(w.numel() for w in weights)
    already = sum(int(m.numel() - m.count_nonzero()) for m in lives if m is not None)
    k = max(num_to_prune(sparsity, total), already)
    if k == 0:
        return [torch.ones_like(w, dtype=torch.bool) for w in weights]

    device = weights[0].device
    # Keys are recomputed in each pass (memory for one tensor's keys at a time) unless all of them are small enough to
    # keep between passes, which saves two of the three computations.
    cached: Optional[list[Tensor]] = [] if total <= _CACHE_KEYS_UP_TO else None

    def keys(i: int) -> Tensor:
        if cached is not None and i < len(cached):
            return cached[i]
        key = _score_key(weights[i], lives[i])
        if cached is not None:
            cached.append(key)
        return key

    # Pass 1: histogram of the high 16 bits (+1, so that the pruned key -1 falls in bin 0). Its top bins count the
    # live NaN and Inf magnitudes of each tensor, which have no rank: found here at no extra pass over the weights.
    hist = torch.zeros(1 << _LOW_BITS | 1, dtype=torch.int64, device=device)
    nonfinite = []
    for i in range(len(weights)):
        counts = torch.bincount(_high_bin(keys(i)), minlength=hist.numel())
        nonfinite.append(counts[_NONFINITE_BIN:].sum())
        hist += counts
    bad = [(name, n, w.numel()) for name, n, w in zip(names, torch.stack(nonfinite).tolist(), weights) if n]
    if bad:
        listed = ", ".join(f"{name} ({n} of {numel})" for name, n, numel in bad)
        raise ValueError(
            f"refusing magnitude pruning: NaN or Inf weights, whose magnitudes have no rank, in {listed}. The model"
            " diverged or was loaded from a damaged file; fix the weights (or leave those layers out) first"
        )
    cum = hist.cumsum(0)
    b1 = int(torch.searchsorted(cum, torch.tensor([k], device=device)).item())  # first bin with cum >= k
    below = int(cum[b1 - 1].item()) if b1 > 0 else 0

    # Pass 2: histogram of the low 16 bits inside bin b1, kept per tensor to know where the ties are.
    hists = []
    for i in range(len(weights)):
        key = keys(i)
        in_bin = key[_high_bin(key) == b1]
        hists.append(torch.bincount(in_bin & ((1 << _LOW_BITS) - 1), minlength=1 << _LOW_BITS))
    cum2 = torch.stack(hists).sum(0).cumsum(0)
    b2 = int(torch.searchsorted(cum2, torch.tensor([k - below], device=device)).item())
    below += int(cum2[b2 - 1].item()) if b2 > 0 else 0
    threshold = _PRUNED_KEY if b1 == 0 else ((b1 - 1) << _LOW_BITS) | b2
    ties = torch.stack(hists)[:, b2].tolist()  # positions at `threshold`, per tensor
    ties_left = k - below  # >= 1: the ties to prune, in tensor order then flat index

    masks = []
    for i, w in enumerate(weights):
        key = keys(i)
        if ties_left >= ties[i]:  # every tie here is pruned
            keep = key > threshold
        elif ties_left == 0:  # every tie here is kept
            keep = key >= threshold
        else:  # the boundary tensor: prune its first `ties_left` ties
            keep = key >= threshold
            keep[(key == threshold).nonzero().squeeze(1)[:ties_left]] = False
        ties_left -= min(ties_left, ties[i])
        masks.append(keep.view(w.shape))
    return masks


def _score_key(weight: Tensor, live: Optional[Tensor]) -> Tensor:
    """Flat int32 keys that sort like ``|weight|`` in float32; pruned positions get -1, below every live key."""
    key = weight.detach().reshape(-1).float().abs().view(torch.int32)  # a new tensor: abs never aliases its input
    if live is not None:
        # key * live + (live - 1): -1 where pruned. Integer arithmetic on a uint8 -> int32 cast is several times
        # faster on CPU than masked_fill_ or torch.where with a bool mask.
        keep = live.reshape(-1).view(torch.uint8).to(torch.int32)
        key.mul_(keep).add_(keep.sub_(1))
    return key


def _high_bin(key: Tensor) -> Tensor:
    """Bin of the top 16 bits, shifted by one; the pruned key -1 lands in bin 0."""
    return (key >> _LOW_BITS).add_(1)
