"""Perplexity of SmolLM2-135M after one-shot quantization and pruning with lightning_compress, on the shared protocol
(protocol.py: 16 calibration windows of 256 tokens from the start of hamlet.txt, perplexity on the last 12 windows).

    .venv/bin/python experiments/one_shot_quantization/accuracy.py               # every row, into results.jsonl
    .venv/bin/python experiments/one_shot_quantization/accuracy.py gptq_w3_g64   # some rows
    .venv/bin/python experiments/one_shot_quantization/accuracy.py --quick dense # 2 + 2 windows: a smoke test
    .venv/bin/python experiments/one_shot_quantization/accuracy.py table         # the table from results.jsonl

Settings as the peer's (peer.py): symmetric grids, group 64, act order off, dampening 0.01, block 128, the default
selection (ignore="auto": the output head, tied to the embedding, stays float). Variants of GPTQ (not the peer's pinned
settings): gptqs_ static min-max groups (the peer's grids), gptqr_ searched ranges, gptqa_ act order, gptqar_ act
order + searched ranges. Only perplexity is recorded here:
times and memory come from benchmark.py on a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import protocol  # noqa: E402

from lightning_compress.analysis.perplexity import perplexity  # noqa: E402
from lightning_compress.pruning.one_shot.prune import one_shot_prune  # noqa: E402
from lightning_compress.quantization.weight_only.quantize import one_shot_quantize  # noqa: E402

RESULTS = os.path.join(HERE, "results.jsonl")
ROWS = ("dense", "rtn_w4_g64", "awq_w4_g64", "gptq_w4_g64", "rtn_w3_g64", "awq_w3_g64", "gptq_w3_g64",
        "gptqs_w4_g64", "gptqs_w3_g64", "gptqr_w4_g64", "gptqr_w3_g64", "gptqa_w4_g64", "gptqar_w4_g64",
        "gptqar_w3_g64", "sparsegpt24_gptq_w4_g64", "sparsegpt_50", "sparsegpt_24", "wanda_50", "wanda_24")  # fmt: skip


def compress(row: str, model: torch.nn.Module, calibration: torch.Tensor) -> str:
    """Apply one row's method in place; returns its one-line summary."""
    if row == "dense":
        return "dense"
    method, *rest = row.split("_")
    if method in ("sparsegpt", "wanda"):
        pattern = {"n": 2, "m": 4} if rest[0] == "24" else {"sparsity": 0.5}
        batches = list(calibration[:, None])  # one window (1, 256) per batch
        result = one_shot_prune(model, batches, method=method, calibration_batches=len(batches), **pattern)
        return f"{method} {result.pattern}: {result.achieved_sparsity:.2%} of {len(result.masks)} weights"
    joint: dict = {"n": 2, "m": 4} if method == "sparsegpt24" else {}
    if joint:
        method, rest = rest[0], rest[1:]
    if method == "gptqs":  # GPTQ with static groups (the grids set from the original weights, as the peer does)
        method, joint = "gptq", {**joint, "static_groups": True}
    if method == "gptqr":  # GPTQ on fixed grids whose ranges are searched against the Hessian (not the peer's minmax)
        method, joint = "gptq", {**joint, "search_ranges": True}
    act_order = method in ("gptqa", "gptqar")  # GPTQ with act order (llm-compressor's default actorder: "static")
    if act_order:
        method, joint = "gptq", {**joint, "search_ranges": method == "gptqar"}
    bits, group = int(rest[0][1:]), int(rest[1][1:])
    _, result = one_shot_quantize(model, calibration, method=method, bits=bits, group_size=group, symmetric=True,
                                  act_order=act_order, damping=0.01, blocksize=128,
                                  calibration_batches=len(calibration), **joint)  # fmt: skip
    return result.summary()


def table() -> None:
    rows: dict[str, dict] = {}
    for line in open(RESULTS):
        r = json.loads(line)
        if not r.get("quick"):
            rows[(r["who"].split()[0], r["row"])] = r
    names = [r for r in ROWS]
    print(f"{'row':26s} {'ours':>9s} {'peer':>9s} {'ours/peer':>9s}")
    for name in names:
        ours, peer = rows.get(("lightning_compress", name)), rows.get(("llm-compressor", name))
        o = f"{ours['perplexity']:.2f}" if ours else "-"
        p = f"{peer['perplexity']:.2f}" if peer else "-"
        ratio = f"{ours['perplexity'] / peer['perplexity']:.3f}" if ours and peer else "-"
        print(f"{name:26s} {o:>9s} {p:>9s} {ratio:>9s}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", nargs="*", help=f"rows (default all): {', '.join(ROWS)}; or 'table'")
    parser.add_argument("--quick", action="store_true", help="2 calibration and 2 evaluation windows")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.rows == ["table"]:
        table()
        return
    torch.set_num_threads(args.threads)
    for row in args.rows or ROWS:
        if row not in ROWS:
            sys.exit(f"unknown row {row!r}; rows: {', '.join(ROWS)}")
        model, tokenizer = protocol.load()
        calibration, evaluation = protocol.windows(tokenizer)
        if args.quick:
            calibration, evaluation = calibration[:2], evaluation[:2]
        summary = compress(row, model, calibration)
        ppl = protocol.window_perplexity(model, evaluation)
        library = perplexity(model, evaluation).perplexity  # the library function agrees with the protocol's
        assert abs(library - ppl) <= 1e-3 * ppl, (library, ppl)
        record = {"who": "lightning_compress", "row": row, "perplexity": ppl, "summary": summary,
                  "torch": torch.__version__, "quick": args.quick, "date": datetime.date.today().isoformat(),
                  "command": " ".join(["accuracy.py", *sys.argv[1:]])}  # fmt: skip
        print(json.dumps(record), flush=True)
        if not args.quick:
            with open(RESULTS, "a") as f:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
