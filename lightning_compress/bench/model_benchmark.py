"""What each compression technique really gains on this machine: latency, throughput and peak memory, ``lc-bench``.

Every inference path of a model is timed the same way (median wall time of ``repeats`` calls after ``warmup`` calls,
synchronising CUDA around each call, round-robin with the fp32 eager baseline, checked for a busy machine and a wide
spread: :mod:`~lightning_compress.bench.timing`) and set beside its *theoretical* speed-up over dense fp32 eager: the
ratio of work an ideal kernel would do, never a hardware claim:

================================  ============================================================================
path                              theoretical speed-up over fp32 eager
================================  ============================================================================
fp32 compiled                     1 (same work; compilation only removes overhead)
bf16 autocast                     2 (half the bytes per value)
dense kernel on s-sparse weights  1 / (1 - s) (the FLOPs that a zero-skipping kernel would do)
CSR / COO / BSR at sparsity s     1 / (1 - s)
2:4 semi-structured (bf16)        4 (2 for bf16 x 2 for half the multiplies)
INT8                              4 (a quarter of the bytes)
2:4 + INT8                        8
a smaller (distilled / pruned)    FLOPs of the model / FLOPs of the smaller one (``torch.utils.flop_counter``)
================================  ============================================================================

Paths a machine cannot run (2:4 without an Ampere+ GPU, the x86 INT8 lowering on a GPU, a model ``torch.export``
cannot capture) come back as :class:`BenchResult` rows with ``available=False`` and the reason; nothing raises.

Peak memory is the peak of one call above the memory in use before it: ``torch.cuda.max_memory_allocated`` on CUDA;
on CPU the peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``), which also counts allocator
caching and is ``None`` where ``/proc`` is missing.

A timing can depend on the input *values*, not only their shape: PyTorch's eager CPU max-pool (channels-first) is a
scalar loop whose ``val > max`` branch a random input makes unpredictable, so an fp32 eager CNN runs slower on
``torch.randn`` inputs than on real images, while the INT8 path's pooling (Inductor's vectorised uint8 max) does not
care. Time on a batch of real data when a ratio matters (``lc-compress`` times a validation batch;
``experiments/planner/by_hand.py`` runs these paths on both).

The INT8 path is :func:`int8_model`, the same builder as the planner's PTQ INT8 candidates.

Example:
    >>> net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    >>> rows = benchmark_model(net, torch.randn(4, 64), paths=("fp32 eager", "csr", "2:4"), sparsities=(0.9,),
    ...                        warmup=1, repeats=2, checks=None)
    >>> [(r.path, r.available) for r in rows]
    [('fp32 eager', True), ('CSR 90%', True), ('2:4 semi-structured (bf16)', False)]
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor, nn

from lightning_compress.bench.results import SPARSITIES, BenchResult, Unavailable
from lightning_compress.bench.timing import PathTimer, TimingChecks
from lightning_compress.core.batches import ExampleInputs, batch_size_of, call_model, move_data_to_device
from lightning_compress.core.selection import prunable_weights
from lightning_compress.pruning.magnitude import magnitude_mask
from lightning_compress.sparsity.nm_masks import nm_mask
from lightning_compress.sparsity.sparse_layers import SPARSE_FORMATS, to_sparse_layers

__all__ = ["ALL_PATHS", "DEFAULT_PATHS", "benchmark_model", "gemm_flops", "int8_model", "prune_unstructured"]

# Path families a user can select with --paths; the sparse formats select themselves by name.
ALL_PATHS = ("fp32 eager", "fp32 compiled", "bf16 autocast", "dense zeros", *SPARSE_FORMATS, "2:4", "int8",
             "int8 torchao", "2:4+int8", "smaller")  # fmt: skip
DEFAULT_PATHS = tuple(p for p in ALL_PATHS if p != "bsr")


@torch.no_grad()
def prune_unstructured(model: nn.Module, sparsity: float) -> nn.Module:
    """A copy of ``model`` with every Linear/Conv weight magnitude-pruned to ``sparsity`` (layer by layer).

    Example:
        >>> net = prune_unstructured(torch.nn.Linear(10, 10), 0.9)
        >>> int((net.weight == 0).sum())
        90
    """
    model = copy.deepcopy(model)
    for weight in prunable_weights(model).values():
        weight.mul_(magnitude_mask(weight, sparsity))
    return model


def gemm_flops(model: nn.Module, inputs: ExampleInputs, ops: Optional[Sequence[str]] = None) -> int:
    """FLOPs of one forward call counted by ``torch.utils.flop_counter`` (matmuls and convolutions).

    Args:
        model: The model, called once without gradients.
        inputs: Its inputs (a tensor, a tuple or a dict of keyword inputs).
        ops: Count only these aten ops (overload packet names, e.g. ``("convolution", "mm", "addmm")``); all the
            counter knows when None (on CUDA that includes attention kernels).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        call_model(model, inputs)
    if ops is None:
        return int(counter.get_total_flops())
    flops = counter.get_flop_counts()["Global"]
    return sum(int(v) for op, v in flops.items() if str(op).split(".")[-1] in ops)


