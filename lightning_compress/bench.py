"""What each compression technique really gains on this machine: latency, throughput and peak memory, ``lc-bench``.

Every inference path of a model is timed the same way (median wall time of ``repeats`` calls after ``warmup`` calls,
synchronising CUDA around each call) and set beside its *theoretical* speed-up over dense fp32 eager: the ratio of
work an ideal kernel would do, never a hardware claim:

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

Example:
    >>> net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    >>> rows = benchmark_model(net, torch.randn(4, 64), paths=("fp32 eager", "csr", "2:4"), sparsities=(0.9,),
    ...                        warmup=1, repeats=2)
    >>> [(r.path, r.available) for r in rows]
    [('fp32 eager', True), ('CSR 90%', True), ('2:4 semi-structured (bf16)', False)]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import datetime
import importlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from lightning_compress.magnitude import magnitude_mask
from lightning_compress.nm_mask import nm_mask
from lightning_compress.prunable_weights import prunable_weights
from lightning_compress.sparse_layers import SPARSE_FORMATS, to_sparse_layers

__all__ = [
    "ALL_PATHS",
    "BenchResult",
    "LOW_PRECISION_FLAGS",
    "Unavailable",
    "benchmark_gemm",
    "benchmark_model",
    "cpu_model",
    "format_table",
    "gemm_flops",
    "load_model",
    "machine_info",
    "main",
    "measure",
    "prune_unstructured",
    "write_results",
]

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.99)
# Path families a user can select with --paths; the sparse formats select themselves by name.
ALL_PATHS = ("fp32 eager", "fp32 compiled", "bf16 autocast", "dense zeros", *SPARSE_FORMATS, "2:4", "int8",
             "int8 torchao", "2:4+int8", "smaller")  # fmt: skip
DEFAULT_PATHS = tuple(p for p in ALL_PATHS if p != "bsr")
ExampleInputs = Union[Tensor, tuple, Mapping[str, Any]]


class Unavailable(Exception):
    """A path this machine or model cannot run; the message says why."""


@dataclass
class BenchResult:
    """One measured (or unavailable) inference path.

    Attributes:
        path: Display name, e.g. ``"CSR 90%"``.
        family: ``"dense"``, ``"dtype"``, ``"unstructured"``, ``"2:4"``, ``"int8"``, ``"2:4+int8"`` or ``"smaller"``.
        available: False when the path could not run; ``reason`` says why.
        reason: Why it is unavailable, or a note (layers left dense, ...).
        latency_ms: Median latency of one call, ms.
        throughput: Items (dimension 0 of the input) per second.
        peak_memory_mb: Peak memory of one call above what was in use before it, MiB.
        theoretical_speedup: Ideal speed-up over fp32 eager (see the module docstring).
        speedup: Measured speed-up over fp32 eager (its median latency / this one's).
        sparsity: Fraction of zeros in the pruned weights, for sparse paths.
        fmt: The storage format (``"csr"``, ``"dense"``, ``"bf16"``, ...).
    """

    path: str
    family: str
    available: bool = True
    reason: str = ""
    latency_ms: Optional[float] = None
    throughput: Optional[float] = None
    peak_memory_mb: Optional[float] = None
    theoretical_speedup: Optional[float] = None
    speedup: Optional[float] = None
    sparsity: Optional[float] = None
    fmt: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure_peak_memory(fn: Callable[[], Any], device: Union[str, torch.device] = "cpu") -> Optional[float]:
    """Peak memory of one call of ``fn`` above the memory in use before it, in bytes (``None`` if unmeasurable).

    Example:
        >>> measure_peak_memory(lambda: torch.ones(1_000_000)) is None or True
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return float(max(0, torch.cuda.max_memory_allocated(device) - before))
    _trim_heap()  # hand freed heap pages back to the OS, so that a call's allocations raise the resident set again
    before = _proc_status("VmRSS")
    if before is None or not _reset_peak_rss():
        return None
    fn()
    peak = _proc_status("VmHWM")
    return None if peak is None else float(max(0, peak - before))


def measure(
    fn: Callable[[], Any],
    batch_size: int = 1,
    device: Union[str, torch.device] = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    min_warmup_s: float = 0.25,
) -> tuple[float, float, Optional[float]]:
    """Median latency, throughput and peak memory of ``fn``.

    Args:
        fn: One inference call (no arguments).
        batch_size: Items per call, for the throughput.
        device: Where ``fn`` runs (CUDA is synchronised around each call).
        warmup: Untimed calls first (compilation, allocator and cache warm-up); more, up to 50, until
            ``min_warmup_s`` have passed (the first calls of a process pay one-time library set-up).
        repeats: Timed calls; the median is reported.
        min_warmup_s: Least warm-up time.

    Returns:
        ``(median seconds, items per second, peak bytes or None)``.

    Raises:
        ValueError: If ``repeats < 1`` or ``warmup < 0``.

    Example:
        >>> seconds, per_s, peak = measure(lambda: torch.ones(8) * 2, batch_size=8, warmup=1, repeats=3)
        >>> seconds > 0 and per_s > 0
        True
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"`repeats` must be >= 1 and `warmup` >= 0, got {repeats} and {warmup}")
    device = torch.device(device)
    start = time.perf_counter()
    calls = 0
    while calls < warmup or (calls < 50 and time.perf_counter() - start < min_warmup_s):
        fn()
        calls += 1
    _sync(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    peak = measure_peak_memory(fn, device)
    return median, batch_size / median, peak


# ------------------------------------------------------------------------------------------------------ models
def _call(model: nn.Module, inputs: ExampleInputs) -> Any:
    if isinstance(inputs, Tensor):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(*inputs)


def _batch_size(inputs: ExampleInputs) -> int:
    tensors = [inputs] if isinstance(inputs, Tensor) else list(inputs.values() if isinstance(inputs, Mapping) else inputs)
    first = next((t for t in tensors if isinstance(t, Tensor) and t.dim() > 0), None)
    return int(first.shape[0]) if first is not None else 1


def _map_inputs(inputs: ExampleInputs, fn: Callable[[Tensor], Tensor]) -> ExampleInputs:
    if isinstance(inputs, Tensor):
        return fn(inputs)
    if isinstance(inputs, Mapping):
        return {k: fn(v) if isinstance(v, Tensor) else v for k, v in inputs.items()}
    return tuple(fn(v) if isinstance(v, Tensor) else v for v in inputs)


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
        _call(model, inputs)
    if ops is None:
        return int(counter.get_total_flops())
    flops = counter.get_flop_counts()["Global"]
    return sum(int(v) for op, v in flops.items() if str(op).split(".")[-1] in ops)


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = next((line for line in text if line.strip()), "")
    return f"{type(err).__name__}: {first[:300]}" if not isinstance(err, Unavailable) else first[:400]


def _int8_pt2e(model: nn.Module, inputs: ExampleInputs, device: torch.device) -> Callable[[], Any]:
    if device.type != "cpu":
        raise Unavailable(
            "the QAT export path (PT2E, X86InductorQuantizer) lowers to oneDNN INT8 kernels on x86 CPUs only;"
            f" no lowering for {device.type}"
        )
    from lightning_compress.quantization_aware_training import convert_to_int8, prepare_qat

    prepared = prepare_qat(copy.deepcopy(model), inputs)
    prepared.train()  # observers record ranges in training mode only: one calibration batch
    with torch.no_grad():
        _call(prepared, inputs)
    prepared.eval()
    int8 = convert_to_int8(prepared, compile=True)
    return lambda: _call(int8, inputs)


def _int8_torchao(model: nn.Module, inputs: ExampleInputs) -> Callable[[], Any]:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise Unavailable("torchao's Int8DynamicActivationInt8WeightConfig quantizes nn.Linear only; the model has none")
    quantized = copy.deepcopy(model)
    quantize_(quantized, Int8DynamicActivationInt8WeightConfig())
    return lambda: _call(quantized, inputs)


def _semi_structured(model: nn.Module, inputs: ExampleInputs, device: torch.device) -> tuple[Callable[[], Any], str]:
    if device.type != "cuda":
        raise Unavailable(
            "2:4 kernels (torch.sparse.to_sparse_semi_structured: cuSPARSELt / CUTLASS) need an NVIDIA GPU of compute"
            f" capability 8.0 (Ampere) or newer; this run is on {device.type}"
        )
    from lightning_compress.semi_structured import to_semi_structured

    sparse = copy.deepcopy(model)
    with torch.no_grad():
        for mod in sparse.modules():
            if isinstance(mod, nn.Linear) and mod.in_features % 4 == 0:
                mod.weight.mul_(nm_mask(mod.weight, 2, 4))
    sparse = sparse.to(torch.bfloat16)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        swap = to_semi_structured(sparse, torch.bfloat16)
    if not swap.swapped:
        raise Unavailable("no Linear layer could be made semi-structured: " + "; ".join(swap.skipped.values())[:300])
    cast = _map_inputs(inputs, lambda t: t.to(torch.bfloat16) if t.is_floating_point() else t)
    note = f"{len(swap.swapped)} Linear layers 2:4, {len(swap.skipped)} left dense; convolutions stay dense"
    return (lambda: _call(sparse, cast)), note


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
) -> list[BenchResult]:
    """Measure ``model`` on every selected inference path; unavailable paths come back with their reason.

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

    Returns:
        The rows, baseline first.

    Raises:
        ValueError: For an unknown path or a sparsity outside [0, 1).

    Example:
        >>> rows = benchmark_model(torch.nn.Linear(8, 8), torch.randn(2, 8), paths=("fp32 eager",), repeats=1)
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
    inputs = _map_inputs(example_inputs, lambda t: t.to(device))
    batch = _batch_size(inputs)
    rows: list[BenchResult] = []
    base: dict[str, float] = {}

    def run(row: BenchResult, build: Callable[[], Any]) -> None:
        try:
            built = build()
            fn, note = built if isinstance(built, tuple) else (built, "")
            with torch.no_grad():
                seconds, per_s, peak = measure(fn, batch, device, warmup, repeats, min_warmup_s)
            row.latency_ms, row.throughput = seconds * 1e3, per_s
            row.peak_memory_mb = None if peak is None else peak / 2**20
            row.reason = note
            if base:
                row.speedup = base["latency"] / row.latency_ms
            else:
                base["latency"], row.speedup = row.latency_ms, 1.0
        except Exception as err:  # noqa: BLE001 -- every failure is a row, never a crash
            row.available, row.reason = False, _reason(err)
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        if log is not None:
            log(_row_line(row))

    eager = lambda: (lambda: _call(model, inputs))  # noqa: E731
    run(BenchResult("fp32 eager", "dense", theoretical_speedup=1.0, fmt="fp32"), eager)
    if not rows[0].available:
        return rows
    if "fp32 compiled" in paths:
        compiled = torch.compile(model)
        run(BenchResult("fp32 compiled", "dense", theoretical_speedup=1.0, fmt="fp32"), lambda: lambda: _call(compiled, inputs))
    if "bf16 autocast" in paths:

        def bf16() -> Callable[[], Any]:
            if device.type == "cuda" and not torch.cuda.is_bf16_supported():
                raise Unavailable("this GPU has no bf16 support")

            def fn() -> Any:
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return _call(model, inputs)

            return fn

        run(BenchResult("bf16 autocast", "dtype", theoretical_speedup=2.0, fmt="bf16"), bf16)
    formats = [f for f in SPARSE_FORMATS if f in paths]
    if "dense zeros" in paths or formats:
        for sparsity in sparsities:
            pruned = prune_unstructured(model, sparsity)
            theory = 1.0 / (1.0 - sparsity)
            if "dense zeros" in paths:
                run(BenchResult(f"dense kernel, {sparsity:.0%} zeros", "unstructured", theoretical_speedup=theory,
                                sparsity=sparsity, fmt="dense"), lambda: lambda: _call(pruned, inputs))  # fmt: skip
            for fmt in formats:

                def sparse_fn(fmt: str = fmt) -> tuple[Callable[[], Any], str]:
                    layered, dense = to_sparse_layers(pruned, fmt)
                    note = f"left dense: {', '.join(dense)[:120]}" if dense else ""
                    return (lambda: _call(layered, inputs)), note

                run(BenchResult(f"{fmt.upper()} {sparsity:.0%}", "unstructured", theoretical_speedup=theory,
                                sparsity=sparsity, fmt=fmt), sparse_fn)  # fmt: skip
    if "2:4" in paths:
        run(BenchResult("2:4 semi-structured (bf16)", "2:4", theoretical_speedup=4.0, sparsity=0.5, fmt="2:4 bf16"),
            lambda: _semi_structured(model, inputs, device))  # fmt: skip
    if "int8" in paths:
        run(BenchResult("INT8 (QAT export path, PT2E)", "int8", theoretical_speedup=4.0, fmt="int8"),
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
                        fmt="fp32"), lambda: lambda: _call(small, inputs))  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------------------- GEMM
