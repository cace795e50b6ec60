"""What this machine can benefit from, asked before a step runs: the x86 INT8 lowering (oneDNN), sparse tensor cores
(2:4 on NVIDIA compute capability 8.0 and newer), and whether an unstructured-sparse kernel is faster than the dense
one here, measured (CSR layers against the dense model, interleaved, with the busy-machine checks).

Example:
    >>> facts = machine_facts("cpu")
    >>> isinstance(facts.int8_reason, (str, type(None)))
    True
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import nn

from lightning_compress.bench.results import BenchResult
from lightning_compress.bench.timing import PathTimer, TimingChecks
from lightning_compress.core.batches import ExampleInputs, batch_size_of, call_model

__all__ = ["MachineFacts", "machine_facts", "sparse_kernel_speedup"]


@dataclass
class MachineFacts:
    """Why a family of kernels cannot help here (None: it can).

    Attributes:
        device: Where the planner runs candidates.
        int8_reason: Why the PT2E INT8 path (x86 oneDNN kernels) cannot run, or None.
        sparse_24_reason: Why 2:4 semi-structured kernels cannot run, or None.
    """

    device: str
    int8_reason: Optional[str]
    sparse_24_reason: Optional[str]


def machine_facts(device: Union[str, torch.device] = "cpu") -> MachineFacts:
    """The facts of ``device`` on this machine."""
    device = torch.device(device)
    int8 = None
    if device.type != "cpu":
        int8 = f"the PT2E INT8 path lowers to oneDNN kernels on x86 CPUs only; the planner runs on {device.type}"
    elif platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        int8 = f"the PT2E INT8 path lowers to oneDNN kernels on x86 CPUs only; this CPU is {platform.machine()}"
    sparse = None
    if device.type != "cuda" or not torch.cuda.is_available():
        sparse = (
            "2:4 needs sparse tensor cores (an NVIDIA GPU of compute capability 8.0 / Ampere or newer); the planner"
            f" runs on {device.type}" + ("" if torch.cuda.is_available() else " and no CUDA GPU is present")
        )
    else:
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            sparse = f"2:4 needs sparse tensor cores (compute capability 8.0+); this GPU is {major}.{minor}"
    return MachineFacts(str(device), int8, sparse)


def sparse_kernel_speedup(
    model: nn.Module,
    inputs: ExampleInputs,
    sparsity: float,
    fmt: str = "csr",
    device: Union[str, torch.device] = "cpu",
    repeats: int = 10,
    checks: Optional[TimingChecks] = TimingChecks(),  # noqa: B008 -- frozen, shared safely
) -> BenchResult:
    """The dense model and its ``sparsity``-pruned copy in ``fmt`` sparse layers, timed interleaved.

    Returns:
        The sparse path's row: ``speedup`` is the dense median over the sparse one (> 1: the sparse kernel is
        faster here), ``untrusted`` says when the timing cannot be trusted, ``available=False`` with the reason when
        it cannot run.
    """
    from lightning_compress.bench.model_benchmark import prune_unstructured
    from lightning_compress.sparsity.sparse_layers import to_sparse_layers

    device = torch.device(device)
    dense = model.to(device).eval()
    timer = PathTimer(batch_size_of(inputs), device, warmup=3, repeats=repeats, min_warmup_s=0.1, checks=checks)
    timer.run(BenchResult("dense", "dense"), lambda: lambda: call_model(dense, inputs))

    def build():  # noqa: ANN202
        layered, _ = to_sparse_layers(prune_unstructured(dense, sparsity), fmt)
        return lambda: call_model(layered, inputs)

    return timer.run(BenchResult(f"{fmt.upper()} {sparsity:.0%}", "unstructured", sparsity=sparsity, fmt=fmt), build)