def int8_model(
    model: nn.Module, calibration_data: Any, device: Union[str, torch.device] = "cpu", **options: Any
) -> nn.Module:
    """The INT8 model that every INT8 timing of the library measures: ``lc-bench``'s ``"int8"`` path and the
    planner's PTQ INT8 candidates (``lc-compress``) are both built here, so that their numbers compare.

    It is post-training static quantization, :func:`~lightning_compress.quantization.ptq.quantize`: ``torch.export``
    in evaluation mode (batch dimension dynamic), the x86 Inductor quantizer's observers on the calibration batches,
    ``convert_pt2e``, max-pools on the int8 values, and ``torch.compile`` with inductor freezing at each batch shape
    (:class:`~lightning_compress.quantization.pt2e.FrozenInt8`: oneDNN ``qconv_pointwise`` / ``qlinear_pointwise``
    kernels).

    Args:
        model: The float model (not modified).
        calibration_data: Batches to calibrate on (any form :func:`~lightning_compress.quantization.ptq.quantize`
            takes; ``[(inputs,)]`` for one batch of bare model inputs).
        device: Where the model runs: only ``"cpu"`` has the lowering.
        options: More arguments of :func:`~lightning_compress.quantization.ptq.quantize` (``calibration_batches``,
            ``accuracy_budget``, ...).

    Returns:
        The INT8 model (``FrozenInt8``, with ``.quantization_report``).

    Raises:
        Unavailable: On a device other than the CPU.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        ...                           torch.nn.Linear(4 * 6 * 6, 2))
        >>> type(int8_model(net, [(torch.randn(4, 1, 8, 8),)], calibration_batches=1)).__name__
        'FrozenInt8'
    """
    device = torch.device(device)
    if device.type != "cpu":
        raise Unavailable(
            "the PT2E INT8 path (X86InductorQuantizer) lowers to oneDNN INT8 kernels on x86 CPUs only;"
            f" no lowering for {device.type}"
        )
    from lightning_compress.quantization.ptq import quantize

    return quantize(model, calibration_data, **options)


def _int8_pt2e(model: nn.Module, inputs: ExampleInputs, device: torch.device) -> Callable[[], Any]:
    int8 = int8_model(model, [(inputs,)], device, calibration_batches=1)  # the timed batch calibrates
    return lambda: call_model(int8, inputs)


def _int8_torchao(model: nn.Module, inputs: ExampleInputs) -> Callable[[], Any]:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise Unavailable(
            "torchao's Int8DynamicActivationInt8WeightConfig quantizes nn.Linear only; the model has none"
        )
    quantized = copy.deepcopy(model)
    quantize_(quantized, Int8DynamicActivationInt8WeightConfig())
    return lambda: call_model(quantized, inputs)


