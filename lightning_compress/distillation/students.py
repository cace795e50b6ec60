"""Students built from a teacher: a Hugging Face model keeping some of the teacher's layers, a narrower SmallCNN, or
the teacher itself made smaller by structured pruning (the model builder of the prune-then-distil presets).

Example:
    >>> teacher = SmallCNN(channels=(64, 128), hidden=256)
    >>> student = small_cnn_student(teacher, channels=(8, 16), hidden=32)
    >>> sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters()) // 20
    True
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Optional

import torch  # noqa: F401 - the doctests use it
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import nn

from lightning_compress.core.target import find_network
from lightning_compress.models.cnn import SmallCNN
from lightning_compress.pruning.structured.channels import prune_channels
from lightning_compress.pruning.structured.report import check_max_batches, check_prune_fraction
from lightning_compress.pruning.structured.transformer import prune_ffn_neurons, prune_heads

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["layer_subset_student", "pruned_student", "small_cnn_student", "student_layers"]


def student_layers(num_layers: int, layers: Optional[Sequence[int]] = None, every: Optional[int] = None) -> list[int]:
    """The teacher layers a student keeps: an explicit list, or every ``every``-th layer ending with the top one.

    ``every=k`` keeps layers ``k-1, 2k-1, ...``: the top layer, whose output the pooler and classifier were trained on,
    is always kept (6 layers, ``every=2``: ``[1, 3, 5]``; ``every=3``: ``[2, 5]``).

    Raises:
        ValueError: If both or neither of ``layers`` / ``every`` are given, or an index is out of range, repeated or
            out of order.

    Example:
        >>> student_layers(6, every=2), student_layers(6, layers=[0, 5])
        ([1, 3, 5], [0, 5])
    """
    if (layers is None) == (every is None):
        raise ValueError(f"give exactly one of `layers` or `every`, got layers={layers!r}, every={every!r}")
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= num_layers:
            raise ValueError(f"`every` must be an int in [1, {num_layers}] (the teacher's layer count), got {every!r}")
        return list(range(every - 1, num_layers, every))
    chosen = list(layers or [])
    valid = all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < num_layers for i in chosen)
    if not chosen or not valid or chosen != sorted(set(chosen)):
        raise ValueError(
            f"`layers` must be increasing, distinct layer indices in [0, {num_layers - 1}], got {layers!r}"
        )
    return chosen


def _layer_list(model: nn.Module, num_layers: int) -> str:
    """The qualified name of the model's ``nn.ModuleList`` of ``num_layers`` transformer layers."""
    found = [name for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == num_layers]
    if len(found) != 1:
        raise ValueError(
            f"{type(model).__name__} must hold exactly one nn.ModuleList of config.num_hidden_layers={num_layers} "
            f"layers to choose from, found {found or 'none'}"
        )
    return found[0]


def layer_subset_student(
    teacher: PreTrainedModel,
    layers: Optional[Sequence[int]] = None,
    every: Optional[int] = None,
    num_classes: Optional[int] = None,
) -> PreTrainedModel:
    """A shallower copy of a Hugging Face model that keeps some of its layers, with their weights (DistilBERT-style).

    The student has the teacher's class and configuration with ``num_hidden_layers = len(layers)``; the embeddings,
    the chosen layers (in order), the pooler and the classifier are copied from the teacher, so a copied layer computes
    exactly what it did in the teacher. Works for models whose layers sit in one ``nn.ModuleList`` of
    ``config.num_hidden_layers`` entries (BERT, RoBERTa, DistilBERT, MiniLM, ...).

    Args:
        teacher: A Hugging Face model (e.g. ``AutoModelForSequenceClassification``); not modified.
        layers: Teacher layer indices to keep, increasing.
        every: Keep every ``every``-th layer instead (see :func:`student_layers`).
        num_classes: If given, must equal the teacher's ``config.num_labels`` (``lc-train`` passes the data set's).

    Returns:
        The student, in the teacher's dtype, on the CPU, in train mode (dropout on; a loaded teacher is in eval mode).

    Raises:
        ValueError: For bad ``layers`` / ``every``, a label count that differs from the teacher's, a ``teacher`` that
            is not a Hugging Face model, or a model whose layers cannot be found.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> config = BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
        ...                     vocab_size=100)
        >>> layer_subset_student(BertForSequenceClassification(config), every=2).config.num_hidden_layers
        2
    """
    config = getattr(teacher, "config", None)
    if not isinstance(teacher, nn.Module) or getattr(config, "num_hidden_layers", None) is None:
        raise ValueError(
            "`teacher` must be a Hugging Face model whose config has num_hidden_layers (BERT, RoBERTa, MiniLM, ...),"
            f" got a {type(teacher).__name__}"
        )
    num_layers = int(config.num_hidden_layers)
    chosen = student_layers(num_layers, layers, every)
    if num_classes is not None and num_classes != config.num_labels:
        raise ValueError(
            f"`num_classes` must equal the teacher's label count config.num_labels={config.num_labels}, got "
            f"{num_classes!r}"
        )
    prefix = _layer_list(teacher, num_layers) + "."
    student_config = copy.deepcopy(config)
    student_config.num_hidden_layers = len(chosen)
    layer_types = getattr(student_config, "layer_types", None)
    if isinstance(layer_types, (list, tuple)) and len(layer_types) == num_layers:
        student_config.layer_types = [layer_types[i] for i in chosen]
    student = type(teacher)(student_config)

    position = {old: new for new, old in enumerate(chosen)}
    state = {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix):
            index, _, rest = key[len(prefix) :].partition(".")
            if int(index) not in position:
                continue
            key = f"{prefix}{position[int(index)]}.{rest}"
        state[key] = value.detach().clone()
    student.load_state_dict(state, strict=True)
    return student.to(teacher.dtype).train()


