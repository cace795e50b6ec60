"""Learning-rate warm-up followed by a linear, cosine or constant decay, keyed on optimizer steps."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from lightning_compress.core.validation import ArgumentErrors, is_number

__all__ = ["warmup_factor", "warmup_lr"]

_DECAYS = ("linear", "cosine", "constant")


def warmup_factor(step: int, total_steps: int, warmup_steps: int, decay: str = "linear") -> float:
    """The learning-rate multiplier at an optimizer step.

    Rises linearly from ``1/(warmup_steps+1)`` to 1 over ``warmup_steps``, then decays to 0 at ``total_steps``
    (``linear``, ``cosine``) or stays at 1 (``constant``).

    Example:
        >>> [round(warmup_factor(s, 10, 2), 3) for s in (0, 1, 2, 6, 10)]
        [0.333, 0.667, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if decay == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if decay == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_lr(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.0, decay: str = "linear"
) -> LambdaLR:
    """A ``LambdaLR`` with warm-up then decay; step it every optimizer step (``interval="step"``).

    Args:
        optimizer: the optimizer to schedule.
        total_steps: optimizer steps of the whole run (``ClassificationModule`` passes the trainer's).
        warmup: warm-up length, a fraction of ``total_steps`` when below 1, else a step count.
        decay: ``"linear"``, ``"cosine"`` or ``"constant"``.

    Raises:
        ValueError: an ``optimizer`` that is not a torch optimizer, an unknown ``decay``, a ``warmup`` that is not a
            number >= 0, or a ``total_steps`` that is not an int >= 1 (every problem in one message).

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = warmup_lr(opt, total_steps=10, warmup=0.2, decay="cosine")
        >>> opt.param_groups[0]["lr"]
        0.3333333333333333
    """
    errors = ArgumentErrors()
    if not isinstance(optimizer, torch.optim.Optimizer):
        errors.add(f"`optimizer` must be a torch.optim.Optimizer, got a {type(optimizer).__name__}")
    errors.one_of("decay", decay, _DECAYS)
    errors.require(
        is_number(warmup) and warmup >= 0, "warmup", "a number >= 0 (a fraction below 1 or a step count)", warmup
    )
    errors.int("total_steps", total_steps)
    errors.raise_if_any()
    warmup_steps = int(round(warmup * total_steps)) if warmup < 1 else int(warmup)
    return LambdaLR(optimizer, lambda step: warmup_factor(step, total_steps, warmup_steps, decay))
