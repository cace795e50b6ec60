"""Dense bf16 vs 2:4 semi-structured sparse on one CUDA GPU: GEMMs, then a BERT-base-sized encoder end to end.

1. GEMMs ``F.linear(x, W)`` with ``x`` of ``tokens x in`` and a 2:4 weight ``W`` of ``out x in``, dense vs
   ``torch.sparse.to_sparse_semi_structured(W)``: the 4096 x 4096 x 4096 square (also as ``torch.mm(W, X)``, the
   kernels' native sparse @ dense orientation) and the BERT-base / ViT-B layer shapes (768 -> 3072, 3072 -> 768,
   768 -> 768, and ViT-B's fused qkv 768 -> 2304) at 4,096 and 16,384 tokens.
2. A BERT-base encoder built from ``transformers.BertConfig()`` with random weights (nothing downloaded), every Linear
   weight 2:4-masked with ``nm_mask``, then swapped with
   ``lightning_compress.sparsity.semi_structured.to_semi_structured_``;
   forward of batch 32 x sequence 512 in bf16, dense (masked) vs swapped, and the largest output difference.

Times come from CUDA events after warm-up: the median of 5 repeats of 20 calls. One run takes well under 5 minutes
on an H100/H200. Without CUDA (or on a GPU older than Ampere) it says so and exits 0.

    python experiments/nm_sparsity/gpu_speed.py [--json results.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


def cuda_ms(fn: Callable[[], Any], warmup: int = 10, iters: int = 20, repeats: int = 5) -> float:
    """Median milliseconds per call, from CUDA events around ``iters`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / iters)
    return statistics.median(times)


def graph_ms(fn: Callable[[], Any], iters: int = 20, repeats: int = 5) -> float:
    """Median milliseconds per call with ``iters`` calls captured in one CUDA graph: device time alone, without the
    host-side cost of dispatching each call (which, for a tensor subclass, runs Python)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(iters):
            fn()
    return cuda_ms(graph.replay, warmup=3, iters=1, repeats=repeats) / iters


def semi_structured(w: torch.Tensor, backend: str) -> torch.Tensor:
    from torch.sparse import SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    cls = SparseSemiStructuredTensorCUTLASS if backend == "cutlass" else SparseSemiStructuredTensorCUSPARSELT
    return cls.from_dense(w)


def two_four(out: int, inp: int, dtype: torch.dtype) -> torch.Tensor:
    from lightning_compress.sparsity.nm_masks import nm_mask

    w = torch.randn(out, inp, device="cuda", dtype=dtype)
    return (w * nm_mask(w, 2, 4)).contiguous()


def gemms(dtype: torch.dtype, backend: str, search: bool = False) -> list[dict[str, Any]]:
    cases = [("square", 4096, 4096, 4096)]
    for tokens in (4096, 16384):
        for label, inp, out in (
            ("BERT/ViT-B FFN up", 768, 3072),
            ("BERT/ViT-B FFN down", 3072, 768),
            ("BERT/ViT-B attn proj", 768, 768),
            ("ViT-B fused qkv", 768, 2304),
        ):
            cases.append((label, tokens, inp, out))
    rows = []
    for label, tokens, inp, out in cases:
        row: dict[str, Any] = {"what": f"linear {label}", "tokens": tokens, "in": inp, "out": out}
        extra: list[dict[str, Any]] = []
        try:
            w = two_four(out, inp, dtype)
            x = torch.randn(tokens, inp, device="cuda", dtype=dtype)
            ws = semi_structured(w, backend)
            if search and backend == "cusparselt":  # cuSPARSELt's own search for this shape's best algorithm
                alg = int(torch._cslt_sparse_mm_search(ws.packed, x.t()))
                ws.alg_id_cusparselt = alg
                row["alg_id"] = alg
            flop = 2 * tokens * inp * out
            with torch.no_grad():
                ref = F.linear(x, w)
                rel_err = (F.linear(x, ws) - ref).abs().max().item() / ref.abs().max().item()
                dense_ms = cuda_ms(lambda: F.linear(x, w))
                sparse_ms = cuda_ms(lambda: F.linear(x, ws))
            row.update(
                dense_ms=dense_ms, sparse_ms=sparse_ms, speedup=dense_ms / sparse_ms,
                dense_tflops=flop / dense_ms / 1e9, rel_err=rel_err,
            )  # fmt: skip
            try:
                with torch.no_grad():
                    g_dense, g_sparse = graph_ms(lambda: F.linear(x, w)), graph_ms(lambda: F.linear(x, ws))
                row.update(graph_dense_ms=g_dense, graph_sparse_ms=g_sparse, graph_speedup=g_dense / g_sparse)
            except Exception as err:
                row["graph_error"] = f"{type(err).__name__}: {err}"[:200]
            if label == "square":  # the kernels' native orientation: sparse (M x K) @ dense (K x N)
                b = torch.randn(inp, tokens, device="cuda", dtype=dtype)
                with torch.no_grad():
                    mm_dense, mm_sparse = cuda_ms(lambda: torch.mm(w, b)), cuda_ms(lambda: torch.mm(ws, b))
                extra.append({"what": "mm square (sparse @ dense)", "tokens": tokens, "in": inp, "out": out,
                              "dense_ms": mm_dense, "sparse_ms": mm_sparse, "speedup": mm_dense / mm_sparse,
                              "dense_tflops": flop / mm_dense / 1e9})  # fmt: skip
        except Exception as err:  # one failing shape must not hide the others
            row["error"] = f"{type(err).__name__}: {err}"[:300]
        for r in (row, *extra):
            rows.append(r)
            print(format_row(r), flush=True)
    return rows


def bert_end_to_end(dtype: torch.dtype, batch: int, seq: int, backend: str) -> dict[str, Any]:
    from transformers import BertConfig, BertModel

    from lightning_compress.sparsity.nm_masks import nm_mask
    from lightning_compress.sparsity.semi_structured import to_semi_structured_

    row: dict[str, Any] = {"what": f"BERT-base encoder forward, batch {batch} x seq {seq}", "tokens": batch * seq}
    try:
        torch.manual_seed(0)
        model = BertModel(BertConfig()).to("cuda", dtype).eval()  # random weights: bert-base shapes, no download
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.mul_(nm_mask(module.weight, 2, 4))
        sparse = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            swap = to_semi_structured_(sparse, dtype=dtype, backend=backend)
        ids = torch.randint(0, model.config.vocab_size, (batch, seq), device="cuda")
        with torch.no_grad():
            ref = model(input_ids=ids).last_hidden_state
            out = sparse(input_ids=ids).last_hidden_state
            dense_ms = cuda_ms(lambda: model(input_ids=ids), warmup=3, iters=5, repeats=5)
            sparse_ms = cuda_ms(lambda: sparse(input_ids=ids), warmup=3, iters=5, repeats=5)
        row.update(
            dense_ms=dense_ms, sparse_ms=sparse_ms, speedup=dense_ms / sparse_ms, swapped=len(swap.swapped),
            skipped=swap.skipped, max_abs_diff=(out.float() - ref.float()).abs().max().item(),
        )  # fmt: skip
        try:
            with torch.no_grad():
                g_dense = graph_ms(lambda: model(input_ids=ids), iters=5)
                g_sparse = graph_ms(lambda: sparse(input_ids=ids), iters=5)
            row.update(graph_dense_ms=g_dense, graph_sparse_ms=g_sparse, graph_speedup=g_dense / g_sparse)
        except Exception as err:
            row["graph_error"] = f"{type(err).__name__}: {err}"[:200]
    except Exception as err:
        row["error"] = f"{type(err).__name__}: {err}"[:500]
    print(format_row(row), flush=True)
    if "swapped" in row:
        print(f"    {row['swapped']} Linear layers swapped, left dense: {row['skipped'] or 'none'};"
              f" max |sparse - dense| of the last hidden state: {row['max_abs_diff']:.3g}")  # fmt: skip
    return row


def format_row(row: dict[str, Any]) -> str:
    shape = f"{row.get('tokens', '')} x {row.get('in', '')} -> {row.get('out', '')}" if "in" in row else ""
    head = f"{row['what']:34s} {shape:22s}"
    if "error" in row:
        return f"{head} ERROR {row['error']}"
    tflops = f"{row['dense_tflops']:7.1f} TFLOP/s dense" if "dense_tflops" in row else ""
    graph = (
        f"  | CUDA graph: dense {row['graph_dense_ms']:7.3f} ms 2:4 {row['graph_sparse_ms']:7.3f} ms"
        f" x{row['graph_speedup']:.2f}"
        if "graph_speedup" in row
        else f"  | CUDA graph: {row.get('graph_error', '-')}"
    )
    times = f"dense {row['dense_ms']:8.3f} ms  2:4 {row['sparse_ms']:8.3f} ms"
    return f"{head} {times}  x{row['speedup']:.2f}  {tflops}{graph}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--backend", choices=["cusparselt", "cutlass"], default="cusparselt")
    parser.add_argument("--search", action="store_true", help="cuSPARSELt: search the best algorithm per GEMM shape")
    parser.add_argument("--gemms-only", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("CUDA is not available: 2:4 semi-structured kernels need an NVIDIA GPU (Ampere or newer); nothing"
              " measured.")  # fmt: skip
        return 0
    capability = torch.cuda.get_device_capability()
    if capability < (8, 0):
        major, minor = capability
        print(f"GPU compute capability {major}.{minor} < 8.0: no 2:4 sparse tensor cores; nothing measured.")
        return 0
    warnings.filterwarnings("ignore", ".*prototype stage.*")
    dtype = torch.bfloat16
    print(f"{torch.cuda.get_device_name()} (sm{capability[0]}{capability[1]}), torch {torch.__version__},"
          f" CUDA {torch.version.cuda}, cuSPARSELt {torch.backends.cusparselt.version()}, bf16,"
          f" backend {args.backend}")  # fmt: skip
    rows = gemms(dtype, args.backend, args.search)
    if not args.gemms_only:
        rows.append(bert_end_to_end(dtype, args.batch, args.seq, args.backend))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "backend": args.backend,
                       "rows": rows}, f, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
