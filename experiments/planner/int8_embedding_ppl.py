"""What an INT8 embedding would cost SmolLM2-135M in perplexity (the memory target's missing piece: the bf16 embedding
alone is 0.21x the model's bf16 weight bytes, so INT4 Linear layers reach only 0.439x against the 0.35x target).

The embedding (tied to the output head) is rounded to int8 symmetric per row (one fp32 scale per token: the layout an
INT8 embedding would ship, 49,152 x 576 bytes + 49,152 x 4) and de-quantized in place, so the perplexity is that of
an int8-stored embedding; the Linear layers stay fp32 here (the INT4 GPTQ cost is the planner's, +21.9 %). Perplexity
on the planner's evaluation windows of hamlet.txt (the last 12 disjoint 256-token windows), as ``lc-compress
--metric perplexity`` measures it. No timing.

Usage (about 2 min):
    .venv/bin/python experiments/planner/int8_embedding_ppl.py
"""

from __future__ import annotations

import torch

from lightning_compress.analysis.perplexity import perplexity
from lightning_compress.data.hamlet import hamlet_text
from lightning_compress.models import offline_smollm2_path
from lightning_compress.models.causal_lm import load_causal_lm
from lightning_compress.planner.language_model import bf16_weight_bytes, lm_windows, text_tokens


@torch.no_grad()
def int8_rows_(weight: torch.Tensor) -> int:
    """Round ``weight`` (V, D) to int8 per row in place (symmetric, scale absmax / 127); returns the bytes shipped."""
    scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
    weight.copy_(torch.clamp(torch.round(weight / scale), -127, 127) * scale)
    return weight.numel() + 4 * weight.shape[0]


def main() -> None:
    model, tokenizer = load_causal_lm(offline_smollm2_path(), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    model.eval()
    _, evaluation = lm_windows(text_tokens(tokenizer, hamlet_text()), 256, 16, 12)
    windows = torch.cat(evaluation)
    fp32 = perplexity(model, windows).perplexity
    embedding = model.get_input_embeddings().weight
    tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight is embedding
    shipped = int8_rows_(embedding)
    int8 = perplexity(model, windows).perplexity
    total = bf16_weight_bytes(model)
    print(f"fp32 perplexity {fp32:.3f}; embedding int8 per row (tied head: {tied}) {int8:.3f}"
          f" ({100 * (int8 / fp32 - 1):+.2f} %); embedding {shipped:,} bytes int8 + scales against"
          f" {2 * embedding.numel():,} in bf16 ({shipped / total:.3f}x / {2 * embedding.numel() / total:.3f}x the"
          f" model's bf16 weight bytes {total:,})")  # fmt: skip


if __name__ == "__main__":
    main()
