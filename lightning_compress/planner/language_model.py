"""What the planner needs for a causal language model: the perplexity metric's data (disjoint token windows of one
text: the first windows calibrate, the last ones evaluate), and the memory target's arithmetic (the bytes of a
candidate's tensors as it would ship, against the original model's bf16 weight bytes).

Weight bytes are counted from the model's ``state_dict`` with every shared tensor once (a tied output head is one
tensor): INT4 weight-only layers count their packed codes (two per byte), scales and zeros, the float rest its own
dtype. The reference is the same tensors of the original model at 2 bytes per floating element (bf16), so the fp32
model itself is 2.0x and a ``weight_bytes_ratio`` of 0.35 asks for at most 0.35x the bf16 checkpoint.

Example:
    >>> net = torch.nn.Linear(4, 2)
    >>> weight_bytes(net), bf16_weight_bytes(net)  # (8 + 2) float32 / bf16 elements
    (40, 20)
    >>> train, val = lm_windows(torch.arange(100), window=10, calibration_windows=3, eval_windows=2)
    >>> len(train), val[0].tolist()[0][:3]
    (3, [80, 81, 82])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_compress.core.validation import ArgumentErrors

__all__ = ["bf16_weight_bytes", "is_causal_lm", "lm_windows", "text_tokens", "weight_bytes"]


def is_causal_lm(model: nn.Module) -> bool:
    """A Hugging Face causal language model (``...ForCausalLM`` with a ``generate`` method)."""
    return type(model).__name__.endswith("ForCausalLM") and hasattr(model, "generate")


def _unique_tensors(model: nn.Module) -> list[Tensor]:
    seen, out = set(), []
    for tensor in model.state_dict().values():
        if not isinstance(tensor, Tensor) or tensor.numel() == 0:
            continue
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            out.append(tensor)
    return out


def weight_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s state dict as it would ship, each shared tensor once.

    Raises:
        ValueError: If the model holds no tensor.
    """
    tensors = _unique_tensors(model)
    if not tensors:
        raise ValueError(f"weight_bytes: {type(model).__name__} holds no tensor in its state_dict")
    return sum(t.numel() * t.element_size() for t in tensors)


def bf16_weight_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s state dict with every floating tensor in bf16 (2 bytes an element), each shared tensor
    once: the reference of a ``weight_bytes_ratio`` target."""
    return sum(t.numel() * (2 if t.is_floating_point() else t.element_size()) for t in _unique_tensors(model))


def lm_windows(tokens: Tensor, window: int = 256, calibration_windows: int = 16, eval_windows: int = 12,
               batch_size: int = 4) -> tuple[list[Tensor], list[Tensor]]:  # fmt: skip
    """Disjoint windows of a token stream as the planner's ``(train batches, validation batches)``.

    Args:
        tokens: ``(T,)`` token ids.
        window: Tokens per window, >= 2.
        calibration_windows: The first windows, one ``(1, window)`` batch each (GPTQ / AWQ calibration).
        eval_windows: The last windows, in ``(<= batch_size, window)`` batches (the perplexity of every candidate).
        batch_size: Evaluation windows per batch.

    Returns:
        ``(calibration batches, evaluation batches)``, long tensors.

    Raises:
        ValueError: For a bad argument (all listed), or a stream with fewer whole windows than the two sets ask
            (they must not overlap).
    """
    errors = ArgumentErrors("lm_windows: ")
    errors.int("window", window, minimum=2)
    errors.int("calibration_windows", calibration_windows)
    errors.int("eval_windows", eval_windows)
    errors.int("batch_size", batch_size)
    ok = isinstance(tokens, Tensor) and tokens.dim() == 1 and not tokens.is_floating_point()
    errors.require(ok, "tokens", "an integer tensor (T,)", getattr(tokens, "shape", tokens))
    errors.raise_if_any()
    whole = tokens.numel() // window
    if calibration_windows + eval_windows > whole:
        raise ValueError(
            f"the text holds {whole} whole windows of {window} tokens ({tokens.numel()} tokens): fewer than"
            f" {calibration_windows} calibration + {eval_windows} evaluation windows (they must not overlap)"
        )
    rows = tokens[: whole * window].view(whole, window).long()
    calibration = [rows[i : i + 1] for i in range(calibration_windows)]
    evaluation = rows[whole - eval_windows :]
    return calibration, list(evaluation.split(batch_size))


def text_tokens(tokenizer: Any, text: str) -> Tensor:
    """``(T,)`` token ids of ``text`` (no special tokens)."""
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
