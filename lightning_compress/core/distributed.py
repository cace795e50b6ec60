"""Collectives of the masking core: the same masks and weights on every rank under DDP (rank 0's, broadcast in one
collective each), and, for weights sharded across ranks (:mod:`~lightning_compress.core.sharding`), every shard's part
of a tensor gathered to one rank (a checkpoint holds whole masks) and each shard's offset into a whole tensor; and,
for one-shot calibration on a model replicated on every rank, :class:`DataParallel`: each rank's share of the
calibration batches and the sums of the statistics gathered on them.

Masks go packed to 1 bit per weight, so that every replica prunes the same weights even where their float values
differ in the last bit. Without an initialised process group of more than one rank every function returns its input
unchanged.

Example:
    >>> broadcast_masks([torch.tensor([True, False])])
    [tensor([ True, False])]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, TypeVar

import torch
from torch import Tensor

from lightning_compress.core.bit_packing import pack_mask, unpack_mask
from lightning_compress.core.sharding import ShardLayout

__all__ = [
    "DataParallel",
    "broadcast_masks",
    "broadcast_tensors_",
    "check_distributed",
    "data_parallel",
    "gather_packed_masks",
    "gather_to_first",
    "is_distributed",
    "shard_offsets",
]


def is_distributed() -> bool:
    """Whether a process group of more than one rank is initialised."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


T = TypeVar("T")


def check_distributed(value: Any) -> Optional[str]:
    """The problem with a ``distributed`` argument (``"auto"`` or ``False``), or None.

    Example:
        >>> check_distributed("auto") is None, check_distributed(True)[-22:]
        (True, 'all of them), got True')
    """
    if (isinstance(value, str) and value == "auto") or value is False:
        return None
    return (
        "`distributed` can be 'auto' (split the calibration batches across the ranks of an initialised process"
        f" group) or False (every rank calibrates on all of them), got {value!r}"
    )


@dataclass(frozen=True)
class DataParallel:
    """Data-parallel calibration over the ranks of the default process group: the model is whole on every rank, each
    rank runs its share of the calibration batches, and the statistics are summed over the ranks before they are used,
    so every rank computes the same result.

    Attributes:
        rank: This process's rank.
        world_size: The number of ranks (> 1).
    """

    rank: int
    world_size: int

    def share(self, items: Sequence[T], what: str = "calibration batches") -> list[T]:
        """This rank's share of ``items``, which must be the same on every rank: ``items[rank::world_size]`` (so
        shares differ by at most one item). One all-gather checks that every rank holds as many.

        Raises:
            ValueError: On every rank, if the ranks hold different numbers of ``items``, or fewer than
                ``world_size`` (a rank would have none).
        """
        counts = torch.tensor([len(items)], dtype=torch.int64, device=_collective_device())
        table = [torch.empty_like(counts) for _ in range(self.world_size)]
        torch.distributed.all_gather(table, counts)
        per_rank = [int(t) for t in table]
        if len(set(per_rank)) != 1:
            listed = ", ".join(f"rank {r}: {c}" for r, c in enumerate(per_rank))
            raise ValueError(
                f"data-parallel calibration needs the same {what} on every rank (each rank takes its share), but the"
                f" ranks hold different numbers of them ({listed}); give every rank the same data, or pass"
                " `distributed=False`"
            )
        if per_rank[0] < self.world_size:
            raise ValueError(
                f"data-parallel calibration splits the {what} across the {self.world_size} ranks of the process group,"
                f" but there are only {per_rank[0]}: give at least {self.world_size} (more `calibration_batches` or"
                " data), or pass `distributed=False` to calibrate every rank on all of them"
            )
        return list(items[self.rank :: self.world_size])

    @torch.no_grad()
    def all_reduce_sum_(self, tensors: Sequence[Tensor]) -> None:
        """Sum each of ``tensors`` over the ranks, in place (one all-reduce per tensor, on its device; the result is
        the same on every rank)."""
        for tensor in tensors:
            torch.distributed.all_reduce(tensor)

    @torch.no_grad()
    def broadcast_(self, tensors: Sequence[Tensor], src: int) -> None:
        """Overwrite each of ``tensors`` in place with rank ``src``'s (one broadcast per tensor; bool tensors go as
        bytes)."""
        for tensor in tensors:
            data = tensor.data.view(torch.uint8) if tensor.dtype == torch.bool else tensor.data
            torch.distributed.broadcast(data, src=src)


def data_parallel(distributed: Any = "auto") -> Optional[DataParallel]:
    """The ranks to calibrate over: a :class:`DataParallel` when ``distributed="auto"`` and a process group of more
    than one rank is initialised; None (calibrate on every batch here) otherwise.

    Raises:
        ValueError: If ``distributed`` is not ``"auto"`` or ``False``.

    Example:
        >>> data_parallel("auto") is None  # no process group here
        True
    """
    problem = check_distributed(distributed)
    if problem is not None:
        raise ValueError(problem)
    if distributed is False or not is_distributed():
        return None
    return DataParallel(torch.distributed.get_rank(), torch.distributed.get_world_size())