def benchmark_gemm(
    m: int = 4096,
    k: int = 4096,
    n: int = 4096,
    *,
    sparsities: Sequence[float] = SPARSITIES,
    formats: Sequence[str] = ("csr", "coo"),
    device: Union[str, torch.device] = "cpu",
    dtype: Optional[torch.dtype] = None,
    warmup: int = 1,
    repeats: int = 3,
    min_warmup_s: float = 0.25,
    log: Optional[Callable[[str], None]] = None,
) -> list[BenchResult]:
    """``W @ X`` with ``W`` ``(m, k)`` pruned to each sparsity and ``X`` ``(k, n)`` dense: theory against reality.

    Rows: the dense GEMM (baseline), the same dense kernel on the pruned ``W`` (what a GPU does with zeros), each
    ``torch.sparse`` format, and on CUDA the 2:4 semi-structured GEMM (``dtype``) and the INT8 GEMMs (dense
    ``torch._int_mm`` and 2:4 INT8 via cuSPARSELt), each as available.

    Args:
        m, k, n: GEMM sizes.
        sparsities: Unstructured sparsity levels of ``W``.
        formats: ``torch.sparse`` layouts to try.
        device: ``"cpu"`` or ``"cuda"``.
        dtype: Value dtype; default fp32 on CPU, fp16 on CUDA (the dtype of the design document's GPU table).
        warmup: Untimed calls per row.
        repeats: Timed calls per row.
        min_warmup_s: Least warm-up time per row (see :func:`measure`).
        log: Called with one line per row.

    Returns:
        The rows; ``throughput`` is effective FLOP/s of the dense problem (``2 m k n / latency``).

    Example:
        >>> rows = benchmark_gemm(64, 64, 64, sparsities=(0.9,), formats=("csr",), repeats=1)
        >>> [r.path for r in rows]
        ['dense GEMM', 'dense kernel, 90% zeros', 'CSR 90%', '2:4 semi-structured GEMM', 'INT8 GEMM', '2:4 + INT8 GEMM']
    """
    device = torch.device(device)
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(m, k, generator=gen).to(device, dtype)
    x = torch.randn(k, n, generator=gen).to(device, dtype)
    flop = 2.0 * m * k * n
    rows: list[BenchResult] = []
    base: dict[str, float] = {}

    def run(row: BenchResult, build: Callable[[], Callable[[], Any]]) -> None:
        try:
            fn = build()
            with torch.no_grad():
                seconds, _, peak = measure(fn, 1, device, warmup, repeats, min_warmup_s)
            row.latency_ms, row.throughput = seconds * 1e3, flop / seconds
            row.peak_memory_mb = None if peak is None else peak / 2**20
            if base:
                row.speedup = base["latency"] / row.latency_ms
            else:
                base["latency"], row.speedup = row.latency_ms, 1.0
        except Exception as err:  # noqa: BLE001
            row.available, row.reason = False, _reason(err)
        rows.append(row)
        if log is not None:
            log(_row_line(row))

    name = str(dtype).removeprefix("torch.")
    run(BenchResult("dense GEMM", "dense", theoretical_speedup=1.0, fmt=name), lambda: lambda: w @ x)
    for sparsity in sparsities:
        pruned = w * magnitude_mask(w, sparsity)
        theory = 1.0 / (1.0 - sparsity)
        run(BenchResult(f"dense kernel, {sparsity:.0%} zeros", "unstructured", theoretical_speedup=theory,
                        sparsity=sparsity, fmt=name), lambda: lambda: pruned @ x)  # fmt: skip
        for fmt in formats:

            def sparse_fn(fmt: str = fmt) -> Callable[[], Any]:
                from lightning_compress.sparse_layers import to_sparse_weight

                ws = to_sparse_weight(pruned, fmt)
                return lambda: torch.sparse.mm(ws, x)

            run(BenchResult(f"{fmt.upper()} {sparsity:.0%}", "unstructured", theoretical_speedup=theory,
                            sparsity=sparsity, fmt=fmt), sparse_fn)  # fmt: skip
        del pruned

    def need_cuda(what: str) -> None:
        if device.type != "cuda":
            raise Unavailable(f"{what} needs an NVIDIA GPU of compute capability 8.0 (Ampere) or newer; this run is on"
                              f" {device.type}")  # fmt: skip

    def semi() -> Callable[[], Any]:
        need_cuda("torch.sparse.to_sparse_semi_structured (2:4)")
        ws = torch.sparse.to_sparse_semi_structured(w * nm_mask(w, 2, 4))
        xc = x.t().contiguous().t()  # column-major: the layout F.linear hands the kernels (x.T of row-major x)
        return lambda: torch.mm(ws, xc)

    run(BenchResult("2:4 semi-structured GEMM", "2:4", theoretical_speedup=2.0, sparsity=0.5, fmt=f"2:4 {name}"), semi)
    wq = (w.float().clamp(-3, 3) * 40).round().to(torch.int8) if device.type == "cuda" else None
    xq = (x.float().clamp(-3, 3) * 40).round().to(torch.int8).t().contiguous().t() if device.type == "cuda" else None

    def semi_int8() -> Callable[[], Any]:
        need_cuda("2:4 INT8 (cuSPARSELt)")
        ws = torch.sparse.to_sparse_semi_structured(wq * nm_mask(wq.float(), 2, 4))
        return lambda: torch.mm(ws, xq)

    def int8() -> Callable[[], Any]:
        if device.type == "cuda":
            return lambda: torch._int_mm(wq, xq)
        a = torch.randint(-128, 127, (m, k), dtype=torch.int8)
        b = torch.randint(-128, 127, (k, n), dtype=torch.int8)
        return lambda: torch._int_mm(a, b)

    run(BenchResult("INT8 GEMM", "int8", theoretical_speedup=4.0 if dtype == torch.float32 else 2.0, fmt="int8"), int8)
    sparse_int8_theory = 8.0 if dtype == torch.float32 else 4.0
    run(BenchResult("2:4 + INT8 GEMM", "2:4+int8", theoretical_speedup=sparse_int8_theory, sparsity=0.5,
                    fmt="2:4 int8"), semi_int8)  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------------------ output
