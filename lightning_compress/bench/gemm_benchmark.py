"""Theory against reality for one GEMM: ``W @ X`` with ``W`` pruned to each sparsity, through the dense kernel, each
``torch.sparse`` layout, and (on CUDA) 2:4 semi-structured and INT8 kernels.

Example:
    >>> rows = benchmark_gemm(64, 64, 64, sparsities=(0.9,), formats=("csr",), repeats=1, checks=None)
    >>> [r.path for r in rows][:3]
    ['dense GEMM', 'dense kernel, 90% zeros', 'CSR 90%']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch

from lightning_compress.bench.results import SPARSITIES, BenchResult, Unavailable
from lightning_compress.bench.timing import PathTimer, TimingChecks
from lightning_compress.pruning.magnitude import magnitude_mask
from lightning_compress.sparsity.nm_masks import nm_mask
from lightning_compress.sparsity.sparse_layers import to_sparse_weight

__all__ = ["benchmark_gemm"]


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
    checks: Optional[TimingChecks] = TimingChecks(),  # noqa: B008 -- frozen, shared safely
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
        checks: The trust checks of every timing (each row is timed round-robin with the dense GEMM, re-measured when
            disturbed, then marked ``untrusted``; see :class:`~lightning_compress.bench.timing.TimingChecks`); None:
            none.

    Returns:
        The rows; ``throughput`` is effective FLOP/s of the dense problem (``2 m k n / latency``).

    Example:
        >>> rows = benchmark_gemm(64, 64, 64, sparsities=(0.9,), formats=("csr",), repeats=1, checks=None)
        >>> [r.path for r in rows]
        ['dense GEMM', 'dense kernel, 90% zeros', 'CSR 90%', '2:4 semi-structured GEMM', 'INT8 GEMM', '2:4 + INT8 GEMM']
    """
    device = torch.device(device)
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(m, k, generator=gen).to(device, dtype)
    x = torch.randn(k, n, generator=gen).to(device, dtype)
    flop = 2.0 * m * k * n
    timer = PathTimer(flop, device, warmup, repeats, min_warmup_s, log, checks)
    run = timer.run

    name = str(dtype).removeprefix("torch.")
    run(BenchResult("dense GEMM", "dense", theoretical_speedup=1.0, fmt=name), lambda: lambda: w @ x)
    for sparsity in sparsities:
        pruned = w * magnitude_mask(w, sparsity)
        theory = 1.0 / (1.0 - sparsity)
        run(BenchResult(f"dense kernel, {sparsity:.0%} zeros", "unstructured", theoretical_speedup=theory,
                        sparsity=sparsity, fmt=name), lambda pruned=pruned: lambda: pruned @ x)  # fmt: skip
        for fmt in formats:

            def sparse_fn(fmt: str = fmt, pruned: torch.Tensor = pruned) -> Callable[[], Any]:
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
    return timer.rows


# ------------------------------------------------------------------------------------------------------ output
