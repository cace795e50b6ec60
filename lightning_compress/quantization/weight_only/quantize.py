"""One-shot weight-only quantization of a trained model from a few calibration batches: GPTQ, AWQ or round-to-
nearest, to 2-8 bits in groups, optionally pruned in the same pass (SparseGPT + GPTQ), with no retraining.

:func:`one_shot_quantize` selects the Linear layers (``filter_fn``, and ``ignore``: by default the output head and
weights tied to an embedding stay in float), gathers each layer's input Hessian (and mean ``|x|`` for AWQ) with the
one-shot calibration machinery of :mod:`~lightning_compress.pruning.one_shot.sequential_calibration` (transformer
blocks one after another, block ``i + 1`` calibrated on the outputs of the quantized block ``i``; memory near one
block's statistics and activations), rounds each layer, writes the de-quantized weights in place and returns the
grids: :func:`~lightning_compress.quantization.weight_only.linear.to_weight_only_` then swaps the layers for modules
that run real INT4 / INT8 kernels.

Example:
    >>> net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    >>> data = [torch.randn(16, 64) for _ in range(4)]
    >>> net, result = one_shot_quantize(net, data, method="gptq", bits=4, group_size=32)
    >>> sorted(result.layers), result.layers["0"].scale.shape
    (['0', '2'], torch.Size([32, 2]))
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import sys
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor, nn

from lightning_compress.core.batches import call_on_batch, move_data_to_device
from lightning_compress.core.distributed import check_distributed
from lightning_compress.core.selection import FilterFn, select_layers
from lightning_compress.core.validation import ArgumentErrors, check_finite, check_materialized
from lightning_compress.pruning.one_shot.calibration import InputStatistics
from lightning_compress.pruning.one_shot.ignored_layers import IgnoreSpec, apply_ignore, check_ignore
from lightning_compress.pruning.one_shot.sequential_calibration import (
    ForwardFn,
    LayerCalibration,
    calibrate_sequentially,
    find_repeated_blocks,
)
from lightning_compress.quantization.weight_only.awq import awq_quantize, output_error
from lightning_compress.quantization.weight_only.gptq import gptq_quantize
from lightning_compress.quantization.weight_only.grid import (
    Grid,
    QuantizedWeight,
    check_grid,
    dequantize,
    grid_parameters,
    group_size_problem,
    quantize,
)
from lightning_compress.sparsity.pattern import check_sparsity_pattern, nm_ineligibility, pattern_name

__all__ = ["METHODS", "LayerReport", "QuantizationResult", "check_quantize_arguments", "one_shot_quantize"]

METHODS = ("awq", "gptq", "rtn")


@dataclass(frozen=True)
class LayerReport:
    """How one layer was quantized.

    Attributes:
        error: Relative output error on the calibration inputs, ``||(W - W') X||^2 / ||W X||^2`` (None for RTN,
            which sees no data).
        weight_error: Relative weight error ``||W - W'||^2 / ||W||^2``.
        seconds: Wall time of the rounding (calibration passes not included).
    """

    error: Optional[float]
    weight_error: float
    seconds: float


@dataclass
class QuantizationResult:
    """What :func:`one_shot_quantize` did.

    Attributes:
        layers: ``{module fqn: QuantizedWeight}`` of every quantized layer (grids, AWQ scale, joint keep-mask); its
            ``weight`` is the layer's own weight tensor (shared, not a copy: the result holds no second copy of the
            model's weights, and it follows in-place changes of the layer's weight).
        report: ``{module fqn: LayerReport}``.
        skipped: ``{module fqn: reason}`` of the selected layers left in float.
        method: ``"gptq"``, ``"awq"`` or ``"rtn"``.
        grid: The grid.
        pattern: ``""``, or the joint pruning pattern (``"50%"``, ``"2:4"``).
        blocks: The blocks processed one after another, or None (one pass).
        calibration_batches: Batches used (0 for RTN).
        ranks: Ranks the calibration was split across (1: one process, or ``distributed=False``).
        seconds: Wall time.
    """

    layers: dict[str, QuantizedWeight]
    report: dict[str, LayerReport] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    method: str = "gptq"
    grid: Grid = field(default_factory=Grid)
    pattern: str = ""
    blocks: Optional[str] = None
    calibration_batches: int = 0
    ranks: int = 1
    seconds: float = 0.0

    def summary(self) -> str:
        """One line: method, grid, layers, mean errors, time."""
        errors = [r.error for r in self.report.values() if r.error is not None]
        mean = f", mean output error {sum(errors) / len(errors):.3%}" if errors else ""
        group = "per channel" if self.grid.group_size is None else f"g{self.grid.group_size}"
        joint = f" + {self.pattern} pruning" if self.pattern else ""
        return (
            f"{self.method} W{self.grid.bits} {group}{' sym' if self.grid.symmetric else ' asym'}{joint}:"
            f" {len(self.layers)} layers{mean}, {len(self.skipped)} skipped, {self.seconds:.1f} s"
        )


def _batches(data: Any, count: int) -> list[Any]:
    if isinstance(data, Tensor):  # rows of token ids (N, L) or samples (N, ...): one row per batch
        return [row.unsqueeze(0) for row in data[:count]]
    return list(itertools.islice(data, count))


@torch.no_grad()
def one_shot_quantize(
    model: nn.Module,
    calibration_data: Optional[Iterable[Any]] = None,
    method: str = "gptq",
    bits: int = 4,
    group_size: Optional[int] = 128,
    symmetric: bool = True,
    act_order: bool = False,
    damping: float = 0.01,
    blocksize: int = 128,
    sparsity: Optional[float] = None,
    n: Optional[int] = None,
    m: Optional[int] = None,
    calibration_batches: int = 16,
    filter_fn: Optional[FilterFn] = None,
    ignore: IgnoreSpec = "auto",
    blocks: Optional[str] = "auto",
    forward_fn: Optional[ForwardFn] = None,
    awq_points: int = 20,
    static_groups: bool = False,
    search_ranges: bool = False,
    distributed: Any = "auto",
) -> tuple[nn.Module, QuantizationResult]:
    """Quantize the Linear weights of a trained ``model`` in place, in one shot (weights only; activations stay float).

    Args:
        model: The model, on the device to work on.
        calibration_data: Calibration batches (any iterable, or a tensor whose rows are taken one per batch, e.g.
            token windows ``(N, L)``); not needed (may be None) for ``"rtn"``. Batches are moved to the model's device.
        method: ``"gptq"`` (Hessian-guided rounding), ``"awq"`` (activation-aware input scales, then rounding) or
            ``"rtn"`` (round to nearest, data-free).
        bits: 2..8. 2-4 bits run on the INT4 kernel, 5-8 on the per-channel INT8 one.
        group_size: Inputs per scale; must divide the input width of every quantized layer; None: per output
            channel (required above 4 bits).
        symmetric: Symmetric grids (required above 4 bits) or asymmetric.
        act_order: GPTQ: walk the columns by decreasing activation (``H_jj``).
        damping: GPTQ: Hessian dampening, a fraction of its mean diagonal, >= 0 (raised with a warning if needed).
        blocksize: GPTQ: columns per lazy-update block.
        sparsity: Joint GPTQ + SparseGPT: also prune each layer to this sparsity in the same pass.
        n: Joint mode: N:M, weights kept per group of ``m`` consecutive inputs.
        m: Joint mode: N:M group size.
        calibration_batches: Batches taken from ``calibration_data``, >= 1.
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing the layers (see
            :func:`~lightning_compress.core.selection.select_layers`); default: Linear (and Conv, listed as skipped).
        ignore: ``"auto"`` (the output head and weights tied to an embedding stay float) or module names / fnmatch
            patterns (``()``: none).
        blocks: ``"auto"``, the name of the repeated blocks, or None (one pass); as for ``one_shot_prune``.
        forward_fn: ``forward_fn(model, batch)``; default :func:`~lightning_compress.core.batches.call_on_batch`.
        awq_points: AWQ: ratios searched.
        static_groups: GPTQ: set every group's grid from the original weights before the walk (llm-compressor's
            way), rather than when the walk reaches the group (the GPTQ paper's).
        search_ranges: GPTQ: fixed grids whose ranges are searched against the input Hessian (an input-weighted
            MSE observer) instead of min-max.
        distributed: ``"auto"``: under an initialised process group of more than one rank, every rank holding the
            whole model and the same batches, split the calibration batches across the ranks
            (``batches[rank::world_size]``) and all-reduce each layer's statistics (Hessian, mean |x|) before it is
            quantized, so every rank computes the same grids and weights, equal to one process's on all the batches;
            ``False``: every rank calibrates on all of them (as one process does).

    Returns:
        ``(model, result)``: the model (its quantized layers hold the de-quantized weights) and a
        :class:`QuantizationResult` with the grids and the per-layer report.

    Raises:
        ValueError: Before any work: for a bad argument (every problem listed, each naming the argument, its value and
            what is allowed), a group size that does not divide a selected layer's width (the layers and the group
            sizes that fit are listed), a selected weight holding NaN or Inf (named), empty calibration data, or no
            layer to quantize.

    Warns:
        UserWarning: When a layer's Hessian needed more dampening (named), or a selected weight is tied to an
            embedding.

    Example:
        >>> lm, result = one_shot_quantize(lm, windows, method="awq", bits=4, group_size=64)  # doctest: +SKIP
        >>> print(result.summary())  # doctest: +SKIP
    """
    start = time.perf_counter()
    errors = ArgumentErrors()
    errors.require(isinstance(model, nn.Module), "model", "an nn.Module", type(model).__name__)
    check_quantize_arguments(
        errors, method, bits, group_size, symmetric, act_order, damping, blocksize, sparsity, n, m,
        calibration_batches, filter_fn, ignore, forward_fn, awq_points,
    )  # fmt: skip
    errors.require(blocks is None or isinstance(blocks, str), "blocks", "'auto', None or a module name", blocks)
    errors.bools(static_groups=static_groups, search_ranges=search_ranges)
    problem = check_distributed(distributed)
    if problem is not None:
        errors.add(problem)
    if method in ("gptq", "awq"):
        if calibration_data is None:
            errors.add(f"`calibration_data` must give calibration batches for method={method!r}, got None")
        elif hasattr(calibration_data, "__len__") and len(calibration_data) == 0:
            errors.add(f"`calibration_data` is empty: method={method!r} needs calibration batches")
    errors.raise_if_any()
    check_materialized(model)

    layers = select_layers(model, filter_fn)
    kept, skipped = apply_ignore(model, layers, ignore, "quantization")
    linear = {}
    for fqn, layer in kept.items():
        if type(layer) is not nn.Linear and not isinstance(layer, nn.Linear):
            skipped[fqn] = (
                f"{type(layer).__name__} is not an nn.Linear (weight-only quantization handles Linear layers)"
            )
        elif m is not None and (why := nm_ineligibility(layer.weight, m)) is not None:
            skipped[fqn] = why
        else:
            linear[fqn] = layer
    if not linear:
        listed = ", ".join(f"{name}: {why}" for name, why in skipped.items()) or "nothing selected"
        raise ValueError(f"one_shot_quantize({method!r}) found no Linear layer to quantize in"
                         f" {type(model).__name__}: {listed}")  # fmt: skip
    _check_group_size(linear, group_size)
    check_finite({f"{fqn}.weight": layer.weight for fqn, layer in linear.items()}, f"{method} quantization")

    grid = Grid(bits, group_size, symmetric)
    pattern = pattern_name(sparsity, n, m) if (sparsity is not None or n is not None) else ""
    result = QuantizationResult(layers={}, skipped=skipped, method=method, grid=grid, pattern=pattern)

    current_block: list[Optional[str]] = [None]

    def process(fqn: str, stats: Optional[InputStatistics]) -> None:
        block = _block_of(fqn, result.blocks)
        if block != current_block[0]:  # a new block: hand the previous block's freed temporaries back to the OS
            current_block[0] = block
            _release_free_memory()
        layer = linear[fqn]
        weight = layer.weight
        began = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            q = _quantize_layer(
                weight,
                stats,
                method,
                grid,
                act_order,
                damping,
                blocksize,
                sparsity,
                n,
                m,
                awq_points,
                static_groups,
                search_ranges,
            )
        for w in caught:
            warnings.warn(f"{fqn}: {w.message}", w.category, stacklevel=4)
        seconds = time.perf_counter() - began
        original = weight.detach().float()
        delta = original - q.weight.float()
        error = None
        if stats is not None:
            h = stats.hessian()
            base = float(output_error(original, h))
            error = float(output_error(delta, h)) / base if base > 0 else 0.0
        weight_error = float(delta.square().sum() / original.square().sum().clamp(min=1e-30))
        weight.copy_(q.weight)
        del original, delta
        q.weight = weight.detach()  # the layer's own tensor: no second copy of the model's weights is kept
        result.layers[fqn] = q
        result.report[fqn] = LayerReport(error, weight_error, seconds)

    if method == "rtn":
        for fqn in linear:
            process(fqn, None)
        result.seconds = time.perf_counter() - start
        return model, result

    assert calibration_data is not None
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    batches = [move_data_to_device(b, device) for b in _batches(calibration_data, calibration_batches)]
    if not batches:
        raise ValueError("`calibration_data` yielded no batch: one-shot quantization needs calibration data")
    result.calibration_batches = len(batches)
    block_name = find_repeated_blocks(model) if blocks == "auto" else blocks
    result.blocks = block_name
    calibration = LayerCalibration(linear, hessian=True, process=process, unseen=result.skipped.__setitem__,
                                   abs_mean=method == "awq", distributed=distributed)  # fmt: skip
    result.ranks = calibration.parallel.world_size if calibration.parallel is not None else 1
    was_training = model.training
    model.eval()
    try:
        calibrate_sequentially(model, batches, forward_fn or call_on_batch, list(linear), calibration, block_name)
    finally:
        model.train(was_training)
    result.seconds = time.perf_counter() - start
    return model, result


def _block_of(fqn: str, blocks: Optional[str]) -> Optional[str]:
    """The index of the repeated block that holds layer ``fqn`` (as a string), or None."""
    if blocks is None or not fqn.startswith(f"{blocks}." if blocks else ""):
        return None
    return fqn[len(blocks) + 1 if blocks else 0 :].split(".", 1)[0]


def _release_free_memory() -> None:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim``; a no-op elsewhere). Each block's rounding
    frees temporaries of many sizes between small tensors that stay (the grids), and glibc keeps such fragmented free
    memory mapped: without this the process's memory grew by several MB per transformer block."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Optional[Any]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; musl has no malloc_trim
    except (OSError, AttributeError):
        return None


def _quantize_layer(
    weight: Tensor,
    stats: Optional[InputStatistics],
    method: str,
    grid: Grid,
    act_order: bool,
    damping: float,
    blocksize: int,
    sparsity: Optional[float],
    n: Optional[int],
    m: Optional[int],
    awq_points: int,
    static_groups: bool,
    search_ranges: bool,
) -> QuantizedWeight:
    bits, group_size, symmetric = grid.bits, grid.group_size, grid.symmetric
    if method == "gptq":
        assert stats is not None
        return gptq_quantize(weight, stats.hessian(), bits, group_size, symmetric, act_order, damping, blocksize,
                             sparsity, n, m, static_groups, search_ranges)  # fmt: skip
    if method == "awq":
        assert stats is not None
        return awq_quantize(weight, stats.hessian(), stats.input_abs_mean(), bits, group_size, symmetric, awq_points)
    w = weight.detach().float()
    scale, zero = grid_parameters(w, bits, group_size, symmetric)
    return QuantizedWeight(dequantize(quantize(w, scale, zero, bits), scale, zero).to(weight.dtype), scale, zero, grid)


def _check_group_size(layers: dict[str, nn.Module], group_size: Optional[int]) -> None:
    bad: dict[int, list[str]] = {}
    for fqn, layer in layers.items():
        if group_size_problem(layer.in_features, group_size):
            bad.setdefault(layer.in_features, []).append(fqn)
    if not bad:
        return
    widths = sorted({layer.in_features for layer in layers.values()})
    common = [g for g in range(32, min(widths) + 1, 32) if all(w % g == 0 for w in widths)]
    parts = [
        f"{width} ({names[0]}{f' and {len(names) - 1} more' if len(names) > 1 else ''})" for width, names in bad.items()
    ]
    hint = (
        f"group sizes that divide every width: {', '.join(map(str, common))}" if common else "none is a multiple of 32"
    )
    raise ValueError(
        f"`group_size`={group_size} does not divide the input width of {sum(map(len, bad.values()))} selected"
        f" layer(s): {'; '.join(parts)}. Use a group size that does ({hint}), group_size=None (per channel), or leave"
        " those layers out with `ignore` / `filter_fn`"
    )


def check_quantize_arguments(
    errors: ArgumentErrors,
    method: Any,
    bits: Any,
    group_size: Any,
    symmetric: Any,
    act_order: Any,
    damping: Any,
    blocksize: Any,
    sparsity: Any,
    n: Any,
    m: Any,
    calibration_batches: Any,
    filter_fn: Any,
    ignore: Any,
    forward_fn: Any,
    awq_points: Any,
) -> None:
    """The checks :func:`one_shot_quantize` and the ``OneShotQuantization`` callback share (no model needed).

    Example:
        >>> errors = ArgumentErrors()
        >>> check_quantize_arguments(errors, "gptq", 9, 64, True, False, 0.01, 128, None, None, None, 16, None, "auto",
        ...                          None, 20)
        >>> list(errors)
        ['`bits` must be an int in 2..8, got 9']
    """
    errors.one_of("method", method, METHODS)
    check_grid(errors, bits, group_size, symmetric)
    errors.bool("act_order", act_order)
    errors.number("damping", damping, minimum=0)
    errors.int("blocksize", blocksize)
    if sparsity is not None or n is not None or m is not None:
        errors.extend(check_sparsity_pattern(sparsity, n, m))
        if method != "gptq":
            errors.add(f"pruning (`sparsity` / `n`, `m`) goes with method='gptq' (the joint mode), got {method!r}")
        if act_order is True and m is not None:
            errors.add("`act_order` cannot be True with n:m pruning: the N:M groups are runs of consecutive inputs")
    errors.int("calibration_batches", calibration_batches)
    errors.callable("filter_fn", filter_fn, "(module, fqn) -> bool")
    errors.callable("forward_fn", forward_fn, "(model, batch)")
    check_ignore(errors, ignore)
    errors.int("awq_points", awq_points)
