"""The exact k-th smallest magnitude over many tensors without sorting or concatenating them: a radix select over the
float32 bit patterns, on one process or over the shards of tensors split across ranks (histograms all-reduced).

:func:`~lightning_compress.pruning.magnitude.prune_by_magnitude_` (GMP's global threshold), ``magnitude_mask`` /
``global_magnitude_masks`` and SparseGPT's mask choice (:func:`smallest_mask`) all go through :func:`_select`; the
method is described in :mod:`~lightning_compress.pruning.magnitude`. Per pass it reads 2 bytes per element (the int16
high halves of the keys, built once with a strided copy and one AND; pruned positions set to 0 by a chunked multiply),
counts a 32,641-bin histogram on every intra-op thread at once (ATen's CPU ``bincount`` is single-threaded; it releases
the GIL, so a thread pool runs the chunks in parallel), finds the cut bin's positions with ``nonzero`` over 8-byte words
first, and narrows the few candidates' low 16 bits with two 256-bin histograms.

Example:
    >>> smallest_mask(torch.tensor([0.5, -0.1, 0.3, -2.0]), 2)
    tensor([ True, False, False,  True])
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from lightning_compress.core.masks import masked_mul_
from lightning_compress.core.sharding import ShardLayout, all_reduce_, common_group

__all__ = ["MagnitudeSelection", "num_to_prune", "smallest_mask"]

_INF_KEY = 0x7F800000  # the key of |w| = Inf; NaN magnitudes are above it
_BINS = (_INF_KEY >> 16) + 1  # pass-1 bins: 0 = already pruned (key -1), then 1 + the top 16 bits of a finite key
_ROUNDS = ((8, 8), (0, 8))  # (shift, bits) of the histograms that narrow the low 16 bits inside the cut bin
_HIGH_HALF = 1 if sys.byteorder == "little" else 0  # which int16 of an int32 holds its top 16 bits
_CACHE_KEYS_UP_TO = 1 << 24  # elements (32 MiB of int16 high halves); above it they are recomputed in every pass
_MAX_HIGH = 0x7FFF  # the largest high half (a NaN's); pass 1 counts every high half up to it
_PARALLEL_BINCOUNT_FROM = 1 << 20  # elements: below it one thread counts faster than several


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


class _Highs:
    """The top 16 bits of the keys (the float32 bit patterns of ``|w|``: ``bits >> 16 & 0x7FFF``, int16), with
    already-pruned positions set to 0 (the bin of the exact zeros: pass 1 takes their count off it), segment by
    segment: all tensors in one buffer, built once, when they total at most ``_CACHE_KEYS_UP_TO`` elements; else one
    tensor per segment, rebuilt in each pass. The low 16 bits are read from the weights only where the cut needs them
    (the candidates)."""

    def __init__(self, weights: Sequence[Tensor], live: Any) -> None:
        self.weights, self.live = weights, live
        self.numels = [w.numel() for w in weights]
        self.offsets = [0]
        for n in self.numels:
            self.offsets.append(self.offsets[-1] + n)
        total = self.offsets[-1]
        self.segments = [(0, len(weights))] if total <= _CACHE_KEYS_UP_TO else [(i, i + 1) for i in range(len(weights))]
        self._cache: dict[int, Tensor] = {}
        self._scratch: dict[torch.dtype, Tensor] = {}

    def start(self, segment: int) -> int:
        return self.offsets[self.segments[segment][0]]

    def live_at(self, segment: int, where: Tensor) -> Tensor:
        """Whether each flat position ``where`` (relative to the segment's start) is live."""
        live = self.live_part(segment)
        if live is None:
            return torch.ones(where.numel(), dtype=torch.bool, device=where.device)
        if isinstance(live, Tensor):
            return live[where]
        return torch.cat([m.reshape(-1) for m in live])[where]  # the rare case: the cut among exact zeros

    def live_part(self, segment: int) -> Any:
        """The live positions of a segment: None (all), a flat bool tensor, or one flat bool mask per tensor."""
        first, stop = self.segments[segment]
        if self.live is None:
            return None
        if isinstance(self.live, Tensor):
            return self.live.narrow(0, self.offsets[first], self.offsets[stop] - self.offsets[first])
        return [self.live[i].reshape(-1) for i in range(first, stop)]

    def num_pruned(self, segment: int) -> int:
        """Positions of the segment already pruned (not live)."""
        live = self.live_part(segment)
        if live is None:
            return 0
        parts = [live] if isinstance(live, Tensor) else live
        return sum(int(m.numel() - m.count_nonzero()) for m in parts)

    def __call__(self, segment: int) -> Tensor:
        if segment in self._cache:
            return self._cache[segment]
        first, stop = self.segments[segment]
        base = self.offsets[first]
        high = torch.empty(self.offsets[stop] - base, dtype=torch.int16, device=self.weights[0].device)
        for i in range(first, stop):
            a, b = self.offsets[i] - base, self.offsets[i + 1] - base
            w = self.weights[i].detach().reshape(-1)
            if w.dtype != torch.float32:  # ranked in float32, as ever
                w = w.to(torch.float32)
            high[a:b].copy_(w.view(torch.int16)[_HIGH_HALF::2])  # a strided copy, then one contiguous AND: faster
        high.bitwise_and_(0x7FFF)  # the sign bit cleared                      than one strided AND (measured)
        live = self.live_part(segment)
        if isinstance(live, Tensor):  # one flat buffer of the masks: pruned -> 0 (a multiply; `where` is 10x slower)
            masked_mul_([high], [live], None, self._scratch)
        elif live is not None:  # one mask per tensor
            for i, mask in zip(range(first, stop), live):
                a, b = self.offsets[i] - base, self.offsets[i + 1] - base
                masked_mul_([high[a:b]], [mask], None, self._scratch)
        if len(self.segments) == 1:
            self._cache[segment] = high
        return high

    def keys_at(self, segment: int, where: Tensor) -> Tensor:
        """The whole int32 keys at the flat positions ``where`` (sorted, relative to the segment's start)."""
        first, stop = self.segments[segment]
        if stop - first == 1:
            bounds = [0, where.numel()]
        else:
            edges = torch.tensor(self.offsets[first : stop + 1], dtype=where.dtype, device=where.device)
            bounds = torch.searchsorted(where, edges - self.offsets[first]).tolist()
        keys = torch.empty(where.numel(), dtype=torch.int32, device=where.device)
        as_float = keys.view(torch.float32)
        for j, i in enumerate(range(first, stop)):
            local = where[bounds[j] : bounds[j + 1]] - (self.offsets[i] - self.offsets[first])
            torch.abs(
                self.weights[i].detach().reshape(-1)[local].to(torch.float32), out=as_float[bounds[j] : bounds[j + 1]]
            )
        return keys


def smallest_mask(values: Tensor, count: int) -> Tensor:
    """The keep-mask that drops exactly the ``count`` smallest ``|values|``, ties in flat order: what a stable
    ascending sort's first ``count`` indices drop, found by the radix select instead of a sort.

    Args:
        values: Any shape, finite (e.g. SparseGPT's saliencies ``w^2 / d^2``).
        count: Elements to drop, ``0 <= count <= values.numel()``.

    Returns:
        A bool tensor of ``values``'s shape, False at the dropped positions.

    Raises:
        ValueError: If ``count`` is out of range or ``values`` holds NaN or Inf.

    Example:
        >>> smallest_mask(torch.tensor([3.0, 1.0, 2.0, 1.0]), 2)
        tensor([ True, False,  True, False])
    """
    if not 0 <= count <= values.numel():
        raise ValueError(f"`count` must be in [0, {values.numel()}] (the elements of `values`), got {count}")
    out = torch.empty(values.numel(), dtype=torch.bool, device=values.device)
    _select([values], 0.0, None, out, ["`values`"], None, count=count)
    return out.view(values.shape)


def _select(
    weights: Sequence[Tensor],
    sparsity: float,
    live: Any,
    out: Tensor,
    names: Sequence[str],
    layouts: Optional[Sequence[ShardLayout]],
    count: Optional[int] = None,
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
        count: Prune exactly this many (of the whole tensors) instead of ``round(sparsity * total)``.

    Returns:
        The selection and the local pruned count of each weight.
    """
    group = common_group(layouts) if layouts is not None else None
    global_numels = [x.global_numel for x in layouts] if layouts is not None else [w.numel() for w in weights]
    total = sum(global_numels)
    k = num_to_prune(sparsity, total) if count is None else count
    highs = _Highs(weights, live)
    device = out.device
    count_dtype = torch.int32 if total < 2**31 else torch.int64
    reduced = [0]

    def reduce(counts: Tensor) -> Tensor:
        if group is None:
            return counts
        counts = counts.to(count_dtype)
        reduced[0] += counts.numel() * counts.element_size()
        return all_reduce_(counts, group).to(torch.int64)

    # Pass 1: the histogram of the top 16 bits (bin 0 = already pruned, bin 1 + h = high half h), and the live NaN / Inf
    # per tensor (their high halves are >= 0x7f80; the pruned positions' 0x7fff is taken off by their count)
    hist = torch.zeros(_BINS, dtype=torch.int64, device=device)
    nonfinite = torch.zeros(len(weights), dtype=torch.int64, device=device)
    for s in range(len(highs.segments)):
        high = highs(s)
        if high.numel() == 0:
            continue
        counts = _bincount(high, _MAX_HIGH + 1)
        pruned = highs.num_pruned(s)  # they hold high half 0, with the live weights of |w| < 2**-126 (and zeros)
        if int(counts[_INF_KEY >> 16 :].sum()) > 0:  # a live NaN or Inf: count them per tensor for the message
            _count_nonfinite(highs, s, high, nonfinite)
            continue
        counts[0] -= pruned
        hist[0] += pruned
        hist[1:] += counts[: _BINS - 1]
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
        counts = _write_unchanged(highs, out)
        return MagnitudeSelection(0.0, already, total, 1, reduced[0], gather), counts

    cum = hist.cumsum(0)
    b1 = int(torch.searchsorted(cum, torch.tensor([k], device=device)))  # first bin with cum >= k; >= 1
    below = int(cum[b1 - 1])
    cut_high = b1 - 1  # the high half of the threshold's key

    # The keys in bin b1 (live, high half = cut_high; the pruned hold 0x7fff) and where they are (flat index into
    # `out`), in flat order
    positions, candidates = [], []
    for s in range(len(highs.segments)):
        high = highs(s)
        if high.numel() == 0:
            continue
        where = _positions_of(high, cut_high)
        if cut_high == 0:  # the cut among the live zeros and denormals: the pruned positions share their bin
            where = where[highs.live_at(s, where)]
        candidates.append(highs.keys_at(s, where))
        positions.append(where + highs.start(s) if s else where)
    all_pos = positions[0] if len(positions) == 1 else torch.cat(positions) if positions else _empty(device)
    all_keys = candidates[0] if len(candidates) == 1 else torch.cat(candidates) if candidates else _empty(device, True)

    # Rounds on the candidates: 8 bits, then the last 8
    threshold = cut_high << 16
    cand, pos = all_keys, all_pos
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
    mine = _my_ties(pos, ties_left, highs.offsets, layouts, group, reduce) if group is not None else ties_left

    # Keep the live weights whose high half is above the cut's, and those in the cut's bin at or above the threshold
    for s in range(len(highs.segments)):
        high = highs(s)
        part = out.narrow(0, highs.start(s), high.numel())
        live_part = highs.live_part(s)
        if live_part is None or cut_high > 0:  # the pruned positions hold high half 0: below the cut
            torch.ge(high, cut_high, out=part)
        elif isinstance(live_part, Tensor):  # a cut in bin 0 keeps every live position, less the candidates below
            if live_part.data_ptr() != part.data_ptr():
                part.copy_(live_part)
        else:
            first = highs.segments[s][0]
            for i, mask in zip(range(first, highs.segments[s][1]), live_part):
                a, b = highs.offsets[i] - highs.offsets[first], highs.offsets[i + 1] - highs.offsets[first]
                part[a:b].copy_(mask)
    out[all_pos[all_keys < threshold]] = False
    if mine:
        out[pos[:mine]] = False
    counts = []
    for i in range(len(weights)):
        part = out.narrow(0, highs.offsets[i], highs.numels[i])
        counts.append(int(part.numel() - part.count_nonzero()))
    value = torch.tensor(threshold, dtype=torch.int32).view(torch.float32).item()
    return MagnitudeSelection(value, k, total, 1 + len(_ROUNDS), reduced[0], gather), counts


def _count_nonfinite(highs: _Highs, segment: int, high: Tensor, nonfinite: Tensor) -> None:
    """``nonfinite[i]`` = the live NaN / Inf weights of each tensor ``i`` of the segment (high half >= 0x7f80; the
    pruned positions hold 0)."""
    first, stop = highs.segments[segment]
    for i in range(first, stop):
        a, b = highs.offsets[i] - highs.offsets[first], highs.offsets[i + 1] - highs.offsets[first]
        nonfinite[i] = int((high[a:b] >= (_INF_KEY >> 16)).sum())


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


def _write_unchanged(highs: _Highs, out: Tensor) -> list[int]:
    """``out`` = the live mask, and the local pruned count of each tensor."""
    live = highs.live
    if live is None:
        out.fill_(True)
    elif isinstance(live, Tensor):
        if live.data_ptr() != out.data_ptr():
            out.copy_(live)
    else:
        for i, mask in enumerate(live):
            out.narrow(0, highs.offsets[i], highs.numels[i]).copy_(mask.reshape(-1))
    counts = []
    for i in range(len(highs.numels)):
        part = out.narrow(0, highs.offsets[i], highs.numels[i])
        counts.append(int(part.numel() - part.count_nonzero()))
    return counts


def _gather_bytes(weights: Sequence[Tensor], layouts: Optional[Sequence[ShardLayout]]) -> int:
    """Bytes an all-gather of the whole selected weights would bring to this rank: every element it does not hold."""
    if layouts is None or common_group(layouts) is None:
        return 0
    return sum((x.global_numel - w.numel()) * w.element_size() for w, x in zip(weights, layouts))


def _positions_of(values: Tensor, value: int) -> Tensor:
    """The flat positions (int64, ascending) where ``values == value``, for a rare value: ``nonzero`` over the 8-byte
    words of the comparison first (an eighth of the elements), then inside the few words that hold a match; about
    half the time of one ``nonzero`` over every element."""
    equal = values == value
    n = equal.numel()
    whole = n - n % 8
    if whole == 0:
        return equal.nonzero().squeeze(1)
    words = equal[:whole].view(torch.int64)  # a fresh tensor: aligned
    hit = words.nonzero().squeeze(1)
    rows, cols = equal[:whole].view(-1, 8)[hit].nonzero(as_tuple=True)
    positions = hit[rows] * 8 + cols
    if whole < n:
        tail = equal[whole:].nonzero().squeeze(1)
        if tail.numel():  # (not torch.cat: the selection concatenates nothing of the weights' size)
            both = torch.empty(positions.numel() + tail.numel(), dtype=positions.dtype, device=positions.device)
            both[: positions.numel()] = positions
            both[positions.numel() :] = tail + whole
            positions = both
    return positions


def _bincount(values: Tensor, minlength: int) -> Tensor:
    """``torch.bincount(values, minlength=minlength)``; on CPU, over a chunk per intra-op thread in parallel (ATen's
    CPU bincount runs on one thread; it releases the GIL, so Python threads run the chunks at once)."""
    threads = torch.get_num_threads()
    if values.device.type != "cpu" or threads < 2 or values.numel() < _PARALLEL_BINCOUNT_FROM:
        return torch.bincount(values, minlength=minlength)
    parts = values.chunk(threads)
    counts = list(_thread_pool(threads).map(lambda part: torch.bincount(part, minlength=minlength), parts))
    total = counts[0]
    for more in counts[1:]:
        total += more
    return total


_POOL: list[Any] = [None, 0]  # the executor and its thread count, made on first use


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    if _POOL[1] != threads:
        if _POOL[0] is not None:
            _POOL[0].shutdown(wait=False)
        _POOL[0], _POOL[1] = ThreadPoolExecutor(threads, thread_name_prefix="lc-bincount"), threads
    return _POOL[0]


def _empty(device: torch.device, keys: bool = False) -> Tensor:
    return torch.empty(0, dtype=torch.int32 if keys else torch.int64, device=device)