def small_cnn_student(teacher: SmallCNN, channels: Sequence[int] = (8, 16), hidden: int = 32) -> SmallCNN:
    """A new, randomly initialised :class:`~lightning_compress.models.SmallCNN` with the teacher's input channels,
    image size, class count and dropout, and the given (narrower) ``channels`` and ``hidden`` width.

    Args:
        teacher: The teacher CNN.
        channels: Output channels of each conv stage of the student (as many stages as the teacher has, or any other
            count that divides the image size).
        hidden: Width of the student's hidden linear layer.

    Raises:
        TypeError: If ``teacher`` is not a SmallCNN.
        ValueError: Bad ``channels`` / ``hidden`` (from SmallCNN).

    Example:
        >>> small_cnn_student(SmallCNN(), channels=(4, 8), hidden=16).classifier[-1].out_features
        10
    """
    if not isinstance(teacher, SmallCNN):
        raise TypeError(f"`teacher` must be a SmallCNN, got {type(teacher).__name__}")
    first_conv: nn.Conv2d = teacher.features[0]
    flatten_in: nn.Linear = teacher.classifier[1]
    last: nn.Linear = teacher.classifier[-1]
    dropout: nn.Dropout = teacher.classifier[3]
    stages = sum(isinstance(m, nn.Conv2d) for m in teacher.features)
    side = math.isqrt(flatten_in.in_features // teacher.features[-4].out_channels)
    return SmallCNN(
        in_channels=first_conv.in_channels,
        num_classes=last.out_features,
        channels=channels,
        hidden=hidden,
        image_size=side * 2**stages,
        dropout=dropout.p,
    )


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
    :func:`~lightning_compress.pruning.structured.transformer.prune_heads`,
    :func:`~lightning_compress.pruning.structured.transformer.prune_ffn_neurons`,
    :func:`~lightning_compress.pruning.structured.channels.prune_channels`) and logs its report.

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
        ValueError: For a fraction outside [0, 1), channels together with heads / neurons, an unsupported model, a
            ``calibration`` that is neither a data module nor an iterable, an empty calibration loader, or
            ``num_classes`` different from the teacher's label count.
    """
    if not isinstance(teacher, nn.Module):
        raise ValueError(f"`teacher` must be an nn.Module (the trained network), got a {type(teacher).__name__}")
    if isinstance(calibration, (str, bytes)) or not (
        callable(getattr(calibration, "train_dataloader", None)) or hasattr(calibration, "__iter__")
    ):
        raise ValueError(
            "`calibration` must be a data module (its train_dataloader is used) or an iterable of batches,"
            f" got {type(calibration).__name__}"
        )
    fractions = {"heads": heads, "ffn_neurons": ffn_neurons, "channels": channels}
    for name, value in fractions.items():
        check_prune_fraction(value, name)
    check_max_batches(max_batches)
    if channels and (heads or ffn_neurons):
        raise ValueError(
            f"`channels` is for CNNs and `heads` / `ffn_neurons` for transformers; set one kind, got heads={heads}, "
            f"ffn_neurons={ffn_neurons}, channels={channels}"
        )
    model = find_network(teacher, strict=False)[0]
    labels = getattr(getattr(model, "config", None), "num_labels", None)
    if num_classes is not None and labels is not None and num_classes != labels:
        raise ValueError(f"`num_classes` must equal the teacher's config.num_labels={labels}, got {num_classes!r}")
    steps = [(prune_heads, heads), (prune_ffn_neurons, ffn_neurons), (prune_channels, channels)]
    for prune, fraction in steps:
        if fraction:
            model, report = prune(model, fraction, _batches(calibration), max_batches=max_batches)
            rank_zero_info(str(report))
    if model is find_network(teacher, strict=False)[0]:  # nothing pruned: still hand back a trainable copy
        model = copy.deepcopy(model).requires_grad_(True)
    return model.train()
