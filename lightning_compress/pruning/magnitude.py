"""Magnitude pruning masks: keep the weights of largest absolute value, one tensor at a time or over many at once, on
one process or over the shards of weights split across ranks.

The global criterion ranks every selected weight of a model against one threshold without concatenating them: the
absolute values are read as float32, whose bit patterns, taken as int32, sort like the values themselves for
non-negative numbers. A radix select over these keys finds the exact threshold: a histogram of the top 16 bits
(32,641 bins for the finite magnitudes) gives the bin that holds the cut; the few keys in that bin are gathered and two
more histograms of 8 bits each narrow them to the exact key. The keys of all tensors are built once into one buffer
(while they total at most 16 M elements; beyond that they are recomputed one tensor at a time in each pass), and each
pass is one operation over that buffer, not one per tensor. Ties at the threshold are pruned in a fixed order (tensor
order, then flat index), so exactly ``round(sparsity * total)`` weights are pruned and the result does not depend on
the hardware.

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
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor

from lightning_compress.core.sharding import ShardLayout, all_reduce_, common_group

if TYPE_CHECKING:
    from lightning_compress.core.masks import ParameterMasks

__all__ = ["MagnitudeSelection", "global_magnitude_masks", "magnitude_mask", "num_to_prune", "prune_by_magnitude_"]

_INF_KEY = 0x7F800000  # the key of |w| = Inf; NaN magnitudes are above it
_BINS = (_INF_KEY >> 16) + 1  # pass-1 bins: 0 = already pruned (key -1), then 1 + the top 16 bits of a finite key
_ROUNDS = ((8, 8), (0, 8))  # (shift, bits) of the histograms that narrow the low 16 bits inside the cut bin
_HIGH_HALF = 1 if sys.byteorder == "little" else 0  # which int16 of an int32 holds its top 16 bits
_CACHE_KEYS_UP_TO = 1 << 24  # elements (64 MiB of int32 keys); above it the keys are recomputed in every pass


@dataclass(frozen=True)
class MagnitudeSelection:
    """What one magnitude selection did.

    Attributes:
        threshold: The magnitude at the cut: smaller weights are pruned, equal ones partly (the ties), larger kept.
        pruned: Weights the masks prune now, of the whole tensors (all shards).
        total: Weights ranked, of the whole tensors.
        rounds: Histograms built (3 for a selection that prunes something new; collectives when sharded).
        bytes_all_reduced: Bytes this rank sent through all-reduces (0 on one process).
        bytes_gather: Bytes an all-gather of the selected weights would have brought to this rank instead.
    """

    threshold: float
    pruned: int
    total: int
    rounds: int = 0
    bytes_all_reduced: int = 0
    bytes_gather: int = 0


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


class _Keys:
    """The int32 keys of the weights (float32 bit patterns of ``|w|``, -1 where already pruned), segment by segment:
    all tensors in one buffer, built once, when they total at most ``_CACHE_KEYS_UP_TO`` elements; else one tensor per
    segment, rebuilt in each pass."""

    def __init__(self, weights: Sequence[Tensor], live: Any) -> None:
        self.weights, self.live = weights, live
        self.numels = [w.numel() for w in weights]
        self.offsets = [0]
        for n in self.numels:
            self.offsets.append(self.offsets[-1] + n)
        total = self.offsets[-1]
        self.segments = [(0, len(weights))] if total <= _CACHE_KEYS_UP_TO else [(i, i + 1) for i in range(len(weights))]
        self._cache: dict[int, Tensor] = {}
        self._minus_one = torch.full((), -1, dtype=torch.int32, device=weights[0].device)

    def start(self, segment: int) -> int:
        return self.offsets[self.segments[segment][0]]

    def __call__(self, segment: int) -> Tensor:
        if segment in self._cache:
            return self._cache[segment]
        first, stop = self.segments[segment]
        base = self.offsets[first]
        keys = torch.empty(self.offsets[stop] - base, dtype=torch.int32, device=self.weights[0].device)
        as_float = keys.view(torch.float32)
        for i in range(first, stop):
            a, b = self.offsets[i] - base, self.offsets[i + 1] - base
            w = self.weights[i].detach().reshape(-1)
            if w.dtype == torch.float32:
                torch.abs(w, out=as_float[a:b])
            else:  # ranked in float32, as ever
                as_float[a:b].copy_(w).abs_()
        live = self.live
        if isinstance(live, Tensor):  # one flat buffer of the masks
            torch.where(live.narrow(0, base, keys.numel()), keys, self._minus_one, out=keys)
        elif live is not None:  # one mask per tensor
            for i in range(first, stop):
                a, b = self.offsets[i] - base, self.offsets[i + 1] - base
                torch.where(live[i].reshape(-1), keys[a:b], self._minus_one, out=keys[a:b])
        if len(self.segments) == 1:
            self._cache[segment] = keys
        return keys


def _select(
    weights: Sequence[Tensor],
    sparsity: float,
    live: Any,
    out: Tensor,
    names: Sequence[str],
    layouts: Optional[Sequence[ShardLayout]],
) -> tuple[MagnitudeSelection, list[int]]:
    """The radix select of the module docstring: write into ``out`` (flat bool, the weights' elements in order; it may
    be ``live`` itself) the keep-mask that prunes ``max(round(sparsity * total), already pruned)`` weights.

    Args:
        weights: The (local) tensors, one device.
        sparsity: Fraction of the whole tensors' elements to prune.
        live: None, a flat bool buffer like ``out``, or one bool mask per weight: the positions not yet pruned.
        out: Flat bool, ``sum(numel)`` elements.
        names: For messages, one per weight.
        layouts: Where each local tensor sits in its whole tensor (None: not sharded).

    Returns:
        The selection and the local pruned count of each weight.
    """
    group = common_group(layouts) if layouts is not None else None
    global_numels = [x.global_numel for x in layouts] if layouts is not None else [w.numel() for w in weights]
    total = sum(global_numels)
    k = num_to_prune(sparsity, total)
    keys = _Keys(weights, live)
    device = out.device
    count_dtype = torch.int32 if total < 2**31 else torch.int64
    reduced = [0]

    def reduce(counts: Tensor) -> Tensor:
        if group is None:
            return counts
        counts = counts.to(count_dtype)
        reduced[0] += counts.numel() * counts.element_size()
        return all_reduce_(counts, group).to(torch.int64)

    # Pass 1: the top 16 bits (+1, so that the pruned key -1 falls in bin 0), and the live NaN / Inf per tensor
    hist = torch.zeros(_BINS, dtype=torch.int64, device=device)
    nonfinite = torch.zeros(len(weights), dtype=torch.int64, device=device)
    high_cache: dict[int, Tensor] = {}
    for s in range(len(keys.segments)):
        key = keys(s)
        if key.numel() == 0:
            continue
        if int(key.max()) >= _INF_KEY:
            first, stop = keys.segments[s]
            base = keys.offsets[first]
            for i in range(first, stop):
                segment = key[keys.offsets[i] - base : keys.offsets[i + 1] - base]
                nonfinite[i] = int((segment >= _INF_KEY).sum())
            continue
        high = key.view(torch.int16)[_HIGH_HALF::2] + 1  # no overflow: finite keys stay below 0x7f80 << 16
        hist += torch.bincount(high, minlength=_BINS)
        if len(keys.segments) == 1:
            high_cache[s] = high
    if group is not None:  # one all-reduce for both
        both = reduce(torch.cat([hist, nonfinite]))
        hist, nonfinite = both[:_BINS], both[_BINS:]
    bad = [(name, n, numel) for name, n, numel in zip(names, nonfinite.tolist(), global_numels) if n]
    if bad:
        listed = ", ".join(f"{name} ({n} of {numel})" for name, n, numel in bad)
        raise ValueError(
            f"refusing magnitude pruning: NaN or Inf weights, whose magnitudes have no rank, in {listed}. The model"
            " diverged or was loaded from a damaged file; fix the weights (or leave those layers out) first"
        )
    already = int(hist[0])
    k = max(k, already)
    gather = _gather_bytes(weights, layouts)
    if k == already:  # nothing new to prune: the masks stay as they are
        counts = _write_unchanged(keys, out)
        return MagnitudeSelection(0.0, already, total, 1, reduced[0], gather), counts

    cum = hist.cumsum(0)
    b1 = int(torch.searchsorted(cum, torch.tensor([k], device=device)))  # first bin with cum >= k; >= 1
    below = int(cum[b1 - 1])

    # The keys in bin b1 and where they are (flat index into `out`), in flat order
    positions, candidates = [], []
    for s in range(len(keys.segments)):
        key = keys(s)
        if key.numel() == 0:
            continue
        high = high_cache[s] if s in high_cache else key.view(torch.int16)[_HIGH_HALF::2] + 1
        where = (high == b1).nonzero().squeeze(1)
        candidates.append(key[where])
        positions.append(where + keys.start(s) if s else where)
    high_cache.clear()
    pos = positions[0] if len(positions) == 1 else torch.cat(positions) if positions else _empty(device)
    cand = candidates[0] if len(candidates) == 1 else torch.cat(candidates) if candidates else _empty(device, True)

    # Rounds on the candidates: 8 bits, then the last 8
    threshold = (b1 - 1) << 16
    for shift, bits in _ROUNDS:
        digits = (cand >> shift) & ((1 << bits) - 1)
        counts2 = reduce(torch.bincount(digits, minlength=1 << bits))
        cum2 = counts2.cumsum(0)
        j = int(torch.searchsorted(cum2, torch.tensor([k - below], device=device)))
        below += int(cum2[j - 1]) if j > 0 else 0
        threshold |= j << shift
        chosen = digits == j
        cand, pos = cand[chosen], pos[chosen]
    ties_left = k - below  # >= 1: ties to prune, in (tensor, shard, flat index) order
    mine = _my_ties(pos, ties_left, keys.offsets, layouts, group, reduce) if group is not None else ties_left

    counts = []
    for s in range(len(keys.segments)):
        key = keys(s)
        start = keys.start(s)
        torch.ge(key, threshold, out=out.narrow(0, start, key.numel()))
    if mine:
        out[pos[:mine]] = False
    for i in range(len(weights)):
        part = out.narrow(0, keys.offsets[i], keys.numels[i])
        counts.append(int(part.numel() - part.count_nonzero()))
    value = torch.tensor(threshold, dtype=torch.int32).view(torch.float32).item()
    return MagnitudeSelection(value, k, total, 1 + len(_ROUNDS), reduced[0], gather), counts


def _my_ties(
    pos: Tensor, ties_left: int, offsets: Sequence[int], layouts: Sequence[ShardLayout], group: Any, reduce: Any
) -> int:
    """How many of this rank's ties (``pos``, in flat order) to prune: the ties are taken in the order of the whole
    tensors (tensor, then rank, then local flat index), which an all-reduce of every rank's tie count per tensor
    settles."""
    coordinate, shards = layouts[0].coordinate, layouts[0].shards
    bounds = torch.tensor(offsets[1:-1], dtype=torch.int64, device=pos.device)
    per_tensor = torch.bincount(torch.bucketize(pos, bounds, right=True), minlength=len(layouts))
    table = torch.zeros(len(layouts), shards, dtype=torch.int64, device=pos.device)
    table[:, coordinate] = per_tensor
    table = reduce(table.reshape(-1)).view(len(layouts), shards)
    before = table.reshape(-1).cumsum(0).view_as(table) - table
    allotted = (ties_left - before).clamp_(min=0).minimum(table)
    return int(allotted[:, coordinate].sum())


def _write_unchanged(keys: _Keys, out: Tensor) -> list[int]:
    """``out`` = the live mask (keys >= 0), and the local pruned count of each tensor."""
    for s in range(len(keys.segments)):
        key = keys(s)
        torch.ge(key, 0, out=out.narrow(0, keys.start(s), key.numel()))
    counts = []
    for i in range(len(keys.numels)):
        part = out.narrow(0, keys.offsets[i], keys.numels[i])
        counts.append(int(part.numel() - part.count_nonzero()))
    return counts


def _gather_bytes(weights: Sequence[Tensor], layouts: Optional[Sequence[ShardLayout]]) -> int:
    """Bytes an all-gather of the whole selected weights would bring to this rank: every element it does not hold."""
    if layouts is None or common_group(layouts) is None:
        return 0
    return sum((x.global_numel - w.numel()) * w.element_size() for w, x in zip(weights, layouts))


def _empty(device: torch.device, keys: bool = False) -> Tensor:
    return torch.empty(0, dtype=torch.int32 if keys else torch.int64, device=device)
