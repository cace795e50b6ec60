"""Which compression to use, derived from benchmark rows just measured, in the design document's order of decisions.

The framework: (1) INT8 quantization first; (2) 2:4 structured sparsity on Ampere or newer GPUs; (3) distillation into a
smaller architecture for a fixed latency budget; (4) unstructured sparsity only with hardware that skips zeros. Each
piece of advice here is a sentence built from the measured rows
(:class:`~lightning_compress.bench.model_benchmark.BenchResult`):
a path that was not measured produces the reason it was not, never a number from the literature. Rows whose timing
cannot be trusted (``untrusted``: the machine was busy, or the repeats spread too widely) get no advice at all: the
sentences say that it was refused, and why, with the figures.

Example:
    >>> from lightning_compress.bench.model_benchmark import BenchResult
    >>> rows = [BenchResult("fp32 eager", "dense", latency_ms=10.0, speedup=1.0),
    ...         BenchResult("INT8 (QAT export path, PT2E)", "int8", latency_ms=2.0, speedup=5.0,
    ...                     theoretical_speedup=4.0)]
    >>> advise(rows)[0]
    'INT8 first: INT8 (QAT export path, PT2E) runs 5.00x faster than fp32 eager (2.000 ms vs 10.000 ms); start here.'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from lightning_compress.bench.model_benchmark import BenchResult
from lightning_compress.bench.results import untrusted_rows

__all__ = ["advise", "refusal"]

_WORTH = 1.10  # a speed-up below this is within the noise of shared machines: not worth a technique


def _best(rows: Sequence[BenchResult], family: str) -> Optional[BenchResult]:
    measured = [r for r in rows if r.family == family and r.available and r.speedup is not None]
    return max(measured, key=lambda r: r.speedup or 0.0) if measured else None


def _reasons(rows: Sequence[BenchResult], family: str) -> str:
    return "; ".join(f"{r.path}: {r.reason}" for r in rows if r.family == family and not r.available)


def refusal(rows: Sequence[BenchResult]) -> list[str]:
    """Why no advice can be given from ``rows``: one sentence, then one per untrusted row; empty when all are trusted.

    Example:
        >>> refusal([BenchResult("fp32 eager", "dense", latency_ms=1.0, untrusted="machine busy while timing")])[1]
        'fp32 eager: machine busy while timing'
    """
    doubtful = untrusted_rows(rows)
    if not doubtful:
        return []
    measured = sum(1 for r in rows if r.available)
    head = (
        f"Refusing to advise: {len(doubtful)} of {measured} measured paths are not trustworthy (the machine was busy,"
        " or the repeats spread too widely), so the speed-ups above may be noise. Re-run on a quiet machine (check"
        " `uptime`; stop other jobs)."
    )
    return [head, *(f"{r.path}: {r.untrusted}" for r in doubtful)]


def advise(rows: Sequence[BenchResult], device: str = "cpu", latency_budget_ms: Optional[float] = None) -> list[str]:
    """Advice sentences, one per step of the decision framework, from measured rows.

    Args:
        rows: Rows of :func:`~lightning_compress.bench.model_benchmark.benchmark_model` (the ``"fp32 eager"``
            baseline among them).
        device: Where they were measured (named in the sentences).
        latency_budget_ms: A latency target per call; when given, the paths that meet it are named, and the size of
            the distilled model needed when none does.

    Returns:
        Sentences in framework order: INT8, 2:4, latency budget / distillation, unstructured sparsity; or, when a
        measured row is untrusted, the refusal (:func:`refusal`).

    Example:
        >>> advise([])
        ['no fp32 eager baseline was measured: nothing to advise']
    """
    refused = refusal(rows)
    if refused:
        return refused
    base = next((r for r in rows if r.path == "fp32 eager" and r.available and r.latency_ms), None)
    if base is None:
        return ["no fp32 eager baseline was measured: nothing to advise"]
    out: list[str] = []
    bf16 = next((r for r in rows if r.family == "dtype" and r.available and r.speedup), None)

    # 1. INT8 first.
    int8 = _best(rows, "int8")
    if int8 is None:
        why = _reasons(rows, "int8") or "not measured"
        out.append(f"INT8 first, but no INT8 path ran on {device} ({why}).")
    elif int8.speedup >= _WORTH:
        text = (f"INT8 first: {int8.path} runs {int8.speedup:.2f}x faster than fp32 eager"
                f" ({int8.latency_ms:.3f} ms vs {base.latency_ms:.3f} ms); start here.")  # fmt: skip
        if bf16 is not None and bf16.speedup > int8.speedup:
            text += f" (bf16 autocast is faster still here: {bf16.speedup:.2f}x.)"
        out.append(text)
    else:
        alt = f"; bf16 autocast gives {bf16.speedup:.2f}x" if bf16 is not None else ""
        out.append(f"INT8 first, but the best INT8 path ({int8.path}) gives only {int8.speedup:.2f}x on {device}"
                   f" at this shape{alt}.")  # fmt: skip

    # 2. 2:4 on Ampere or newer.
    semi = _best(rows, "2:4")
    if semi is None:
        out.append(f"Skip 2:4 sparsity on this machine: {_reasons(rows, '2:4') or 'not measured'}.")
    else:
        ref = bf16 if bf16 is not None else base
        gain = semi.latency_ms and ref.latency_ms / semi.latency_ms
        verdict = "worth fine-tuning for" if gain >= _WORTH else "not worth it at this shape"
        out.append(
            f"2:4: {semi.path} is {gain:.2f}x the dense {ref.path} ({semi.latency_ms:.3f} ms vs"
            f" {ref.latency_ms:.3f} ms, {semi.theoretical_speedup or 0:.0f}x in theory vs fp32): {verdict}."
        )
    combo = _best(rows, "2:4+int8")
    if combo is not None:
        out.append(f"2:4 + INT8 measured {combo.speedup:.2f}x over fp32 eager.")

    # 3. A latency budget: distillation.
    fastest = max((r for r in rows if r.available and r.speedup), key=lambda r: r.speedup or 0.0)
    small = _best(rows, "smaller")
    if small is not None:
        theory = f" ({small.theoretical_speedup:.2f}x fewer FLOPs)" if small.theoretical_speedup else ""
        out.append(
            f"The smaller model{theory} runs {small.speedup:.2f}x faster than the full fp32 model on any"
            " hardware; compress it further (INT8) rather than the large one when a budget is fixed."
        )
    if latency_budget_ms is not None:
        meet = [r for r in rows if r.available and r.latency_ms is not None and r.latency_ms <= latency_budget_ms]
        if meet:
            best = min(meet, key=lambda r: r.latency_ms or 0.0)
            out.append(f"Budget {latency_budget_ms:g} ms: met by {len(meet)} path(s); fastest {best.path} at"
                       f" {best.latency_ms:.3f} ms.")  # fmt: skip
        else:
            need = fastest.latency_ms / latency_budget_ms
            out.append(f"Budget {latency_budget_ms:g} ms: no path meets it (fastest {fastest.path} at"
                       f" {fastest.latency_ms:.3f} ms); distil into an architecture about {need:.1f}x cheaper, then"
                       f" apply {fastest.path} to it.")  # fmt: skip
    elif small is None:
        out.append(
            f"For a fixed latency budget beyond {fastest.speedup:.2f}x ({fastest.path}, the fastest path"
            " measured), distil into a smaller architecture: its speed-up needs no special kernels."
        )

    # 4. Unstructured sparsity only with sparse hardware.
    sparse = [r for r in rows if r.family == "unstructured" and r.available and r.speedup and r.fmt != "dense"]
    if not sparse:
        out.append(f"Unstructured sparsity: no sparse kernel ran ({_reasons(rows, 'unstructured') or 'not measured'}).")
    else:
        winners = sorted((r for r in sparse if r.speedup >= _WORTH), key=lambda r: r.sparsity or 0.0)
        best = max(sparse, key=lambda r: r.speedup or 0.0)
        at90 = [r for r in sparse if r.sparsity is not None and abs(r.sparsity - 0.9) < 1e-9]
        at90_text = ""
        if at90:
            b90 = max(at90, key=lambda r: r.speedup or 0.0)
            at90_text = f" At 90 % the best sparse kernel ({b90.path}) gives {b90.speedup:.2f}x against 10x in theory."
        if not winners:
            out.append(f"Unstructured sparsity does not pay on {device}: no torch.sparse path beat dense fp32 at any"
                       f" measured sparsity (best {best.path}: {best.speedup:.2f}x).{at90_text} Use it only for"
                       " smaller files (lc-report) or with sparse hardware.")  # fmt: skip
        else:
            first = winners[0]
            out.append(
                f"Unstructured sparsity starts to pay at {first.sparsity:.0%} ({first.path}:"
                f" {first.speedup:.2f}x vs {first.theoretical_speedup:.0f}x in theory); best {best.path} at"
                f" {best.speedup:.2f}x.{at90_text} Only worth it if the accuracy holds at that sparsity."
            )
    return out