def _fmt_num(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _row_line(row: BenchResult) -> str:
    if not row.available:
        return f"{row.path}: unavailable ({row.reason})"
    return (f"{row.path}: {row.latency_ms:.3f} ms, {row.speedup:.2f}x measured vs"
            f" {_fmt_num(row.theoretical_speedup, '.2f')}x theory")  # fmt: skip


def format_table(rows: Sequence[BenchResult]) -> str:
    """An aligned text table: path, latency, throughput, peak memory, theoretical and measured speed-up; then the
    unavailable paths with their reasons.

    Example:
        >>> print(format_table([BenchResult("fp32 eager", "dense", latency_ms=2.0, throughput=500.0, speedup=1.0,
        ...                                 theoretical_speedup=1.0)]))  # doctest: +NORMALIZE_WHITESPACE
        path        latency ms  items/s  peak MiB  theory x  measured x  note
        fp32 eager       2.000    500.0         -      1.00        1.00
    """
    header = ("path", "latency ms", "items/s", "peak MiB", "theory x", "measured x", "note")
    lines = [
        (r.path, f"{r.latency_ms:.3f}", _fmt_num(r.throughput, ".1f"), _fmt_num(r.peak_memory_mb, ".1f"),
         _fmt_num(r.theoretical_speedup, ".2f"), _fmt_num(r.speedup, ".2f"), r.reason[:70])
        for r in rows if r.available
    ]  # fmt: skip
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]
    out = []
    for line in [header, *lines]:
        cells = [c.ljust(w) if i in (0, 6) else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells).rstrip())
    missing = [r for r in rows if not r.available]
    if missing:
        out.append("")
        out.append("unavailable here:")
        out += [f"  {r.path}: {r.reason}" for r in missing]
    return "\n".join(out)


