"""Token batches at one sequence length, for the planner's measurements of a BERT-style classifier.

A tokenised data module pads each batch to its own longest sentence, so the validation batches have many shapes
``(B, L)``; an INT8 candidate is compiled at a static shape (:class:`~lightning_compress.quantization.pt2e.FrozenInt8`)
and would compile again for each of them (tens of seconds each for MiniLM, then Dynamo's recompile limit). The planner
pads them all to the longest ``L`` instead: positions with ``attention_mask == 0`` are ignored by the attention, so the
logits of the real tokens do not change, and the candidates compile once (twice with a smaller last batch). The
latency is then that of a batch at this length: :func:`describe_inputs` says which.

Example:
    >>> a = {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    >>> b = {"input_ids": torch.ones(2, 5, dtype=torch.long), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    >>> [tuple(x["input_ids"].shape) for x in same_length([a, b])]
    [(2, 5), (2, 5)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["describe_inputs", "same_length"]


def _token_batch(batch: Any) -> bool:
    mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
    return isinstance(mask, Tensor) and mask.dim() == 2 and not mask.is_floating_point()


def same_length(batches: Sequence[Any]) -> list[Any]:
    """``batches`` with every ``(B, L)`` integer tensor of each dict batch padded on the right with zeros to the
    longest ``L`` (``attention_mask`` 0 on the padding), when every batch is a dict with an ``attention_mask``;
    otherwise ``batches`` unchanged (a list).

    Args:
        batches: Validation batches (``{"input_ids": (B, L), "attention_mask": (B, L), "labels": (B,), ...}``).

    Returns:
        The batches, each ``(B, L_max)`` (other entries, such as the labels, as they were).
    """
    batches = list(batches)
    if not batches or not all(_token_batch(b) for b in batches):
        return batches
    longest = max(int(b["attention_mask"].shape[1]) for b in batches)
    out = []
    for batch in batches:
        length = int(batch["attention_mask"].shape[1])
        padded = dict(batch)
        for key, value in batch.items():
            if (isinstance(value, Tensor) and value.dim() == 2 and not value.is_floating_point()
                    and value.shape[1] == length and length < longest):  # fmt: skip
                padded[key] = torch.nn.functional.pad(value, (0, longest - length), value=0)
        out.append(padded)
    return out


def describe_inputs(inputs: Any) -> str:
    """``"a tensor (32, 1, 28, 28)"`` or ``"input_ids (32, 61), attention_mask (32, 61)"``: what a latency is of."""
    if isinstance(inputs, Tensor):
        return f"a tensor {tuple(inputs.shape)}"
    if isinstance(inputs, Mapping):
        return ", ".join(f"{k} {tuple(v.shape)}" for k, v in inputs.items() if isinstance(v, Tensor))
    if isinstance(inputs, (tuple, list)):
        return ", ".join(describe_inputs(v) for v in inputs)
    return type(inputs).__name__
