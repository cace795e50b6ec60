"""Probe: can MiniLM's attention run in INT8 on this CPU (torchao 0.18's quantized-SDPA fusion)?

The INT8 MiniLM of `benchmark.py` spends a third of its time in fp32 attention: X86InductorQuantizer quantizes Linear
layers only. torchao 0.18 ships an Inductor pass (`torchao.prototype.inductor.fx_passes.qsdpa_fusion`) that rewrites
"dequantize q/k/v -> matmul -> scale + mask -> softmax -> quantize/dequantize -> matmul -> quantize" into one INT8
attention kernel. It needs the attention written as matmuls (Hugging Face `attn_implementation="eager"`), the matmul
inputs quantized (`set_function_type_qconfig(torch.matmul, ...)`), and a kernel: an Inductor C++ template that torchao
only offers on CPUs with AMX tiles; elsewhere the lowering falls back to the C++ op `torchao::qscaled_dot_product`,
which the torchao wheel does not build (no CPU kernel registered), so the compiled model cannot run.

This script exports MiniLM (random token ids, batch B x 128), quantizes it with PT2E twice (Linear only, as the
library does; Linear + attention matmuls), compiles both with freezing, and prints the fused-attention count, the
largest logit difference against fp32 and the median latency of each. Without AMX it says so and exits 0.

    .venv/bin/python experiments/qat/int8_attention_probe.py [--batch 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def amx_tiles() -> bool:
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check and check())


class Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def quantized(model: torch.nn.Module, batch: dict[str, torch.Tensor], attention: bool) -> torch.nn.Module:
    import torchao
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    if attention:
        quantizer.set_function_type_qconfig(torch.matmul, quantizer.get_global_quantization_config())
    prepared = prepare_pt2e(torch.export.export(model, (), batch).module(), quantizer)
    with torch.no_grad():
        for _ in range(4):
            prepared(**batch)
    converted = convert_pt2e(prepared)
    torchao.quantization.pt2e.move_exported_model_to_eval(converted)
    return converted


def timed(model: torch.nn.Module, batch: dict[str, torch.Tensor], attention: bool, repeats: int) -> tuple:
    from torch._dynamo.utils import counters
    from torch._inductor import config
    from torchao.prototype.inductor.fx_passes.qsdpa_fusion import _qsdpa_init, custom_pass

    counters.clear()
    with config.patch(freezing=True, post_grad_custom_pre_pass=custom_pass if attention else None), torch.no_grad():
        if attention:
            _qsdpa_init()
        compiled = torch.compile(model)
        out = compiled(**batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            compiled(**batch)
            times.append(time.perf_counter() - start)
    return out, statistics.median(times), counters["inductor"]["qsdpa_fuse_attention"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if not amx_tiles():
        print(
            "this CPU has no AMX tiles: torchao 0.18's INT8 attention kernel (an Inductor template) is offered only "
            "with AMX, and its fallback op has no CPU kernel in the wheel; nothing to measure here"
        )
        return
    from transformers import AutoModelForSequenceClassification

    from lightning_compress.models import offline_minilm_path

    torch.set_num_threads(args.threads)
    hf = AutoModelForSequenceClassification.from_pretrained(
        offline_minilm_path(), num_labels=2, attn_implementation="eager"
    )
    model = Logits(hf.eval())
    g = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(1000, 20000, (args.batch, 128), generator=g),
        "attention_mask": torch.ones(args.batch, 128, dtype=torch.long),
    }
    batch["attention_mask"][0, 96:] = 0  # one padded sentence, so the mask is not all ones
    with torch.no_grad():
        reference = model(**batch)
    for attention in (False, True):
        out, seconds, fused = timed(quantized(model, batch, attention), batch, attention, args.repeats)
        print(
            f"INT8 Linear{' + attention' if attention else ''}: {1000 * seconds:.1f} ms per batch of "
            f"{args.batch} x 128, fused attention blocks {fused}, max |logit - fp32| "
            f"{(out - reference).abs().max().item():.3f}"
        )


if __name__ == "__main__":
    main()
