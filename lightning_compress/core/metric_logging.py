"""Sending a callback's measurements to every logger of the Trainer at the current optimizer step.

Example:
    >>> # in a callback hook: log_metrics(trainer, {"compress/sparsity": 0.5})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["log_metrics"]


def log_metrics(trainer: Any, metrics: Mapping[str, float]) -> None:
    """``logger.log_metrics(metrics, step=trainer.global_step)`` for every logger of ``trainer``.

    Callbacks log this way (not with ``LightningModule.log``) because they measure outside a training step: when masks
    change, or after ``fit``.
    """
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=trainer.global_step)
