"""torchvision is optional: without it the library imports and every non-vision feature works; the vision data modules
and model builders say how to install it. These tests hide torchvision; they pass whether or not it is installed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from lightning_compress.data import CIFAR10DataModule, ImageNetDataModule
from lightning_compress.models import import_torchvision, replace_classifier, torchvision_model

INSTALL = "pip install 'lightning-compress[vision]'"
MATCHING = f"torchvision 0.{int(torch.__version__.split('.')[1]) + 15} built for torch {torch.__version__}"


@pytest.fixture
def no_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes every ``import torchvision...`` fail as if it were not installed."""
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchvision", None)


@pytest.mark.parametrize(
    ("user", "build"),
    [
        ("CIFAR10DataModule", lambda tmp_path: CIFAR10DataModule(root=tmp_path)),
        ("ImageNetDataModule", lambda tmp_path: ImageNetDataModule(tmp_path)),
        ("torchvision_model", lambda tmp_path: torchvision_model("resnet18", num_classes=10)),
    ],
)
def test_vision_features_name_the_package_and_the_install_command(no_torchvision, tmp_path, user, build):
    with pytest.raises(ImportError) as err:
        build(tmp_path)
    assert isinstance(err.value, ModuleNotFoundError) and err.value.name == "torchvision"
    message = str(err.value)
    assert message.startswith(f"{user} needs torchvision, which is not installed: install it with `{INSTALL}`")
    assert MATCHING in message


def test_bad_arguments_are_still_reported_first(no_torchvision):
    with pytest.raises(ValueError, match=re.escape("`batch_size` must be an int >= 1, got 0")):
        CIFAR10DataModule(batch_size=0)


def test_a_broken_torchvision_is_reported_as_such(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    message = r"torchvision_model needs torchvision, but (torchvision \S+|the torchvision found) does not load beside"
    with pytest.raises(ImportError, match=message) as err:
        import_torchvision("torchvision_model")
    assert "operator torchvision::nms does not exist" in str(err.value) and MATCHING in str(err.value)


def test_replace_classifier_needs_no_torchvision(no_torchvision):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 1000))
    assert replace_classifier(model, 1000, 3) == ["1"] and model(torch.zeros(2, 3, 2, 2)).shape == (2, 3)


# Run in a fresh interpreter where torchvision cannot be imported at all: the library's modules are not yet loaded.
WITHOUT_TORCHVISION = textwrap.dedent(
    """
    import importlib.metadata
    import sys

    # As if torchvision were not installed: `import torchvision` raises ModuleNotFoundError, find_spec gives None, and
    # there is no distribution of that name either (libraries such as torchmetrics ask for it before importing).
    sys.modules["torchvision"] = None
    _discover = importlib.metadata.Distribution.discover.__func__

    def _without_torchvision(cls, **kwargs):
        return (d for d in _discover(cls, **kwargs) if (d.metadata["Name"] or "").lower() != "torchvision")

    importlib.metadata.Distribution.discover = classmethod(_without_torchvision)

    import torch
    from torch import nn

    import lightning_compress
    import lightning_compress.data
    import lightning_compress.models
    from lightning_compress import GradualMagnitudePruning, NMSparsity, prune_channels, sparsity_report
    from lightning_compress.data import DigitsDataModule
    from lightning_compress.models import SmallCNN
    from lightning_compress.pruning.structured.channels import channel_groups

    dm = DigitsDataModule(batch_size=16)
    dm.setup()
    torch.manual_seed(0)
    model = SmallCNN(image_size=8, channels=(8, 16), hidden=32).eval()
    small, report = prune_channels(model, 0.5, [next(iter(dm.train_dataloader()))])
    assert small.features[0].out_channels == 4 and small.features[4].out_channels == 8, small
    assert small(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    try:
        channel_groups(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    except ValueError as err:  # no ResNet blocks recognised, rather than a failed import
        assert "must be a SmallCNN or hold torchvision ResNet" in str(err), err
    else:
        raise AssertionError("channel_groups accepted a model without groups")
    GradualMagnitudePruning(final_sparsity=0.5), NMSparsity(n=2, m=4), sparsity_report(model)
    try:
        lightning_compress.data.CIFAR10DataModule()
    except ModuleNotFoundError as err:
        print("ERROR", err)
    assert "torchvision" not in sys.modules or sys.modules["torchvision"] is None
    print("OK")
    """
)


def test_the_library_works_without_torchvision():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCHVISION], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[-1] == "OK"
    error = f"ERROR CIFAR10DataModule needs torchvision, which is not installed: install it with `{INSTALL}`"
    assert any(line.startswith(error) for line in lines), lines
