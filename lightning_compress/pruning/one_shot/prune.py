"""One-shot pruning of a trained model from a few calibration batches: magnitude, Wanda or SparseGPT, to a sparsity
or N:M, with no retraining.

:func:`one_shot_prune` gathers the inputs of every selected Linear / Conv layer with forward hooks
(:mod:`~lightning_compress.pruning.one_shot.calibration`), prunes each layer with the chosen method
(:func:`~lightning_compress.pruning.one_shot.wanda.wanda_mask`,
:func:`~lightning_compress.pruning.one_shot.sparsegpt.sparsegpt_prune`, or plain
magnitude, which needs no data), writes the pruned weights in place and returns the masks.

Transformers are processed block after block, each calibrated on the outputs of the already-pruned blocks before
it (:mod:`~lightning_compress.pruning.one_shot.sequential_calibration`); models without repeated blocks are calibrated
in one pass. Everything runs on the model's device, under ``torch.no_grad`` and in eval mode (the mode is restored
afterwards). ``lc-oneshot`` runs it over a trained Hugging Face classifier.

Under an initialised ``torch.distributed`` process group of more than one rank, with the model whole on every rank
(DDP, or one-shot work outside training), calibration is data-parallel by default (``distributed="auto"``): each rank
runs its share of the calibration batches and the layer statistics are all-reduced before each layer is pruned (see
:mod:`~lightning_compress.pruning.one_shot.sequential_calibration`); each layer of a block is then pruned by one rank
(the layers dealt out by their cost) and its weight and mask broadcast, so every rank ends with the same masks while
each runs 1 / ``world_size`` of the forward passes and about that share of the solves. Weights are never split
across ranks: SparseGPT chooses its masks across the rows of a column block, so it is not run on row shards, and a
model with sharded (FSDP2 ``DTensor``) weights is refused.

Example:
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    >>> loader = [torch.randn(32, 8) for _ in range(4)]
    >>> result = one_shot_prune(net, loader, method="sparsegpt", sparsity=0.5)
    >>> sorted(result.masks), result.achieved_sparsity
    (['0.weight', '2.weight'], 0.5)
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor, nn

from lightning_compress.core.batches import call_on_batch, move_data_to_device
from lightning_compress.core.distributed import check_distributed
from lightning_compress.core.packed_masks import PackedMasks
from lightning_compress.core.selection import FilterFn, prunable_weights
from lightning_compress.core.sharding import is_dtensor
from lightning_compress.core.validation import ArgumentErrors, check_finite, is_int
from lightning_compress.pruning.magnitude import magnitude_mask
from lightning_compress.pruning.one_shot.calibration import InputStatistics, unsupported_reason
from lightning_compress.pruning.one_shot.ignored_layers import IgnoreSpec, apply_ignore, check_ignore
from lightning_compress.pruning.one_shot.sequential_calibration import (
    ForwardFn,
    LayerCalibration,
    calibrate_sequentially,
    find_repeated_blocks,
)
from lightning_compress.pruning.one_shot.sparsegpt import sparsegpt_prune
from lightning_compress.pruning.one_shot.wanda import wanda_mask
from lightning_compress.sparsity.nm_masks import nm_mask
from lightning_compress.sparsity.pattern import check_sparsity_pattern, nm_ineligibility, pattern_name

__all__ = ["METHODS", "ForwardFn", "OneShotResult", "check_method_arguments", "one_shot_prune"]

METHODS = ("magnitude", "sparsegpt", "wanda")


@dataclass
class OneShotResult:
    """What :func:`one_shot_prune` did.

    Attributes:
        masks: ``{"<module fqn>.weight": bool keep-mask}`` of every pruned weight, on its device, held bit-packed
            (:class:`~lightning_compress.core.packed_masks.PackedMasks`: 1 bit per weight; reading a mask unpacks it).
        skipped: ``{"<module fqn>.weight": reason}`` of the selected weights left dense.
        method: ``"magnitude"``, ``"wanda"`` or ``"sparsegpt"``.
        pattern: ``"50%"`` or ``"2:4"``.
        blocks: The qualified name of the blocks processed one after another, or None (one pass).
        calibration_batches: Batches used (0 for magnitude), on all ranks together.
        ranks: Ranks the calibration was split across (1: one process, or ``distributed=False``).
        seconds: Wall time.
    """

    masks: PackedMasks
    skipped: dict[str, str] = field(default_factory=dict)
    method: str = "sparsegpt"
    pattern: str = ""
    blocks: Optional[str] = None
    calibration_batches: int = 0
    ranks: int = 1
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.masks, PackedMasks):
            self.masks = PackedMasks(self.masks)

    @property
    def achieved_sparsity(self) -> float:
        """Fraction of the pruned weights' elements that the masks prune."""
        total = sum(self.masks.shape(name).numel() for name in self.masks)
        kept = sum(self.masks.num_kept(name) for name in self.masks)
        return (total - kept) / total if total else 0.0

    @property
    def sparsity(self) -> float:
        """Deprecated name of :attr:`achieved_sparsity`."""
        warnings.warn(
            "`OneShotResult.sparsity` is deprecated: it is `achieved_sparsity` (`one_shot_prune(sparsity=...)` is the"
            " target)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.achieved_sparsity


@torch.no_grad()
def one_shot_prune(
    model: nn.Module,
    dataloader: Optional[Iterable[Any]],
    method: str = "sparsegpt",
    sparsity: Optional[float] = None,
    n: Optional[int] = None,
    m: Optional[int] = None,
    calibration_batches: int = 16,
    filter_fn: Optional[FilterFn] = None,
    skip_first_conv: bool = False,
    skip_classifier: bool = False,
    blocks: Optional[str] = "auto",
    forward_fn: Optional[ForwardFn] = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    ignore: IgnoreSpec = "auto",
    distributed: Any = "auto",
) -> OneShotResult:
    """Prune the Linear / Conv weights of a trained ``model`` in place, to ``sparsity`` or N:M, in one shot.

    Every selected layer gets the same pattern: exactly ``round(sparsity * numel)`` pruned weights per layer (Wanda
    spreads them evenly over the output rows), or ``n`` kept of every ``m`` consecutive inputs.

    Args:
        model: The model, on the device to work on.
        dataloader: Calibration batches (any iterable; e.g. the train dataloader); ignored (may be None) for
            ``"magnitude"``. Batches are moved to the model's device.
        method: ``"magnitude"``, ``"wanda"`` or ``"sparsegpt"``.
        sparsity: Unstructured target in [0, 1); or give ``n`` and ``m``.
        n: N:M: weights kept per group of ``m`` consecutive inputs (along ``weight.reshape(out, -1)``).
        m: N:M group size.
        calibration_batches: Batches taken from ``dataloader``, >= 1.
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing the layers to prune (see
            :func:`~lightning_compress.core.selection.prunable_weights`); default: Linear and Conv layers.
        skip_first_conv: Leave the first convolution dense.
        skip_classifier: Leave the last Linear dense.
        blocks: ``"auto"`` (:func:`find_repeated_blocks`), the qualified name of an ``nn.ModuleList`` /
            ``nn.Sequential`` whose children the model calls one after another, each on the previous one's output
            (the first positional argument, or ``hidden_states``), or None for one pass of the whole model.
        forward_fn: ``forward_fn(model, batch)`` runs the model on a batch; default
        :func:`~lightning_compress.core.batches.call_on_batch`.
        blocksize: SparseGPT's columns per lazy-update block, >= 1 (a multiple of ``m`` for N:M).
        percdamp: SparseGPT's dampening, a fraction of the mean Hessian diagonal, >= 0.
        ignore: Selected layers to leave dense: ``"auto"`` (the output head and every layer whose weight is tied to an
            embedding, see :mod:`~lightning_compress.pruning.one_shot.ignored_layers`), or module names / ``fnmatch``
            patterns (``["lm_head", "*.down_proj"]``; ``()`` leaves nothing out). Ignored layers are listed in
            ``skipped``.
        distributed: ``"auto"``: under an initialised process group of more than one rank, every rank holding the
            whole model and the same ``dataloader``, split the calibration batches across the ranks
            (``batches[rank::world_size]``) and all-reduce the statistics (Hessian, input norms, token counts) before
            each layer is pruned; the layers of a block are then dealt out to the ranks (by ``in^2 * (out + in)``),
            each pruned by one rank and its weight and mask broadcast to the others. Every rank ends with the same masks
            and weights, equal to one process's on all the batches (the statistics are float64 sums, so the split
            changes them only in rare float32 roundings: see
            :mod:`~lightning_compress.pruning.one_shot.calibration`). ``False``: every rank calibrates on all the
            batches and prunes every layer by itself.

    Returns:
        A :class:`OneShotResult` with the masks (the weights are already pruned) and the skipped layers.

    Raises:
        ValueError: Before any work, for a bad argument (every problem listed, each naming the argument, its value and
            what is allowed; an empty ``dataloader`` included); if a selected weight holds NaN or Inf (naming it); if no
            selected layer can be pruned; if ``dataloader``
            yields no batch; if the model's forward never reaches the blocks; if a selected weight is sharded
            (a ``DTensor``); if data-parallel with fewer calibration batches than ranks, or different numbers on the
            ranks.

    Warns:
        UserWarning: When SparseGPT raised the dampening of a layer (its name is in the message); when a selected
            weight is tied to an embedding (both names in the message).

    Example:
        >>> conv_net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 8))
        >>> images = [(torch.randn(16, 1, 8, 8), torch.zeros(16)) for _ in range(2)]
        >>> result = one_shot_prune(conv_net, images, method="wanda", n=2, m=4)
        >>> result.pattern, sorted(result.masks), result.skipped
        ('2:4', ['2.weight'], {'0.weight': 'reduction dim 9 is not a multiple of m=4'})
    """
    start = time.perf_counter()
    _validate(
        model, dataloader, method, sparsity, n, m, calibration_batches, filter_fn, skip_first_conv, skip_classifier,
        blocks, forward_fn, blocksize, percdamp, ignore, distributed,
    )  # fmt: skip
    params = prunable_weights(model, filter_fn, skip_first_conv, skip_classifier)
    sharded = [name for name, weight in params.items() if is_dtensor(weight)]
    if sharded:
        raise ValueError(
            f"one_shot_prune needs whole weights, but {len(sharded)} selected weight(s) are sharded DTensors"
            f" ({sharded[0]}{' and more' if len(sharded) > 1 else ''}): SparseGPT chooses masks across the rows of a"
            " column block, Wanda and magnitude rank whole rows or tensors. Prune the model whole on every rank (DDP,"
            " where calibration is split across the ranks), then shard it"
        )
    layers = {_owner_name(name): model.get_submodule(_owner_name(name)) for name in params}
    kept, ignored = apply_ignore(model, layers, ignore, "pruning")
    skipped: dict[str, str] = {_weight_name(fqn): why for fqn, why in ignored.items()}
    params = {name: weight for name, weight in params.items() if _owner_name(name) in kept}
    check_finite(params, f"one-shot {method} pruning")
    owners = {name: layers[_owner_name(name)] for name in params}
    for name, weight in params.items():
        reason = None
        if weight.dim() < 2 and (m is not None or method != "magnitude"):
            reason = f"{weight.dim()}-D weight"
        elif m is not None:
            reason = nm_ineligibility(weight, m)
        if reason is None and method != "magnitude":
            reason = unsupported_reason(owners[name])
        if reason is not None:
            skipped[name] = reason
    eligible = [name for name in params if name not in skipped]  # ignored layers are not in params
    if not eligible:
        listed = ", ".join(f"{name}: {why}" for name, why in skipped.items())
        raise ValueError(f"one_shot_prune({method!r}) found no layer it can prune in {type(model).__name__}: {listed}")

    result = OneShotResult(masks=PackedMasks(), skipped=skipped, method=method, pattern=pattern_name(sparsity, n, m))
    if method == "magnitude":
        for name in eligible:
            weight = params[name]
            mask = magnitude_mask(weight, sparsity) if sparsity is not None else nm_mask(weight, n or 0, m or 0)
            weight.mul_(mask)
            result.masks[name] = mask
        result.seconds = time.perf_counter() - start
        return result

    assert dataloader is not None
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    batches = [move_data_to_device(batch, device) for batch in itertools.islice(dataloader, calibration_batches)]
    if not batches:
        raise ValueError("`dataloader` yielded no batch: one-shot pruning needs calibration data")
    result.calibration_batches = len(batches)
    block_name = find_repeated_blocks(model) if blocks == "auto" else blocks
    result.blocks = block_name

    def prune(name: str, stats: InputStatistics) -> None:
        args = (method, sparsity, n, m, blocksize, percdamp)
        result.masks[name] = _prune_layer(name, stats, params[name], *args)

    def share(name: str, src: int) -> None:  # data-parallel: rank src pruned the layer; its weight and mask to all
        weight = params[name]
        if name in result.masks:
            mask = result.masks[name]
        else:
            mask = torch.empty(weight.shape, dtype=torch.bool, device=weight.device)
        assert calibration.parallel is not None
        calibration.parallel.broadcast_([weight, mask], src)
        result.masks[name] = mask

    calibration = LayerCalibration(owners, hessian=method == "sparsegpt", process=prune,
                                   unseen=result.skipped.__setitem__, distributed=distributed,
                                   broadcast=share)  # fmt: skip
    result.ranks = calibration.parallel.world_size if calibration.parallel is not None else 1
    forward = forward_fn if forward_fn is not None else call_on_batch
    was_training = model.training
    model.eval()
    try:
        calibrate_sequentially(model, batches, forward, eligible, calibration, block_name)
    finally:
        model.train(was_training)
    result.masks = result.masks.reordered(eligible)  # one order on all ranks
    result.seconds = time.perf_counter() - start
    return result


def _owner_name(weight_name: str) -> str:
    return weight_name[: -len(".weight")] if weight_name != "weight" else ""


def _weight_name(fqn: str) -> str:
    return f"{fqn}.weight" if fqn else "weight"


def _prune_layer(
    name: str,
    stats: InputStatistics,
    weight: nn.Parameter,
    method: str,
    sparsity: Optional[float],
    n: Optional[int],
    m: Optional[int],
    blocksize: int,
    percdamp: float,
) -> Tensor:
    """Prune one layer in place from its input statistics; return its keep-mask."""
    if method == "wanda":
        mask = wanda_mask(weight, stats.input_norms(), sparsity, n, m)
        weight.mul_(mask)
        return mask
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new, mask = sparsegpt_prune(weight, stats.hessian(), sparsity, n, m, blocksize, percdamp)
    for w in caught:
        warnings.warn(f"{name}: {w.message}", w.category, stacklevel=5)
    weight.copy_(new)
    return mask


def _validate(
    model: Any,
    dataloader: Any,
    method: Any,
    sparsity: Any,
    n: Any,
    m: Any,
    calibration_batches: Any,
    filter_fn: Any,
    skip_first_conv: Any,
    skip_classifier: Any,
    blocks: Any,
    forward_fn: Any,
    blocksize: Any,
    percdamp: Any,
    ignore: Any,
    distributed: Any,
) -> None:
    """Raise one ValueError naming every bad argument, its value and what is allowed."""
    errors = ArgumentErrors()
    check_ignore(errors, ignore)
    problem = check_distributed(distributed)
    if problem is not None:
        errors.add(problem)
    check_method_arguments(
        errors, method, sparsity, n, m, calibration_batches, filter_fn, skip_first_conv, skip_classifier, forward_fn,
        blocksize, percdamp,
    )  # fmt: skip
    errors.require(isinstance(model, nn.Module), "model", "an nn.Module", type(model).__name__)
    if method != "magnitude" and method in METHODS:
        if dataloader is None:
            errors.add(f"`dataloader` must give calibration batches for method={method!r}, got None")
        elif hasattr(dataloader, "__len__") and len(dataloader) == 0:
            errors.add(f"`dataloader` is empty: method={method!r} needs calibration batches")
    if blocks is not None and blocks != "auto":
        found = None
        if isinstance(blocks, str) and isinstance(model, nn.Module):
            try:
                found = model.get_submodule(blocks)
            except AttributeError:
                found = None
        ok = isinstance(found, (nn.ModuleList, nn.Sequential)) and len(found) > 0
        errors.require(ok, "blocks", "'auto', None or the qualified name of a non-empty nn.ModuleList / nn.Sequential"
                       " of the model", blocks)  # fmt: skip
    errors.raise_if_any()


def check_method_arguments(
    errors: ArgumentErrors,
    method: Any,
    sparsity: Any,
    n: Any,
    m: Any,
    calibration_batches: Any,
    filter_fn: Any,
    skip_first_conv: Any,
    skip_classifier: Any,
    forward_fn: Any,
    blocksize: Any,
    percdamp: Any,
) -> None:
    """The checks :func:`one_shot_prune` and the ``OneShotPruning`` callback share (no model needed), into ``errors``.

    Example:
        >>> errors = ArgumentErrors()
        >>> check_method_arguments(errors, "obs", 0.5, None, None, 16, None, False, False, None, 128, 0.01)
        >>> list(errors)
        ["`method` can be magnitude, sparsegpt or wanda, got 'obs'"]
    """
    errors.one_of("method", method, METHODS)
    errors.extend(check_sparsity_pattern(sparsity, n, m))
    errors.int("calibration_batches", calibration_batches)
    if errors.int("blocksize", blocksize) and is_int(m) and m >= 2:
        errors.require(blocksize % m == 0, "blocksize", f"a multiple of m={m}", blocksize)
    errors.number("percdamp", percdamp, minimum=0)
    errors.callable("filter_fn", filter_fn, "(module, fqn) -> bool")
    errors.callable("forward_fn", forward_fn, "(model, batch)")
    errors.bools(skip_first_conv=skip_first_conv, skip_classifier=skip_classifier)