def _collective_device() -> torch.device:
    """Where the default group's small collectives go: the current GPU for NCCL, else the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_masks(masks: list[Tensor]) -> list[Tensor]:
    """Rank 0's masks on every rank, packed to 1 bit per weight in one broadcast.

    Args:
        masks: Bool tensors, the same shapes on every rank.

    Returns:
        Bool tensors of the same shapes, equal to rank 0's (``masks`` itself when not distributed).

    Example:
        >>> broadcast_masks([torch.tensor([True, False])])
        [tensor([ True, False])]
    """
    if not is_distributed():
        return masks
    packed = [pack_mask(m) for m in masks]
    flat = torch.cat(packed)
    torch.distributed.broadcast(flat, src=0)
    out, offset = [], 0
    for m, p in zip(masks, packed):
        out.append(unpack_mask(flat[offset : offset + p.numel()], m.shape))
        offset += p.numel()
    return out


@torch.no_grad()
def broadcast_tensors_(tensors: Sequence[Tensor]) -> None:
    """Overwrite ``tensors`` in place with rank 0's values (nothing when not distributed).

    Example:
        >>> w = torch.ones(2)
        >>> broadcast_tensors_([w])
    """
    if not is_distributed():
        return
    for tensor in tensors:
        torch.distributed.broadcast(tensor.data, src=0)


def gather_to_first(pieces: Sequence[Tensor], group: Any) -> Optional[list[list[Tensor]]]:
    """Every rank of ``group`` sends its ``pieces`` to the group's first rank, in two collectives (the lengths, then one
    padded payload).

    Args:
        pieces: 1-D tensors of one dtype and device, any lengths (the same count on every rank).
        group: The process group (its rank order is the shards' coordinate order).

    Returns:
        On the group's first rank, for each piece index, every rank's piece in group-rank order; None elsewhere.
    """
    dist = torch.distributed
    size, me = dist.get_world_size(group), dist.get_rank(group)
    device, dtype = pieces[0].device, pieces[0].dtype
    lengths = torch.tensor([p.numel() for p in pieces], dtype=torch.int64, device=device)
    table = [torch.empty_like(lengths) for _ in range(size)]
    dist.all_gather(table, lengths, group=group)
    totals = [int(t.sum()) for t in table]
    payload = torch.zeros(max(max(totals), 1), dtype=dtype, device=device)
    if totals[me]:
        torch.cat([p.reshape(-1) for p in pieces], out=payload[: totals[me]])
    received = [torch.empty_like(payload) for _ in range(size)] if me == 0 else None
    dist.gather(payload, received, dst=dist.get_global_rank(group, 0), group=group)
    if received is None:
        return None
    out: list[list[Tensor]] = [[] for _ in pieces]
    for data, sizes in zip(received, table):
        for i, part in enumerate(torch.split(data[: int(sizes.sum())], sizes.tolist())):
            out[i].append(part)
    return out


def gather_packed_masks(masks: Sequence[Tensor], layouts: Sequence[ShardLayout], group: Any) -> Optional[list[Tensor]]:
    """The whole masks of sharded weights, packed (:func:`~lightning_compress.core.bit_packing.pack_mask` of the
    whole tensor), on the first rank of ``group``: each rank packs its shards, one gather brings them together
    (``numel / 8`` bytes in all), and the pieces are joined in row order. Where a shard's size is not a multiple of 8
    bits, that tensor is unpacked and packed again on the receiving rank (one tensor's bool mask at a time).

    Args:
        masks: The local masks (bool), one per layout.
        layouts: Where each shard sits (:func:`~lightning_compress.core.sharding.shard_layouts`).
        group: Their process group.

    Returns:
        The packed whole masks on the group's first rank; None on the others.
    """
    gathered = gather_to_first([pack_mask(m) for m in masks], group)
    if gathered is None:
        return None
    out = []
    for pieces, layout in zip(gathered, layouts):
        numels = [layout.shard_numel(c) for c in range(layout.shards)]
        if all(n % 8 == 0 for n in numels[:-1]):
            out.append(torch.cat(pieces).cpu())
        else:
            bits = torch.cat([unpack_mask(p, (n,)) for p, n in zip(pieces, numels)])
            out.append(pack_mask(bits).cpu())
    return out


def shard_offsets(counts: Sequence[int], group: Any, device: Any = "cpu") -> list[int]:
    """For per-tensor counts of something in each rank's shard (pruned positions, say), where this rank's part starts
    in the whole tensor's sequence of them: the sum of the counts of the ranks before it (one all-gather).

    Example:
        >>> shard_offsets([3, 4], None)
        [0, 0]
    """
    if group is None:
        return [0] * len(counts)
    dist = torch.distributed
    mine = torch.tensor(list(counts), dtype=torch.int64, device=device)
    table = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(table, mine, group=group)
    before = table[: dist.get_rank(group)]
    return torch.stack(before).sum(0).tolist() if before else [0] * len(counts)
