"""Conv channel pruning: the narrower ResNet / SmallCNN equals the original with those channels zeroed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from lightning_compress.models import SmallCNN
from lightning_compress.pruning.structured.channels import (
    channel_gates,
    channel_groups,
    prune_channels,
    remove_channels,
)
from lightning_compress.pruning.structured.report import num_parameters
from lightning_compress.pruning.structured.serialization import load_pruned, save_pruned
from lightning_compress.pruning.structured.unit_gates import gated


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial batch-norm statistics and affine parameters, so that a removed channel would be noticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return randomise_bn(torchvision.models.resnet18(num_classes=10))


def tiny_bottleneck_resnet() -> nn.Module:
    torch.manual_seed(0)
    return randomise_bn(ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10, width_per_group=16))


def images(seed: int = 1, n: int = 2, side: int = 32, channels: int = 3) -> torch.Tensor:
    return torch.randn(n, channels, side, side, generator=torch.Generator().manual_seed(seed))


def batches(n: int = 2, side: int = 32, channels: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images(10 + i, 4, side, channels), torch.arange(4) % 10) for i in range(n)]


@torch.no_grad()
def zero_channels(model: nn.Module, removed: dict[str, list[int]]) -> nn.Module:
    """The original with each removed channel's batch-norm output set to 0 (scale and shift 0): after ReLU (and
    max-pool) the consumer reads exactly 0 there."""
    masked = copy.deepcopy(model)
    groups = channel_groups(masked)
    for name, channels in removed.items():
        groups[name].bn.weight[channels] = 0
        groups[name].bn.bias[channels] = 0
    return masked


def removed_of(groups: dict[str, list[int]], keep: dict[str, list[int]], model: nn.Module) -> dict[str, list[int]]:
    sizes = {name: g.channels for name, g in channel_groups(model).items()}
    return {name: sorted(set(range(sizes[name])) - set(k)) for name, k in keep.items()}


@torch.no_grad()
def test_resnet18_sliced_equals_zeroed_and_keeps_residual_widths() -> None:
    model = resnet18()
    keep = {"layer1.0.conv1": list(range(0, 64, 3)), "layer2.1.conv1": list(range(100)), "layer4.0.conv1": [5, 7]}
    small = remove_channels(model, keep)
    x = images()
    expected = zero_channels(model, removed_of({}, keep, model))(x)
    torch.testing.assert_close(small(x), expected, rtol=1e-5, atol=1e-5)
    assert small.layer1[0].conv1.out_channels == 22 and small.layer1[0].conv2.in_channels == 22
    assert small.layer1[0].bn1.num_features == 22 and small.layer1[0].bn1.running_mean.shape == (22,)
    for name, block in small.named_modules():  # outer (residual) widths untouched
        if isinstance(block, torchvision.models.resnet.BasicBlock):
            original = model.get_submodule(name)
            assert block.conv2.out_channels == original.conv2.out_channels
            assert block.conv1.in_channels == original.conv1.in_channels
    # per channel: a conv1 filter (in x 3 x 3), a BN scale and shift, a conv2 input slice (out x 3 x 3)
    removed = 42 * (64 * 9 + 2 + 64 * 9) + 28 * (128 * 9 + 2 + 128 * 9) + 510 * (256 * 9 + 2 + 512 * 9)
    assert num_parameters(model) - num_parameters(small) == removed


@torch.no_grad()
def test_bottleneck_both_inner_widths() -> None:
    model = tiny_bottleneck_resnet()
    assert len(channel_groups(model)) == 8  # conv1 -> conv2 and conv2 -> conv3 in each of four blocks
    keep = {"layer1.0.conv1": [0, 3, 7, 9], "layer1.0.conv2": list(range(8)), "layer3.0.conv2": [1, 2, 30]}
    small = remove_channels(model, keep)
    assert small.layer1[0].conv2.weight.shape == (8, 4, 3, 3) and small.layer1[0].conv3.in_channels == 8
    x = images()
    torch.testing.assert_close(small(x), zero_channels(model, removed_of({}, keep, model))(x), rtol=1e-5, atol=1e-5)


def test_prune_channels_matches_gated_original_and_reloads_without_pickle(tmp_path: Path) -> None:
    model = resnet18()
    small, report = prune_channels(model, 0.5, batches())
    assert report.kind == "channels" and report.batches == 2 and len(report.kept) == 8
    assert all(len(k) == len(r) for k, r in zip(report.kept.values(), report.removed.values()))
    assert report.params_after < 0.6 * report.params_before
    x = images()
    gates = channel_gates(model)
    for name, removed in report.removed.items():
        gates[name].values[removed] = 0.0
    with torch.no_grad(), gated(gates.values()):
        masked = model(x)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(small(x), zero_channels(model, report.removed)(x), rtol=1e-5, atol=1e-5)
    save_pruned(small, tmp_path / "small")
    assert sorted(p.name for p in (tmp_path / "small").iterdir()) == ["model.safetensors", "structure.json"]
    reloaded = load_pruned(tmp_path / "small")
    assert type(reloaded) is ResNet and not reloaded.training
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), small(x), rtol=0, atol=0)


@torch.no_grad()
def test_small_cnn_including_the_flattened_head() -> None:
    torch.manual_seed(0)
    model = randomise_bn(SmallCNN(channels=(8, 16), hidden=32))
    data = batches(2, side=28, channels=1)
    small, report = prune_channels(model, 0.25, data)
    assert small.features[0].out_channels == 6 and small.features[4].in_channels == 6
    assert small.features[4].out_channels == 12 and small.classifier[1].in_features == 12 * 7 * 7
    x = images(side=28, channels=1)
    torch.testing.assert_close(small(x), zero_channels(model, report.removed)(x), rtol=1e-5, atol=1e-5)


def test_a_channel_that_does_nothing_is_pruned_first() -> None:
    torch.manual_seed(0)
    model = randomise_bn(SmallCNN(channels=(8, 16), hidden=32))
    with torch.no_grad():
        model.features[1].weight[3] = 0
        model.features[1].bias[3] = 0
    _, report = prune_channels(model, 0.125, batches(1, side=28, channels=1))
    assert report.removed["features.0"] == [3] and report.scores["features.0"][3] == 0


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"`fraction` must be a float in \[0, 1\).*got 1"):
        prune_channels(SmallCNN(), 1, batches(side=28, channels=1))
    with pytest.raises(ValueError, match="`dataloader` yielded no batches"):
        prune_channels(SmallCNN(), 0.5, [])
    with pytest.raises(ValueError, match="`model` must be a SmallCNN or hold torchvision ResNet .* got Sequential"):
        prune_channels(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), 0.5, batches())
    with pytest.raises(ValueError, match="grouped convolutions"):
        channel_groups(torchvision.models.resnext50_32x4d())
    with pytest.raises(ValueError, match=r"`keep\['features.0'\]` must be distinct channel indices in \[0, 15\]"):
        remove_channels(SmallCNN(), {"features.0": []})