#: x86 instruction sets that decide what INT8 and bf16 can gain on a CPU (``/proc/cpuinfo`` flag names): AMX tiles
#: (INT8 / bf16 matrix units), VNNI (4 int8 products per 32-bit lane), AVX-512 BF16 (2 bf16 products per lane).
LOW_PRECISION_FLAGS = ("amx_int8", "amx_bf16", "avx512_vnni", "avx_vnni", "avx512_bf16")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """The CPU's model name and which of :data:`LOW_PRECISION_FLAGS` it has.

    Args:
        cpuinfo: Linux's CPU description; elsewhere (no such file) the name is what ``platform`` knows and the flags
            list is empty.

    Returns:
        ``(name, flags)``, e.g. ``("AMD EPYC", ["avx512_vnni", "avx512_bf16"])``: the ratios INT8 : bf16 : fp32 reach
        on a CPU with AMX are not those of one without, so every benchmark result records them.

    Example:
        >>> name, flags = cpu_model()
        >>> isinstance(name, str) and set(flags) <= set(LOW_PRECISION_FLAGS)
        True
    """
    name, flags = "", set()
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return name or platform.processor() or platform.machine(), [f for f in LOW_PRECISION_FLAGS if f in flags]


def machine_info(device: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Device, CPU (model name and INT8 / bf16 instruction sets), thread count and library versions, recorded beside
    every result."""
    device = torch.device(device)
    cpu, flags = cpu_model()
    info = {
        "device": device.type,
        "cpu": cpu,
        "cpu_low_precision": flags,
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return info


def write_results(
    rows: Sequence[BenchResult], run_dir: Union[str, os.PathLike], meta: Optional[Mapping[str, Any]] = None,
    name: str = "bench", plot: bool = True,
) -> dict[str, Path]:
    """Write ``<name>.csv``, ``<name>.json`` (rows + ``meta``) and, with matplotlib, ``<name>.png`` into ``run_dir``.

    Returns:
        The written files by kind (``"csv"``, ``"json"``, ``"png"``); ``"png"`` is missing without matplotlib.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = [asdict(r) for r in rows]
    out = {"csv": run_dir / f"{name}.csv", "json": run_dir / f"{name}.json"}
    keys = [k for k in data[0] if k != "extra"] if data else []
    with out["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(data)
    out["json"].write_text(json.dumps({"meta": dict(meta or {}), "results": data}, indent=2, default=str))
    if plot:
        try:
            from lightning_compress.plots import plot_speedups

            out["png"] = plot_speedups(rows, run_dir / f"{name}.png", title=str((meta or {}).get("title", "")))
        except ImportError:
            pass
    return out


# --------------------------------------------------------------------------------------------------------- CLI
def load_model(spec: str, checkpoint: Optional[str] = None) -> nn.Module:
    """Build a model from a command-line spec.

    Args:
        spec: One of: a torchvision model name (``resnet50``; random weights, nothing downloads); ``pkg.module:fn`` or
            ``path/to/file.py:fn`` (a builder called with no arguments); a file holding a whole pickled module
            (``torch.save(model)``; unpickling runs code: only your own files) or a ``torch.export`` program
            (``.pt2``, e.g. from ``save_quantized``); or a ``lc-train`` run folder (its ``.hydra/config.yaml`` builds the
            model and its best or last checkpoint fills it).
        checkpoint: Optional Lightning ``.ckpt`` or state-dict file loaded into the built model (keys with a leading
            ``model.`` are matched without it).

    Raises:
        ValueError: If the spec matches none of the forms.
    """
    path = Path(spec)
    if path.is_dir():
        from lightning_compress.train import model_from_run  # the Hydra-aware part lives in the entry point

        model = model_from_run(path)
    elif ":" in spec and not path.exists():
        target, _, fn_name = spec.rpartition(":")
        if target.endswith(".py"):
            module_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
            if module_spec is None or module_spec.loader is None:
                raise ValueError(f"cannot import {target}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        model = getattr(module, fn_name)()
    elif path.is_file():
        if path.suffix == ".pt2":
            model = torch.export.load(path).module()
        else:
            model = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(model, nn.Module):
                raise ValueError(f"{path} holds a {type(model).__name__}, not a pickled nn.Module; pass an architecture"
                                 " as the model and this file as --checkpoint")  # fmt: skip
    else:
        import torchvision

        if spec not in torchvision.models.list_models():
            raise ValueError(f"--model {spec!r} is no folder, file, module:function or torchvision model name")
        model = torchvision.models.get_model(spec, weights=None)
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        state = state.get("state_dict", state)
        stripped = {k.removeprefix("model."): v for k, v in state.items()}
        model.load_state_dict(stripped if set(stripped) & set(model.state_dict()) else state)
    return model


def _example_inputs(shape: str, tokens: Optional[int]) -> Tensor:
    dims = [int(d) for d in shape.replace("x", ",").split(",") if d]
    if tokens:
        return torch.randint(0, tokens, dims, generator=torch.Generator().manual_seed(0))
    return torch.randn(*dims, generator=torch.Generator().manual_seed(0))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``lc-bench``: measure a model on every inference path, print theory against measurement and advice.

    Example:
        lc-bench --model resnet50 --input-shape 1,3,224,224
        lc-bench --model resnet18 --checkpoint outputs/train/<time>/checkpoints/last.ckpt --paths "fp32 eager" int8
        lc-bench --model outputs/train/<time> --input-shape 64,1,28,28 --smaller student.pt --latency-budget-ms 2
    """
    parser = argparse.ArgumentParser(prog="lc-bench", description=main.__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="torchvision name, module:fn, file.py:fn, model file or run folder")
    parser.add_argument("--checkpoint", help="state dict or Lightning checkpoint to load into --model")
    parser.add_argument("--input-shape", default="1,3,224,224", help="e.g. 1,3,224,224 (float) or 1,128 with --tokens")
    parser.add_argument("--tokens", type=int, help="integer inputs in [0, TOKENS) (a vocabulary size) instead of floats")
    parser.add_argument("--smaller", help="a distilled / structurally pruned model (same spec forms as --model)")
    parser.add_argument("--paths", nargs="+", default=list(DEFAULT_PATHS), choices=ALL_PATHS)
    parser.add_argument("--sparsities", nargs="+", type=float, default=list(SPARSITIES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--latency-budget-ms", type=float, help="advise against this latency budget")
    parser.add_argument("--out", help="run folder (default outputs/bench/<time>)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)

    from lightning_compress.compression_advice import advise

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, args.checkpoint)
    smaller = load_model(args.smaller) if args.smaller else None
    inputs = _example_inputs(args.input_shape, args.tokens)
    rows = benchmark_model(
        model, inputs, paths=args.paths, sparsities=args.sparsities, smaller_model=smaller, device=args.device,
        warmup=args.warmup, repeats=args.repeats, log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    advice = advise(rows, device=args.device, latency_budget_ms=args.latency_budget_ms)
    run_dir = Path(args.out or Path("outputs/bench") / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    meta = {**machine_info(args.device), "model": args.model, "checkpoint": args.checkpoint,
            "input_shape": args.input_shape, "tokens": args.tokens, "advice": advice,
            "title": f"{args.model} {args.input_shape} on {args.device}"}  # fmt: skip
    files = write_results(rows, run_dir, meta, plot=not args.no_plot)
    print(format_table(rows))
    print()
    print("Advice (from the measurements above):")
    for line in advice:
        print(f"  - {line}")
    print()
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
