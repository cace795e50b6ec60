"""A student made by structured pruning of its teacher: the model builder of the prune-then-distil presets.

Example:
    >>> from lightning_compress.models import SmallCNN
    >>> teacher = SmallCNN()
    >>> batches = [(torch.randn(8, 1, 28, 28), torch.arange(8))]
    >>> pruned_student(teacher, batches, channels=0.5).features[0].out_channels
    8
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, Optional

import torch  # noqa: F401 - the doctest uses it
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import nn

from lightning_compress.channel_pruning import prune_channels
from lightning_compress.structured_pruning import check_max_batches, check_prune_fraction
from lightning_compress.teacher import network_of
from lightning_compress.transformer_pruning import prune_ffn_neurons, prune_heads

__all__ = ["pruned_student"]


def _batches(calibration: Any) -> Iterable[Any]:
    """The training batches of a data module (set up for fit if needed), or ``calibration`` itself."""
    loader = getattr(calibration, "train_dataloader", None)
    if not callable(loader):
        return calibration
    try:
        return loader()
    except Exception:  # noqa: BLE001 - a LightningDataModule that has not been set up yet
        calibration.setup("fit")
        return loader()


def pruned_student(
    teacher: nn.Module,
    calibration: Any,
    heads: float = 0.0,
    ffn_neurons: float = 0.0,
    channels: float = 0.0,
    max_batches: Optional[int] = 8,
    num_classes: Optional[int] = None,
) -> nn.Module:
    """Prunes a copy of ``teacher``: heads, then FFN neurons (BERT-family), or conv channels (ResNet, SmallCNN).

    Each step scores its units on the calibration batches (see
    :func:`~lightning_compress.transformer_pruning.prune_heads`,
    :func:`~lightning_compress.transformer_pruning.prune_ffn_neurons`,
    :func:`~lightning_compress.channel_pruning.prune_channels`) and logs its report.

    Args:
        teacher: The trained network (a ``ClassificationModule`` is unwrapped to its ``.model``); not modified.
        calibration: A data module (its ``train_dataloader()``, after ``setup("fit")`` if needed) or an iterable of
            batches.
        heads: Share of attention heads removed per layer, in [0, 1).
        ffn_neurons: Share of FFN neurons removed per layer, in [0, 1).
        channels: Share of inner conv channels removed per group, in [0, 1).
        max_batches: Calibration batches per step (``None``: all).
        num_classes: If given, must equal the teacher's output count (``lc-train`` passes the data set's).

    Returns:
        The pruned network, trainable (every parameter requires grad), in train mode.

    Raises:
        ValueError: For a fraction outside [0, 1), channels together with heads / neurons, an unsupported model, an
            empty calibration loader, or ``num_classes`` different from the teacher's label count.
    """
    fractions = {"heads": heads, "ffn_neurons": ffn_neurons, "channels": channels}
    for name, value in fractions.items():
        check_prune_fraction(value, name)
    check_max_batches(max_batches)
    if channels and (heads or ffn_neurons):
        raise ValueError(
            f"`channels` is for CNNs and `heads` / `ffn_neurons` for transformers; set one kind, got heads={heads}, "
            f"ffn_neurons={ffn_neurons}, channels={channels}"
        )
    model = network_of(teacher)
    labels = getattr(getattr(model, "config", None), "num_labels", None)
    if num_classes is not None and labels is not None and num_classes != labels:
        raise ValueError(f"`num_classes` must equal the teacher's config.num_labels={labels}, got {num_classes!r}")
    steps = [(prune_heads, heads), (prune_ffn_neurons, ffn_neurons), (prune_channels, channels)]
    for prune, fraction in steps:
        if fraction:
            model, report = prune(model, fraction, _batches(calibration), max_batches=max_batches)
            rank_zero_info(str(report))
    if model is network_of(teacher):  # nothing pruned: still hand back a trainable copy
        model = copy.deepcopy(model).requires_grad_(True)
    return model.train()
