import re

import pytest
import torch
from torch import nn

from lightning_compress.models import SmallCNN


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_output_shapes_28_and_8():
    assert SmallCNN()(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert SmallCNN(image_size=8)(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    model = SmallCNN(in_channels=3, num_classes=7, channels=(8, 16, 32), image_size=32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_parameter_counts():
    # conv 1->16 (160) + BN (32) + conv 16->32 (4,640) + BN (64) + 32*7*7->128 (200,832) + 128->10 (1,290)
    assert n_params(SmallCNN()) == 207_018
    assert 150_000 < n_params(SmallCNN()) < 250_000
    assert n_params(SmallCNN(channels=(32, 64))) == 421_834
    assert n_params(SmallCNN(image_size=8, hidden=64)) == 160 + 32 + 4640 + 64 + (32 * 4 + 1) * 64 + 65 * 10


def test_layer_order():
    model = SmallCNN()
    kinds = [type(m).__name__ for m in model.features]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 2
    assert model.features[0].kernel_size == (3, 3) and model.features[0].padding == (1, 1)
    assert [type(m).__name__ for m in model.classifier] == ["Flatten", "Linear", "ReLU", "Dropout", "Linear"]


def test_dropout_only_acts_in_training():
    model = SmallCNN(dropout=0.5).eval()
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(x), model(x))


def test_exports_with_torch_export():
    model = SmallCNN(image_size=8).eval()
    x = torch.randn(2, 1, 8, 8)
    program = torch.export.export(model, (x,))
    torch.testing.assert_close(program.module()(x), model(x))


def test_learns_real_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images[:256], dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(digits.target[:256])
    torch.manual_seed(0)
    model = SmallCNN(image_size=8, hidden=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() > 0.95


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 30}, "`image_size` must be divisible by 2 ** len(channels) = 4 (one 2x2 max-pool per stage)"),
        ({"image_size": 8, "channels": (4, 4, 4, 4)}, "= 16"),
        ({"channels": ()}, "`channels` must be a non-empty sequence of positive ints (e.g. [16, 32]), got ()"),
        ({"channels": (16, 0)}, "got (16, 0)"),
        ({"num_classes": 0}, "`num_classes` must be an int >= 1, got 0"),
        ({"hidden": 12.0}, "`hidden` must be an int >= 1, got 12.0"),
        ({"dropout": 1.0}, "`dropout` must be a float in [0, 1), got 1.0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SmallCNN(**kwargs)
