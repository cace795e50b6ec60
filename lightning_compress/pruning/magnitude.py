"""Magnitude pruning masks: keep the weights of largest absolute value, one tensor at a time or over many at once, on
one process or over the shards of weights split across ranks.

The global criterion ranks every selected weight of a model against one threshold without concatenating them
(:mod:`~lightning_compress.pruning.radix_select`): the
absolute values are read as float32, whose bit patterns, taken as int32, sort like the values themselves for
non-negative numbers. A radix select over these keys finds the exact threshold: a histogram of the top 16 bits
(32,641 bins for the finite magnitudes) gives the bin that holds the cut; the few keys in that bin are gathered and two
more histograms of 8 bits each narrow them to the exact key. Only the top 16 bits of every key are built (int16, 2
bytes per weight, read straight from the weights' bit patterns with the sign cleared), into one buffer for all tensors
while they total at most 16 M elements (beyond that, one tensor at a time in each pass); the low 16 bits are read from
the weights at the candidates only. Each pass is one operation over that buffer, not one per tensor: per update,
about ten passes of 1-2 bytes per weight besides the 4-byte read of the weights. Ties at the threshold are pruned in a
fixed order (tensor order, then flat index), so exactly ``round(sparsity * total)`` weights are pruned and the result
does not depend on the hardware.

**Sharded weights** (FSDP2's ``DTensor`` shards, rows split across ranks): each rank builds the histograms of its own
shards only, and an all-reduce of the counts over the shards' group (``(32,641 + tensors) + 256 + 256`` counts, then one
tie count per tensor and shard) makes every rank see the whole model's histograms, so every rank finds the same
threshold and the whole model prunes exactly ``round(sparsity * total)`` weights, no weight is ever gathered, and the
masks are the ones a single process finds on the whole tensors (shards hold consecutive rows in rank order, so
"tensor, then flat index" is "tensor, then rank, then local flat index"). :class:`MagnitudeSelection` reports the
bytes all-reduced beside those an all-gather of the weights would move.

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
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor

from lightning_compress.core.sharding import ShardLayout
from lightning_compress.pruning.radix_select import MagnitudeSelection, _select, num_to_prune, smallest_mask

if TYPE_CHECKING:
    from lightning_compress.core.masks import ParameterMasks

__all__ = [
    "MagnitudeSelection", "global_magnitude_masks", "magnitude_mask", "num_to_prune", "prune_by_magnitude_",
    "smallest_mask",
]  # fmt: skip


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

    One threshold is found over all tensors together (no concatenated copy of the weights). Ties at the threshold are
    pruned in tensor order, then by flat index. If ``current_masks`` already prune more than that, the result equals
    ``current_masks``: masks never shrink.

    Args:
        weights: Tensors of any shapes and floating dtypes, on one device; scores are computed in float32.
        sparsity: Fraction of all elements to prune, in [0, 1].
        current_masks: Optional bool masks, one per weight, same shapes; False positions stay pruned and are counted.

    Returns:
        One bool mask per weight, same shape, True where kept (views of one buffer).

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


@torch.no_grad()
def prune_by_magnitude_(masks: ParameterMasks, sparsity: float, scope: str = "global") -> MagnitudeSelection:
    """Grow ``masks`` in place so that they prune the smallest-magnitude weights: ``round(sparsity * n)`` of the ``n``
    weights of all masked parameters together (``scope="global"``), or of each (``"layer"``). Writes the masks' own
    buffer (no new masks); the weights are not touched (call ``masks.apply_to_weights()``). For sharded parameters
    (FSDP2), every rank computes on its shards and the histograms are all-reduced (see the module docstring): a
    collective, every rank must call it.

    Args:
        masks: The masks, on the parameters to rank.
        sparsity: Fraction to prune, in [0, 1]; already-pruned positions count and stay pruned.
        scope: ``"global"`` (one threshold) or ``"layer"`` (one per parameter).

    Returns:
        A :class:`MagnitudeSelection` (with ``scope="layer"``: summed over the layers; the threshold of the last).

    Raises:
        ValueError: If ``sparsity`` or ``scope`` is bad, or a weight that would be ranked is NaN or Inf (naming the
            parameter and the count, on every rank).

    Example:
        >>> from lightning_compress.core.masks import ParameterMasks
        >>> lin = torch.nn.Linear(4, 4)
        >>> masks = ParameterMasks({"weight": lin.weight})
        >>> prune_by_magnitude_(masks, 0.75).pruned, masks.num_pruned()
        (12, {'weight': 12})
    """
    _check_sparsity(sparsity)
    if scope not in ("global", "layer"):
        raise ValueError(f"`scope` can be global or layer, got {scope!r}")
    weights, layouts, names = masks.local_params, masks.layouts, [f"`{n}`" for n in masks.names]
    flat = masks.flat_buffer()
    if flat is None:  # masks on several devices: one selection over copies, then set in place
        current = masks.masks
        new = _masks(weights, sparsity, current, names, names, layouts)
        masks.set_masks(new)
        pruned = sum(masks.num_pruned().values())
        return MagnitudeSelection(float("nan"), pruned, sum(x.global_numel for x in layouts))
    buffer, offsets = flat
    groups = [list(range(len(weights)))] if scope == "global" else [[i] for i in range(len(weights))]
    results, counts = [], []
    for idx in groups:
        start = offsets[idx[0]]
        size = sum(weights[i].numel() for i in idx)
        out = buffer.narrow(0, start, size)
        result, local_counts = _select(
            [weights[i] for i in idx], sparsity, out, out, [names[i] for i in idx], [layouts[i] for i in idx]
        )
        results.append(result)
        counts.extend(local_counts)
    masks.mark_changed(counts)
    return MagnitudeSelection(
        results[-1].threshold,
        sum(r.pruned for r in results),
        sum(r.total for r in results),
        sum(r.rounds for r in results),
        sum(r.bytes_all_reduced for r in results),
        sum(r.bytes_gather for r in results),
    )


def _check_sequence(name: str, value: Any, hint: str) -> None:
    """A list or tuple of tensors: a single tensor (a sequence of its rows) or anything else is refused."""
    if isinstance(value, Tensor):
        raise TypeError(f"`{name}` must be a list of tensors, got a Tensor of shape {tuple(value.shape)}; write {hint}")
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise TypeError(f"`{name}` must be a list of tensors, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, Tensor):
            raise TypeError(f"`{name}[{i}]` must be a tensor, got {type(item).__name__}")


def _check_sparsity(sparsity: Any) -> None:
    real = isinstance(sparsity, numbers.Real) and not isinstance(sparsity, bool) and math.isfinite(sparsity)
    if not (real and 0.0 <= sparsity <= 1.0):
        raise ValueError(f"`sparsity` must be a number in [0, 1], got {sparsity!r}")


def _masks(
    weights: Sequence[Tensor],
    sparsity: Any,
    current_masks: Optional[Sequence[Tensor]],
    names: Sequence[str],
    mask_names: Sequence[str],
    layouts: Optional[Sequence[ShardLayout]] = None,
) -> list[Tensor]:
    """:func:`global_magnitude_masks`, with the names its messages give each weight and mask: new masks."""
    if len(weights) == 0:
        raise ValueError("`weights` must hold at least one tensor, got an empty sequence")
    _check_sparsity(sparsity)
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
    out = torch.empty(sum(w.numel() for w in weights), dtype=torch.bool, device=weights[0].device)
    _select(weights, sparsity, current_masks, out, names, layouts)
    masks, offset = [], 0
    for w in weights:
        masks.append(out[offset : offset + w.numel()].view(w.shape))
        offset += w.numel()
    return masks
