"""How fast can INT8 be on this CPU? The kernel ceilings behind issue 5's speed targets.

Issue 5 asks for an INT8 model at most 0.15x the fp32 eager latency and at most 0.5x the bf16 autocast latency. This
script measures, on the CPU it runs on:

1. the fastest matrix multiplications of each precision (GMAC/s): raw INT8 (`torch._int_mm`, int8 x int8 -> int32,
   oneDNN), fp32 and bf16 `matmul`, at a large square shape and at the shapes of MiniLM's and ResNet-18's layers;
2. for the three models of `benchmark.py speed` (same inputs): fp32 eager, bf16 autocast and our INT8 model (interleaved
   medians, as there), the share of the INT8 model's time spent in its oneDNN INT8 conv/linear kernels (torch.profiler)
   and the multiply-accumulates of those layers (`FlopCounterMode`);
3. the bound: the INT8 model's time if every INT8 conv/linear ran at the fastest INT8 rate of (1), with everything else
   (float attention, pooling, quantize steps, call overhead) as measured. Divided by the fp32 eager and bf16 autocast
   times of the same run, it is the best ratio that faster INT8 kernels could give on this CPU: above a target, no
   kernel work meets that target here.

    .venv/bin/python experiments/qat/kernel_ceiling.py          # about a minute, 2 threads; prints JSON rows

Rows are printed and written to `kernel_ceiling.json` beside this file, under the CPU's model name (with its AMX /
VNNI / AVX-512 BF16 flags).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

# the sibling script: the same models, inputs and timing
from benchmark import _call, int8_model, median_ms, speed_cases, timing_calls
from torch import nn
from torch.profiler import profile

from lightning_compress.bench import gemm_flops, machine_info, measure

HERE = Path(__file__).resolve().parent
#: (M, K, N): a large square GEMM; MiniLM at 8 x 128 tokens (qkv/out 384 -> 384, FFN 384 -> 1536 -> 384); ResNet-18's
#: 3x3 convs at batch 8 as im2col GEMMs (layer1: 8 * 56 * 56 rows, 64 * 9 -> 64; layer4: 8 * 7 * 7 rows, 512 * 9 -> 512)
SHAPES = (
    (2048, 2048, 2048),
    (1024, 384, 384),
    (1024, 384, 1536),
    (1024, 1536, 384),
    (25088, 576, 64),
    (392, 4608, 512),
)
GEMM_OPS = ("convolution", "mm", "addmm", "bmm")  # the ops counted as conv/linear work (`bench.gemm_flops`)


def gemm_rates(shapes: tuple[tuple[int, int, int], ...] = SHAPES) -> list[dict[str, Any]]:
    """GMAC/s of INT8 (`torch._int_mm`), fp32 and bf16 matmul at each (M, K, N)."""
    rows = []
    for m, k, n in shapes:
        a8 = torch.randint(-128, 128, (m, k), dtype=torch.int8)
        b8 = torch.randint(-128, 128, (k, n), dtype=torch.int8)
        a32, b32 = a8.float(), b8.float()
        a16, b16 = a32.bfloat16(), b32.bfloat16()
        mmacs = m * k * n / 1e6
        with torch.inference_mode():
            calls = {"int8": lambda: torch._int_mm(a8, b8), "fp32": lambda: a32 @ b32, "bf16": lambda: a16 @ b16}
            ms = {key: measure(call, warmup=1, repeats=7)[0] * 1e3 for key, call in calls.items()}
        row: dict[str, Any] = {"gemm": f"{m}x{k}x{n}", **{f"{key}_gmacs": round(mmacs / v, 1) for key, v in ms.items()}}
        row["int8/fp32"] = round(ms["int8"] / ms["fp32"], 3)
        row["int8/bf16"] = round(ms["int8"] / ms["bf16"], 3)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def int8_kernel_share(int8: nn.Module, inputs: Any, calls: int = 3) -> float:
    """Share of the INT8 model's profiled time spent in oneDNN's INT8 conv/linear kernels (`onednn::q...`)."""
    with torch.inference_mode(), profile() as prof:
        for _ in range(calls):
            _call(int8, inputs)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    kernels = sum(e.self_cpu_time_total for e in events if e.key.startswith("onednn::q"))
    return kernels / total


def model_bound(name: str, model: nn.Module, inputs: Any, int8_gmacs: float) -> dict[str, Any]:
    model.eval()
    macs = gemm_flops(model, inputs, GEMM_OPS) // 2  # SDPA's matmuls are not counted: they stay in float
    int8, _ = int8_model(model, inputs)
    ms = median_ms(model, int8, inputs, n=timing_calls(name))
    share = int8_kernel_share(int8, inputs)
    kernel_ms = share * ms["int8"]
    bound_ms = macs / (int8_gmacs * 1e6) + (ms["int8"] - kernel_ms)
    row: dict[str, Any] = {"model": name, "gemm_gmac": round(macs / 1e9, 2), **{f"{k}_ms": v for k, v in ms.items()}}
    row.update(
        {
            "int8/fp32": round(ms["int8"] / ms["fp32_eager"], 3),
            "int8/bf16": round(ms["int8"] / ms["bf16_autocast"], 3),
            "fp32_eager_gmacs": round(macs / (ms["fp32_eager"] * 1e6), 1),
            "int8_kernel_share": round(share, 3),
            "int8_kernel_gmacs": round(macs / (kernel_ms * 1e6), 1),
            "int8_ceiling_gmacs": int8_gmacs,
            "bound_ms": round(bound_ms, 2),
            "bound/fp32 (target 0.15)": round(bound_ms / ms["fp32_eager"], 3),
            "bound/bf16 (target 0.5)": round(bound_ms / ms["bf16_autocast"], 3),
        }
    )
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    torch.set_num_threads(2)
    start = time.perf_counter()
    gemms = gemm_rates()
    ceiling = max(row["int8_gmacs"] for row in gemms)
    models = [model_bound(name, model, inputs, ceiling) for name, model, inputs in speed_cases()]
    out = HERE / "kernel_ceiling.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    info = machine_info()
    results[info["cpu"]] = {**info, "gemms": gemms, "models": models}
    out.write_text(json.dumps(results, indent=1))
    print(f"kernel_ceiling: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