def _semi_structured(model: nn.Module, inputs: ExampleInputs, device: torch.device) -> tuple[Callable[[], Any], str]:
    if device.type != "cuda":
        raise Unavailable(
            "2:4 kernels (torch.sparse.to_sparse_semi_structured: cuSPARSELt / CUTLASS) need an NVIDIA GPU of compute"
            f" capability 8.0 (Ampere) or newer; this run is on {device.type}"
        )
    from lightning_compress.sparsity.semi_structured import to_semi_structured_

    sparse = copy.deepcopy(model)
    with torch.no_grad():
        for mod in sparse.modules():
            if isinstance(mod, nn.Linear) and mod.in_features % 4 == 0:
                mod.weight.mul_(nm_mask(mod.weight, 2, 4))
    sparse = sparse.to(torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        swap = to_semi_structured_(sparse, torch.bfloat16)
    if not swap.swapped:
        raise Unavailable("no Linear layer could be made semi-structured: " + "; ".join(swap.skipped.values())[:300])
    cast = apply_to_collection(inputs, Tensor, lambda t: t.to(torch.bfloat16) if t.is_floating_point() else t)
    note = f"{len(swap.swapped)} Linear layers 2:4, {len(swap.skipped)} left dense; convolutions stay dense"
    return (lambda: call_model(sparse, cast)), note


def benchmark_model(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    paths: Sequence[str] = DEFAULT_PATHS,
    sparsities: Sequence[float] = SPARSITIES,
    smaller_model: Optional[nn.Module] = None,
    device: Union[str, torch.device] = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    min_warmup_s: float = 0.25,
    log: Optional[Callable[[str], None]] = None,
    checks: Optional[TimingChecks] = TimingChecks(),  # noqa: B008 -- frozen, shared safely
) -> list[BenchResult]:
    """Measure ``model`` on every selected inference path; unavailable paths come back with their reason.

    Each path is timed round-robin with the fp32 eager baseline, and every timing is checked for a busy machine and a
    wide spread (re-measured, then marked ``untrusted`` with the figures; see
    :class:`~lightning_compress.bench.timing.TimingChecks`).

    Args:
        model: The float model (random or trained weights; the sparse paths prune copies of it).
        example_inputs: One batch: a tensor ``(B, ...)``, a tuple of positional inputs or a dict of keyword inputs.
        paths: Families from :data:`ALL_PATHS` (``"fp32 eager"`` is always measured: it is the baseline).
        sparsities: Levels for ``"dense zeros"`` and the sparse formats.
        smaller_model: A distilled or structurally pruned model taking the same inputs (the ``"smaller"`` path).
        device: ``"cpu"`` or ``"cuda"``.
        warmup: Untimed calls per path.
        repeats: Timed calls per path.
        min_warmup_s: Least warm-up time per path (see :func:`measure`).
        log: Called with one line per path as it finishes (e.g. ``print``).
        checks: The trust checks of every timing; None: none.

    Returns:
        The rows, baseline first.

    Raises:
        ValueError: For an unknown path or a sparsity outside [0, 1).

    Example:
        >>> net, x = torch.nn.Linear(8, 8), torch.randn(2, 8)
        >>> rows = benchmark_model(net, x, paths=("fp32 eager",), repeats=1, checks=None)
        >>> rows[0].speedup
        1.0
    """
    unknown = [p for p in paths if p not in ALL_PATHS]
    if unknown:
        raise ValueError(f"`paths` can hold {', '.join(ALL_PATHS)}; got {unknown}")
    if any(not 0.0 <= s < 1.0 for s in sparsities):
        raise ValueError(f"`sparsities` must lie in [0, 1), got {list(sparsities)}")
    device = torch.device(device)
    model = model.to(device).eval()
    inputs = move_data_to_device(example_inputs, device)
    batch = batch_size_of(inputs)
    timer = PathTimer(batch, device, warmup, repeats, min_warmup_s, log, checks)
    run, rows = timer.run, timer.rows

    eager = lambda: lambda: call_model(model, inputs)  # noqa: E731
    run(BenchResult("fp32 eager", "dense", theoretical_speedup=1.0, fmt="fp32"), eager)
    if not rows[0].available:
        return rows
    if "fp32 compiled" in paths:
        compiled = torch.compile(model)
        run(
            BenchResult("fp32 compiled", "dense", theoretical_speedup=1.0, fmt="fp32"),
            lambda: lambda: call_model(compiled, inputs),
        )
    if "bf16 autocast" in paths:

        def bf16() -> Callable[[], Any]:
            if device.type == "cuda" and not torch.cuda.is_bf16_supported():
                raise Unavailable("this GPU has no bf16 support")

            def fn() -> Any:
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return call_model(model, inputs)

            return fn

        run(BenchResult("bf16 autocast", "dtype", theoretical_speedup=2.0, fmt="bf16"), bf16)
    formats = [f for f in SPARSE_FORMATS if f in paths]
    if "dense zeros" in paths or formats:
        for sparsity in sparsities:
            pruned = prune_unstructured(model, sparsity)
            theory = 1.0 / (1.0 - sparsity)
            if "dense zeros" in paths:
                run(
                    BenchResult(
                        f"dense kernel, {sparsity:.0%} zeros",
                        "unstructured",
                        theoretical_speedup=theory,
                        sparsity=sparsity,
                        fmt="dense",
                    ),
                    lambda: lambda: call_model(pruned, inputs),
                )
            for fmt in formats:

                def sparse_fn(fmt: str = fmt) -> tuple[Callable[[], Any], str]:
                    layered, dense = to_sparse_layers(pruned, fmt)
                    note = f"left dense: {', '.join(dense)[:120]}" if dense else ""
                    return (lambda: call_model(layered, inputs)), note

                run(BenchResult(f"{fmt.upper()} {sparsity:.0%}", "unstructured", theoretical_speedup=theory,
                                sparsity=sparsity, fmt=fmt), sparse_fn)  # fmt: skip
    if "2:4" in paths:
        run(BenchResult("2:4 semi-structured (bf16)", "2:4", theoretical_speedup=4.0, sparsity=0.5, fmt="2:4 bf16"),
            lambda: _semi_structured(model, inputs, device))  # fmt: skip
    if "int8" in paths:
        run(BenchResult("INT8 (PT2E static, X86 Inductor)", "int8", theoretical_speedup=4.0, fmt="int8"),
            lambda: _int8_pt2e(model, inputs, device))  # fmt: skip
    if "int8 torchao" in paths:
        run(BenchResult("INT8 dynamic (torchao, Linear only)", "int8", theoretical_speedup=4.0, fmt="int8"),
            lambda: _int8_torchao(model, inputs))  # fmt: skip
    if "2:4+int8" in paths:

        def sparse_int8() -> Callable[[], Any]:
            if device.type != "cuda":
                raise Unavailable("2:4 INT8 kernels (cuSPARSELt) need an NVIDIA GPU of compute capability 8.0 or newer;"
                                  f" this run is on {device.type}")  # fmt: skip
            raise Unavailable(
                "no model-level 2:4 INT8 path in this torch/torchao (torchao 0.18 has 2:4 float8 only): see the"
                " GEMM-level 2:4 INT8 row of experiments/theory_vs_reality"
            )

        run(BenchResult("2:4 + INT8", "2:4+int8", theoretical_speedup=8.0, sparsity=0.5, fmt="2:4 int8"), sparse_int8)
    if "smaller" in paths and smaller_model is not None:
        small = smaller_model.to(device).eval()
        theory = None
        with contextlib.suppress(Exception):
            theory = gemm_flops(model, inputs) / max(1, gemm_flops(small, inputs))
        run(BenchResult("smaller model (distilled / structurally pruned)", "smaller", theoretical_speedup=theory,
                        fmt="fp32"), lambda: lambda: call_model(small, inputs))  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------------------- GEMM
