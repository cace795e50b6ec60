"""Timings of one-shot quantization and pruning, ours against llm-compressor 0.14, and of INT4 inference on SmolLM2:
ONE script, runs interleaved, ratios printed. Run it only on a quiet machine (check `uptime`).

    python3 experiments/one_shot_quantization/benchmark.py                 # the full run (about an hour)
    python3 experiments/one_shot_quantization/benchmark.py --quick         # a smoke test of every path
    python3 experiments/one_shot_quantization/benchmark.py --repeats 1 --rows gptq_w4_g64,wanda_24 --new-tokens 32
                                                                          # reduced (about 12 minutes, quiet)

1. One-shot wall time and peak memory growth (peak RSS over the RSS of the loaded model), for GPTQ W4 g64 and W3 g64,
   SparseGPT 50 % and 2:4, Wanda 50 % and 2:4: each row as a fresh process, ours (`worker` below) in the lower-bound
   environment `.venv-lower` and the peer (peer.py) in `.venv-peer`, both on torch 2.13.0+cpu, alternating ours,
   peer, ours, peer ... for `--repeats` rounds; medians and ours/peer ratios printed.
2. Inference (ours, in `.venv-lower`): greedy decode tokens/s at batch 1 (`--new-tokens` after a 32-token prompt,
   KV cache on) and the time of one 256-token prefill, for the fp32 model, the bf16 model, and the INT4 model (the
   blocks' Linear layers through `_weight_int4pack_mm_for_cpu`, everything else bf16), and INT4 with the tied
   `lm_head` also INT8 weight-only (`_weight_int8pack_mm`, per channel). Variants interleaved within each repeat.
3. Sizes (not timings): bytes of the quantized layers packed (codes + scales + zeros) against bf16 and fp32, and of
   the whole model.

The CPU model and flags, torch versions and thread count are printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OURS_PY = os.path.join(ROOT, ".venv-lower", "bin", "python")
PEER_PY = os.path.join(ROOT, ".venv-peer", "bin", "python")
ONE_SHOT_ROWS = ("gptq_w4_g64", "gptq_w3_g64", "sparsegpt_50", "sparsegpt_24", "wanda_50", "wanda_24")
# The peer's row for each of ours: its pruning modifiers need ignore=["re:.*lm_head"] to leave the tied head dense, as
# ours does by default (peer.py's `sparsegpt_*` / `wanda_*` rows, ignore=["lm_head"], prune it: see README.md)
PEER_ROWS = {f"{m}_{p}": f"{m}h_{p}" for m in ("sparsegpt", "wanda") for p in ("50", "24")}


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def worker(row: str, quick: bool, threads: int) -> None:
    """Ours, one row, in this process: prints one JSON line (seconds, peak growth)."""
    import resource

    import torch

    sys.path.insert(0, HERE)
    import protocol
    from accuracy import compress

    torch.set_num_threads(threads)
    model, tokenizer = protocol.load()
    calibration, _ = protocol.windows(tokenizer)
    if quick:
        calibration = calibration[:2]
    protocol.make_resident(model)  # the loaded model's weights in RSS (see protocol.py)
    loaded = _rss_mib()
    start = time.perf_counter()
    compress(row, model, calibration)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"who": "lightning_compress", "row": row, "seconds": seconds, "peak_growth_mib": peak - loaded,
                      "torch": torch.__version__}))  # fmt: skip


def _run(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def one_shot(rows: list[str], repeats: int, quick: bool, threads: int) -> None:
    print(f"\n== one-shot: wall time and peak memory growth over the loaded model ({repeats} rounds, interleaved)")
    print(
        f"{'row':14s} {'ours s':>8s} {'peer s':>8s} {'ours/peer':>9s}   {'ours MiB':>8s} {'peer MiB':>8s} {'ratio':>6s}"
    )
    flags = ["--quick"] if quick else []
    for row in rows:
        ours, peer = [], []
        for _ in range(repeats):
            ours.append(_run([OURS_PY, __file__, "worker", row, f"--threads={threads}", *flags]))
            peer.append(_run([PEER_PY, os.path.join(HERE, "peer.py"), PEER_ROWS.get(row, row), "--no-eval",
                              f"--threads={threads}", *flags]))  # fmt: skip
        o_s, p_s = (statistics.median(r["seconds"] for r in runs) for runs in (ours, peer))
        o_m, p_m = (statistics.median(r["peak_growth_mib"] for r in runs) for runs in (ours, peer))
        print(f"{row:14s} {o_s:8.1f} {p_s:8.1f} {o_s / p_s:9.2f}   {o_m:8.0f} {p_m:8.0f} {o_m / max(p_m, 1):6.2f}",
              flush=True)  # fmt: skip


def inference(repeats: int, quick: bool, threads: int, new_tokens: int) -> None:
    """Runs in `.venv-lower` (re-executed there by main)."""
    import copy

    import torch

    sys.path.insert(0, HERE)
    import protocol

    from lightning_compress.bench.machine import cpu_model
    from lightning_compress.quantization.weight_only.quantize import one_shot_quantize
    from lightning_compress.quantization.weight_only.weight_only_linear import (
        Int4WeightOnlyLinear,
        Int8WeightOnlyLinear,
        to_weight_only_,
    )

    torch.set_num_threads(threads)
    name, flags = cpu_model()
    print(f"\n== inference on {name} ({', '.join(flags)}), torch {torch.__version__}, {threads} threads")
    fp32, tokenizer = protocol.load()
    calibration, evaluation = protocol.windows(tokenizer)
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    int4 = copy.deepcopy(fp32)
    _, result = one_shot_quantize(int4, None, method="rtn", bits=4, group_size=64)  # the kernels' speed: any codes
    int4 = int4.to(torch.bfloat16)
    to_weight_only_(int4, result, dtype=torch.bfloat16)
    int4_head = copy.deepcopy(int4)
    _, head = one_shot_quantize(int4_head, None, method="rtn", bits=8, group_size=None, ignore=(),
                                filter_fn=lambda m, fqn: fqn == "lm_head")  # fmt: skip
    to_weight_only_(int4_head, head, dtype=torch.bfloat16)
    models = {"fp32": fp32, "bf16": bf16, "int4": int4, "int4+int8 head": int4_head}

    # sizes (bytes, not timings)
    quantized = [int4.get_submodule(fqn) for fqn in result.layers]
    packed = sum(m.packed.numel() * m.packed.element_size() + m.scales_and_zeros.numel() * 2 for m in quantized)
    weights = sum(m.in_features * m.out_features for m in quantized)
    whole = {k: sum(t.numel() * t.element_size() for t in [*v.parameters(), *v.buffers()]) for k, v in models.items()}
    print(f"quantized layers: {len(quantized)}, {weights / 1e6:.1f} M weights: INT4 packed {packed / 2**20:.1f} MiB,"
          f" bf16 {2 * weights / 2**20:.1f} MiB ({packed / (2 * weights):.3f}x), fp32 {4 * weights / 2**20:.1f} MiB"
          f" ({packed / (4 * weights):.3f}x)")  # fmt: skip
    print("whole model in memory: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in whole.items()))
    assert all(isinstance(m, Int4WeightOnlyLinear) and m.kernel == "cpu_int4pack" for m in quantized)
    assert isinstance(int4_head.lm_head, Int8WeightOnlyLinear)

    prompt = evaluation[0, :32][None]
    prefill = evaluation[0][None]
    decode: dict[str, list[float]] = {k: [] for k in models}
    fill: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():  # warm-up
            m.generate(prompt, max_new_tokens=2, min_new_tokens=2, do_sample=False)
        for _ in range(repeats):
            for k, m in models.items():
                start = time.perf_counter()
                m.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
                decode[k].append(new_tokens / (time.perf_counter() - start))
                start = time.perf_counter()
                m(prefill)
                fill[k].append(time.perf_counter() - start)
    print(f"{'model':16s} {'decode tok/s':>12s} {'vs bf16':>8s} {'prefill 256 ms':>15s} {'vs bf16':>8s}")
    base_d, base_p = statistics.median(decode["bf16"]), statistics.median(fill["bf16"])
    for k in models:
        d, p = statistics.median(decode[k]), statistics.median(fill[k])
        print(f"{k:16s} {d:12.1f} {d / base_d:8.2f} {1000 * p:15.1f} {p / base_p:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="all", choices=("all", "one-shot", "inference", "worker"))
    parser.add_argument("row", nargs="?", default=None)
    parser.add_argument("--quick", action="store_true", help="2 calibration windows, 1 round, one row, 8 tokens")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rows", default=",".join(ONE_SHOT_ROWS),
                        help=f"one-shot rows, comma-separated (default all: {','.join(ONE_SHOT_ROWS)})")  # fmt: skip
    args = parser.parse_args()
    if args.mode == "worker":
        worker(args.row, args.quick, args.threads)
        return
    if args.mode == "inference":
        inference(args.repeats, args.quick, args.threads, args.new_tokens)
        return
    for py in (OURS_PY, PEER_PY):
        if not os.path.exists(py):
            sys.exit(
                f"{py} is missing: build .venv-lower with `make test-lower`'s install and .venv-peer as in peer.py"
            )
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ONE_SHOT_ROWS]
    if unknown:
        sys.exit(f"--rows: unknown row(s) {', '.join(unknown)}; rows: {', '.join(ONE_SHOT_ROWS)}")
    up = open("/proc/loadavg").read().split()[0]
    print(f"load average {up} (time only on a quiet machine)")
    repeats = 1 if args.quick else args.repeats
    if args.mode in ("all", "one-shot"):
        quick_rows = ["wanda_24"] if args.rows == ",".join(ONE_SHOT_ROWS) else rows[:1]
        one_shot(quick_rows if args.quick else rows, repeats, args.quick, args.threads)
    if args.mode in ("all", "inference"):
        new_tokens = 8 if args.quick else args.new_tokens
        cmd = [OURS_PY, __file__, "inference", f"--repeats={repeats}", f"--threads={args.threads}",
               f"--new-tokens={new_tokens}"] + (["--quick"] if args.quick else [])  # fmt: skip
        subprocess.run(cmd, check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
