"""Structured pruning of convolution channels in ResNet blocks and in :class:`~lightning_compress.models.SmallCNN`:
the inner channels are removed by slicing the weights, so the result is a narrower dense network.

A channel group is a conv and its batch norm that produce channels, and the layer that consumes them:

* torchvision ``BasicBlock``: ``conv1``/``bn1`` -> ``conv2`` (the block's inner width);
* torchvision ``Bottleneck``: ``conv1``/``bn1`` -> ``conv2`` and ``conv2``/``bn2`` -> ``conv3`` (two inner widths);
* ``SmallCNN``: the conv/BN of stage ``i`` -> the conv of stage ``i + 1``, or the first Linear of the head (through
  max-pool and flatten, ``side * side`` features per channel).

The residual widths (a block's input and output, the downsample path) are never touched, so every skip connection keeps
its shape. Importance is ``|dL/dgate|`` of a gate of 1.0 per channel on the consumer's input, summed over calibration
batches (:mod:`~lightning_compress.pruning.structured.unit_gates`); each group loses ``floor(fraction * channels)``
channels of lowest importance. The pruned network computes exactly what the original computes with those channels of the
consumer's input set to 0.

The result is the original's class with narrower layers (a ``ResNet`` stays a torchvision ``ResNet``). A
``state_dict`` alone does not fit a freshly built ResNet, whose widths come from its constructor: save it with
:func:`~lightning_compress.pruning.structured.serialization.save_pruned` (the base architecture, the channels kept per
group and checksummed safetensors weights) and reload it with ``load_pruned``, without pickle. (``torch.save(model)``
also works, but reading it back unpickles the file: ``weights_only=False``, for trusted files only.)

Example:
    >>> import torchvision
    >>> model = torchvision.models.resnet18(num_classes=10)
    >>> batches = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))]
    >>> small, report = prune_channels(model, 0.5, batches)
    >>> small.layer1[0].conv1.out_channels, small.layer1[0].conv2.in_channels, small.layer1[0].conv2.out_channels
    (32, 32, 64)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from lightning_compress.models.cnn import SmallCNN
from lightning_compress.pruning.structured.report import (
    BatchCounter,
    StructuredPruningReport,
    check_max_batches,
    check_prune_fraction,
    num_parameters,
)
from lightning_compress.pruning.structured.unit_gates import LossFn, UnitGate, gate_importance, units_to_keep

__all__ = ["ChannelGroup", "channel_gates", "channel_groups", "prune_channels", "remove_channels"]


@dataclass
class ChannelGroup:
    """Channels made by ``conv`` (and normalised by ``bn``) and read by ``consumer``.

    Attributes:
        conv: The producing convolution; its output channels are the units.
        bn: Its batch norm.
        consumer: The next ``Conv2d`` (input channels) or ``Linear`` (``features_per_channel`` consecutive inputs per
            channel, after flattening).
        features_per_channel: 1 for a conv consumer; ``H * W`` of the flattened map for a Linear one.
    """

    conv: nn.Conv2d
    bn: nn.BatchNorm2d
    consumer: Union[nn.Conv2d, nn.Linear]
    features_per_channel: int = 1

    @property
    def channels(self) -> int:
        """The number of channels (units) in the group."""
        return self.conv.out_channels


def _resnet_blocks() -> tuple[type | tuple[()], type | tuple[()]]:
    """torchvision's ResNet block classes; without torchvision no model holds them, so ``()``, which nothing is an
    instance of."""
    try:
        from torchvision.models.resnet import BasicBlock, Bottleneck
    except ModuleNotFoundError:
        return (), ()
    return BasicBlock, Bottleneck


def channel_groups(model: nn.Module) -> dict[str, ChannelGroup]:
    """The prunable channel groups of a ResNet (torchvision blocks, anywhere in ``model``) or a ``SmallCNN``.

    Names are the producing conv's qualified name (``"layer1.0.conv1"``, ``"features.0"``).

    Raises:
        ValueError: If ``model`` has neither, or a block uses grouped convolutions (ResNeXt).

    Example:
        >>> list(channel_groups(SmallCNN()))
        ['features.0', 'features.4']
    """
    groups: dict[str, ChannelGroup] = {}
    if isinstance(model, SmallCNN):
        convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
        for i, j in zip(convs, convs[1:] + [None]):
            conv, bn = model.features[i], model.features[i + 1]
            consumer = model.features[j] if j is not None else model.classifier[1]
            per_channel = 1 if j is not None else consumer.in_features // conv.out_channels
            groups[f"features.{i}"] = ChannelGroup(conv, bn, consumer, per_channel)
        return groups
    basic, bottleneck = _resnet_blocks()
    for name, block in model.named_modules():
        if isinstance(block, basic):
            pairs = [("conv1", "bn1", "conv2")]
        elif isinstance(block, bottleneck):
            pairs = [("conv1", "bn1", "conv2"), ("conv2", "bn2", "conv3")]
        else:
            continue
        for conv, bn, consumer in pairs:
            group = ChannelGroup(getattr(block, conv), getattr(block, bn), getattr(block, consumer))
            if group.conv.groups != 1 or group.consumer.groups != 1 or not isinstance(group.bn, nn.BatchNorm2d):
                raise ValueError(
                    f"block {name!r} has grouped convolutions or no BatchNorm2d; `prune_channels` handles ResNet "
                    "BasicBlock/Bottleneck with groups=1 and BatchNorm2d (not ResNeXt)"
                )
            groups[f"{name}.{conv}" if name else conv] = group
    if not groups:
        raise ValueError(
            "`model` must be a SmallCNN or hold torchvision ResNet BasicBlock/Bottleneck blocks (resnet18 ...,"
            f" resnet152, wide_resnet50_2, ...), got {type(model).__name__}"
        )
    return groups


def channel_gates(model: nn.Module) -> dict[str, UnitGate]:
    """A gate per channel of every group, on the consumer's input (``(B, C, H, W)``, or ``(B, C * H * W)`` for a
    Linear consumer)."""
    return {
        name: UnitGate(
            g.consumer, g.channels, g.features_per_channel, dim=1 if isinstance(g.consumer, nn.Conv2d) else -1
        )
        for name, g in channel_groups(model).items()
    }


def _conv_like(conv: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )


@torch.no_grad()
def _slice_group(group: ChannelGroup, index: Tensor) -> tuple[nn.Module, nn.Module, nn.Module]:
    """New (conv, bn, consumer) keeping the channels ``index``."""
    conv, bn, consumer = group.conv, group.bn, group.consumer
    index = index.to(conv.weight.device)
    new_conv = _conv_like(conv, conv.in_channels, len(index))
    new_conv.weight.copy_(conv.weight[index])
    if conv.bias is not None:
        new_conv.bias.copy_(conv.bias[index])
    new_bn = nn.BatchNorm2d(len(index), bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                            device=conv.weight.device, dtype=conv.weight.dtype)  # fmt: skip
    for attr in ("weight", "bias", "running_mean", "running_var"):
        if getattr(bn, attr) is not None:
            getattr(new_bn, attr).copy_(getattr(bn, attr)[index])
    if bn.num_batches_tracked is not None:
        new_bn.num_batches_tracked.copy_(bn.num_batches_tracked)
    if isinstance(consumer, nn.Conv2d):
        new_consumer: nn.Module = _conv_like(consumer, len(index), consumer.out_channels)
        new_consumer.weight.copy_(consumer.weight[:, index])
    else:
        per = group.features_per_channel
        columns = (index[:, None] * per + torch.arange(per, device=index.device)).flatten()
        new_consumer = nn.Linear(len(columns), consumer.out_features, consumer.bias is not None,
                                 device=consumer.weight.device, dtype=consumer.weight.dtype)  # fmt: skip
        new_consumer.weight.copy_(consumer.weight[:, columns])
    if consumer.bias is not None:
        new_consumer.bias.copy_(consumer.bias)
    for old, new in ((conv, new_conv), (bn, new_bn), (consumer, new_consumer)):
        new.train(old.training)
    return new_conv, new_bn, new_consumer


def remove_channels(model: nn.Module, keep: Mapping[str, Sequence[int]]) -> nn.Module:
    """A copy of ``model`` keeping only the given channels of each named group; ``model`` is not modified.

    Args:
        model: A ResNet (torchvision blocks) or a ``SmallCNN`` (see :func:`channel_groups`).
        keep: Group name -> indices of the channels to keep (at least one); groups not named are unchanged.

    Returns:
        The narrower model, of the original's class; every parameter requires grad (a student to fine-tune, even
        when ``model`` is a frozen teacher).

    Raises:
        ValueError: If ``model`` is unsupported, a group name is unknown, or an index list is empty, repeated or out
            of range.

    Example:
        >>> remove_channels(SmallCNN(), {"features.0": [0, 5, 7]}).features[4].in_channels
        3
    """
    pruned = copy.deepcopy(model).requires_grad_(True)  # a student, even when `model` is a frozen teacher
    groups = channel_groups(pruned)
    unknown = sorted(set(keep) - set(groups))
    if unknown:
        raise ValueError(f"`keep` names channel groups that do not exist: {unknown}; the groups are {sorted(groups)}")
    modules = dict(pruned.named_modules())
    names = {id(m): n for n, m in modules.items()}
    for name, indices in keep.items():
        group = groups[name]
        index = torch.as_tensor(list(indices), dtype=torch.long)
        n = group.channels
        if index.numel() == 0 or index.unique().numel() != index.numel() or index.min() < 0 or index.max() >= n:
            raise ValueError(
                f"`keep[{name!r}]` must be distinct channel indices in [0, {n - 1}], at least one,"
                f" got {list(indices)!r}"
            )
        new = _slice_group(group, index.sort().values)
        for old, replacement in zip((group.conv, group.bn, group.consumer), new):
            parent, _, child = names[id(old)].rpartition(".")
            setattr(pruned.get_submodule(parent), child, replacement)
        # a Bottleneck's conv2 is the consumer of one group and the producer of the next: keep the groups current
        for other in groups.values():
            if other.conv is group.consumer:
                other.conv = new[2]
            if other.consumer is group.conv:
                other.consumer = new[0]
        names.update({id(m): names[id(o)] for o, m in zip((group.conv, group.bn, group.consumer), new)})
        group.conv, group.bn, group.consumer = new  # type: ignore[assignment]
    return pruned


def prune_channels(
    model: nn.Module,
    fraction: float,
    dataloader: Iterable[Any],
    loss_fn: Optional[LossFn] = None,
    max_batches: Optional[int] = None,
) -> tuple[nn.Module, StructuredPruningReport]:
    """Removes ``floor(fraction * channels)`` channels of lowest importance from every channel group.

    Importance: ``|dL/dgate|`` of a gate of 1.0 per channel on the consumer's input, summed over calibration batches
    (batch norm in eval mode, with its running statistics).

    Args:
        model: A ResNet made of torchvision ``BasicBlock`` / ``Bottleneck`` blocks, or a ``SmallCNN``; not modified,
            so it can serve as the teacher of a
            :class:`~lightning_compress.distillation.distillation_module.DistillationModule` fine-tune.
        fraction: Share of each group's channels to remove, in [0, 1); ``0`` returns an unpruned copy.
        dataloader: Calibration batches: ``(images, labels)`` pairs, or anything ``loss_fn`` takes.
        loss_fn: ``(model, batch) -> scalar loss``; cross-entropy on the labels when omitted.
        max_batches: Use at most this many batches (all when ``None``).

    Returns:
        ``(pruned_model, report)``; the model is of the original's class, mode, dtype and device, every parameter
        requiring grad. Save it with
        :func:`~lightning_compress.pruning.structured.serialization.save_pruned` (see the module docstring).

    Raises:
        ValueError: If ``fraction`` is outside [0, 1), ``dataloader`` yields no batches, ``max_batches`` is not a
            positive int, or ``model`` is not supported.

    Example:
        >>> batches = [(torch.randn(8, 1, 28, 28), torch.arange(8))]
        >>> small, report = prune_channels(SmallCNN(), 0.25, batches)
        >>> small.features[0].out_channels, small.features[4].out_channels, small.classifier[1].in_features
        (12, 24, 1176)
    """
    fraction = check_prune_fraction(fraction)
    check_max_batches(max_batches)
    gates = channel_gates(model)
    counted = BatchCounter(dataloader)
    scores = gate_importance(model, gates, counted, loss_fn, max_batches)
    keep = {name: units_to_keep(score, fraction) for name, score in scores.items()}
    pruned = remove_channels(model, keep)
    kept = {name: index.tolist() for name, index in keep.items()}
    removed = {name: sorted(set(range(gates[name].units)) - set(kept[name])) for name in kept}
    report = StructuredPruningReport("channels", fraction, kept, removed, num_parameters(model), num_parameters(pruned),
                                     counted.count, scores)  # fmt: skip
    return pruned, report
