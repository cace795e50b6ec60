"""Perplexity of a causal language model on a token stream, over sliding windows.

The stream is cut into windows of ``window`` tokens that start every ``stride`` tokens. Each window is one forward
pass; the first ``window - stride`` tokens of every window after the first are context only (their predictions were
already counted by the window before), so every token of the stream after the first is predicted exactly once.
With ``stride == window`` (the default) the windows are disjoint and every window's first token is context only.
Perplexity is ``exp`` of the mean negative log-likelihood over the counted tokens, accumulated in float64.

Any model works whose ``forward(input_ids)`` returns the logits ``(B, L, vocab)`` (a tensor, or an object with a
``logits`` attribute, as a Hugging Face causal LM returns): nothing Hugging Face-specific is needed.

Example:
    >>> torch.manual_seed(0)
    >>> lm = torch.nn.Sequential(torch.nn.Embedding(10, 10))  # logits = an embedding of the current token
    >>> tokens = torch.randint(0, 10, (100,))
    >>> ppl = perplexity(lm, tokens, window=20)
    >>> 1.0 < ppl.perplexity, ppl.tokens
    (True, 95)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_compress.core.validation import ArgumentErrors, is_int

__all__ = ["Perplexity", "perplexity", "token_windows"]


@dataclass(frozen=True)
class Perplexity:
    """The result of :func:`perplexity`.

    Attributes:
        perplexity: ``exp(nll)``.
        nll: Mean negative log-likelihood per counted token (nats).
        tokens: Tokens whose prediction was counted.
        windows: Forward passes.
    """

    perplexity: float
    nll: float
    tokens: int
    windows: int


def token_windows(tokens: Tensor, window: int, start: int = 0, count: Optional[int] = None) -> Tensor:
    """Disjoint windows of a token stream, one per row: window ``i`` is ``tokens[(start + i) * window : ...]``.

    Args:
        tokens: ``(T,)`` (or ``(1, T)``) token ids.
        window: Tokens per window, >= 1.
        start: Index of the first window (negative: counted from the last whole window, ``-12`` gives the last 12).
        count: Windows to take (default: every whole window from ``start`` on).

    Returns:
        ``(count, window)``, a view of ``tokens``.

    Raises:
        ValueError: If ``window`` or ``count`` is not a positive int, or the stream holds fewer windows than asked.

    Example:
        >>> token_windows(torch.arange(10), 3, start=-2).tolist()
        [[3, 4, 5], [6, 7, 8]]
    """
    errors = ArgumentErrors()
    errors.int("window", window)
    errors.int("count", count, optional=True)
    errors.require(is_int(start), "start", "an int", start)
    errors.require(tokens.dim() == 1 or (tokens.dim() == 2 and tokens.shape[0] == 1), "tokens", "of shape (T,)"
                   " or (1, T)", tuple(tokens.shape))  # fmt: skip
    errors.raise_if_any()
    flat = tokens.reshape(-1)
    whole = flat.numel() // window
    first = start + whole if start < 0 else start
    last = whole if count is None else first + count
    if first < 0 or last > whole or last <= first:
        raise ValueError(
            f"the stream of {flat.numel()} tokens holds {whole} whole windows of {window}; windows"
            f" {start}..{'end' if count is None else start + count} were asked for"
        )
    return flat[first * window : last * window].view(-1, window)


def _logits(output: Any) -> Tensor:
    logits = getattr(output, "logits", output)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if not isinstance(logits, Tensor) or logits.dim() != 3:
        raise TypeError(
            "the model must return logits of shape (B, L, vocab) (a tensor or an object with `.logits`), got"
            f" {type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}"
        )
    return logits


@torch.no_grad()
def perplexity(
    model: nn.Module,
    tokens: Tensor,
    window: int = 256,
    stride: Optional[int] = None,
    batch_size: int = 1,
    max_windows: Optional[int] = None,
) -> Perplexity:
    """Perplexity of ``model`` on the token stream ``tokens``, over sliding windows.

    Args:
        model: A causal LM: ``model(input_ids)`` gives logits ``(B, L, vocab)`` for ``input_ids`` ``(B, L)`` (long).
            Run in eval mode; its mode is restored afterwards.
        tokens: ``(T,)`` token ids, or ``(N, L)`` windows already cut (each row scored on its own, as with
            ``window=L``, ``stride=L`` over every row).
        window: Tokens per forward pass, >= 2.
        stride: Tokens between window starts, 1..``window`` (default ``window``: disjoint windows).
        batch_size: Windows per forward pass, >= 1 (windows of equal length only; the last, shorter one alone).
        max_windows: Score only the first windows (None: all).

    Returns:
        A :class:`Perplexity`.

    Raises:
        ValueError: For a bad argument (every problem listed), or a stream shorter than 2 tokens.
        TypeError: If the model does not return logits of shape ``(B, L, vocab)``.

    Example:
        >>> lm = torch.nn.Embedding(5, 5)
        >>> round(perplexity(lm, torch.zeros(2, 8, dtype=torch.long), window=8).tokens)
        14
    """
    errors = ArgumentErrors()
    errors.int("window", window, minimum=2)
    errors.int("stride", stride, optional=True)
    if is_int(stride) and is_int(window):
        errors.require(stride <= window, "stride", f"<= window={window}", stride)
    errors.int("batch_size", batch_size)
    errors.int("max_windows", max_windows, optional=True)
    errors.require(isinstance(model, nn.Module), "model", "an nn.Module", type(model).__name__)
    errors.require(isinstance(tokens, Tensor) and tokens.dim() in (1, 2) and not tokens.is_floating_point(), "tokens",
                   "an integer tensor (T,) or (N, L)", getattr(tokens, "shape", tokens))  # fmt: skip
    errors.raise_if_any()
    param = next(model.parameters(), None)
    device = param.device if param is not None else tokens.device
    if tokens.dim() == 2:
        chunks = [(row, 1) for row in tokens]  # (window, first counted target position)
    else:
        stride = window if stride is None else stride
        if tokens.numel() < 2:
            raise ValueError(f"`tokens` must hold at least 2 tokens, got {tokens.numel()}")
        chunks = []
        begin, counted_to = 0, 1  # counted_to: the first token whose prediction is not counted yet
        while counted_to < tokens.numel():
            end = min(begin + window, tokens.numel())
            chunks.append((tokens[begin:end], max(counted_to - begin, 1)))
            counted_to = end
            begin += stride
    if max_windows is not None:
        chunks = chunks[:max_windows]
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        i = 0
        while i < len(chunks):
            group = [chunks[i]]
            while len(group) < batch_size and i + len(group) < len(chunks):
                nxt = chunks[i + len(group)]
                if nxt[0].numel() != group[0][0].numel() or nxt[1] != group[0][1]:
                    break
                group.append(nxt)
            i += len(group)
            ids = torch.stack([g[0] for g in group]).to(device=device, dtype=torch.long)
            first = group[0][1]
            logits = _logits(model(ids))
            pred = logits[:, first - 1 : -1].float()
            target = ids[:, first:]
            nll = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="sum")
            total += float(nll)
            count += target.numel()
    finally:
        model.train(was_training)
    nll = total / count
    return Perplexity(perplexity=math.exp(nll), nll=nll, tokens=count, windows=len(chunks))
