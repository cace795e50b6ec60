"""Is our GPTQ the peer's algorithm? Block 0 of SmolLM2 (its inputs are the dense model's in both pipelines), the same
weights and Hessians (16 calibration windows), quantized W4 g64 by our ``gptq_quantize(static_groups=True)`` and
by llm-compressor 0.14's own ``quantize_weight`` (min-max group scales from the original weights, as its memoryless
min-max observer gives them), then compared code by code. No timings.

    .venv/bin/python experiments/one_shot_quantization/same_layer.py ours        # W, H and ours -> .cache/same_layer
    .venv-peer/bin/python experiments/one_shot_quantization/same_layer.py peer   # the peer's on the same W, H
    .venv/bin/python experiments/one_shot_quantization/same_layer.py compare
"""

from __future__ import annotations

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, ".cache", "same_layer")
BITS, GROUP = 4, 64


def ours() -> None:
    sys.path.insert(0, HERE)
    import protocol

    from lightning_compress.pruning.one_shot.calibration import InputStatistics
    from lightning_compress.quantization.weight_only.gptq import gptq_quantize

    model, tokenizer = protocol.load()
    calibration, _ = protocol.windows(tokenizer)
    names = [n for n, m in model.named_modules() if n.startswith("model.layers.0.") and isinstance(m, torch.nn.Linear)]
    stats = {n: InputStatistics(model.get_submodule(n), hessian=True) for n in names}
    with torch.no_grad():
        for row in calibration:
            model(row[None])
    out = {}
    for n in names:
        stats[n].remove()
        w, h = model.get_submodule(n).weight.detach().clone(), stats[n].hessian().clone()
        out[n] = {"w": w, "h": h, "static": gptq_quantize(w, h, BITS, GROUP, static_groups=True).weight,
                  "dynamic": gptq_quantize(w, h, BITS, GROUP).weight}  # fmt: skip
    os.makedirs(OUT, exist_ok=True)
    torch.save(out, os.path.join(OUT, "ours.pt"))


def peer() -> None:
    from compressed_tensors.quantization import QuantizationArgs
    from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight

    args = QuantizationArgs(num_bits=BITS, type="int", symmetric=True, strategy="group", group_size=GROUP)
    out = {}
    for n, d in torch.load(os.path.join(OUT, "ours.pt")).items():
        w, h = d["w"].float(), d["h"].float()
        g = w.reshape(w.shape[0], -1, GROUP)
        scale = torch.maximum(-g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)) / ((2**BITS - 1) / 2)
        zero = torch.zeros_like(scale, dtype=torch.int8)
        q, _, _ = quantize_weight(w[None].clone(), h[None].clone(), scale[None], zero[None], None, args, 128, 0.01)
        out[n] = q[0]
    torch.save(out, os.path.join(OUT, "peer.pt"))


def compare() -> None:
    peer_w = torch.load(os.path.join(OUT, "peer.pt"))
    for n, d in torch.load(os.path.join(OUT, "ours.pt")).items():
        w, h, p = d["w"].float(), d["h"], peer_w[n].float()

        def err(q: torch.Tensor) -> float:
            e = w - q
            return float(torch.einsum("ri,ij,rj->", e, h, e) / torch.einsum("ri,ij,rj->", w, h, w))

        print(f"{n:34s} weights differing from the peer's: {float((p != d['static']).float().mean()):.4%}"
              f"  output error: peer {err(p):.4%}, ours static {err(d['static']):.4%},"
              f" ours dynamic {err(d['dynamic']):.4%}")  # fmt: skip


if __name__ == "__main__":
    {"ours": ours, "peer": peer, "compare": compare}[sys.argv[1]]()
