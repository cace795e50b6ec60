import re

import pytest
import torch
from torch import nn

from lightning_compress.models import replace_classifier, torchvision_model

torchvision = pytest.importorskip("torchvision", reason="torchvision_model needs torchvision (the vision extra)")
WeightsEnum = torchvision.models.WeightsEnum


def test_resnet18_with_10_classes():
    model = torchvision_model("resnet18", num_classes=10)
    assert isinstance(model, torchvision.models.ResNet) and model.fc.out_features == 10
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_mobilenet_v3_alias_is_the_large_model():
    model = torchvision_model("mobilenet_v3", num_classes=4)
    reference = torchvision.models.mobilenet_v3_large(num_classes=4)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4)


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="`name` can be alexnet, ") as err:
        torchvision_model("resnet1000")
    message = str(err.value)
    assert message.endswith("got 'resnet1000'")
    assert all(name in message for name in ("resnet18", "resnet50", "vit_b_16", "mobilenet_v3_large"))
    assert "fasterrcnn" not in message  # classification models only


def test_bad_num_classes_and_weights():
    with pytest.raises(ValueError, match=re.escape("`num_classes` must be an int >= 1, got 0")):
        torchvision_model("resnet18", num_classes=0)
    message = "`weights` for resnet18 must be None or one of IMAGENET1K_V1, DEFAULT, got 'V9'"
    with pytest.raises(ValueError, match=re.escape(message)):
        torchvision_model("resnet18", weights="V9")


def test_pretrained_weights_keep_the_backbone_and_get_a_new_head(monkeypatch):
    """The download is replaced by a seeded resnet18's state dict; everything else is the real code path."""
    torch.manual_seed(0)
    pretrained = torchvision.models.resnet18().state_dict()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *args, **kwargs: pretrained)
    model = torchvision_model("resnet18", num_classes=10, weights="DEFAULT")
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in pretrained.items() if not k.startswith("fc."))
    assert model.fc.out_features == 10 and model.fc.in_features == 512
    same = torchvision_model("resnet18", num_classes=1000, weights="IMAGENET1K_V1")
    assert torch.equal(same.fc.weight, pretrained["fc.weight"])


def test_replace_classifier_handles_aux_heads_and_conv_heads():
    googlenet = torchvision.models.googlenet(aux_logits=True, init_weights=False)
    assert replace_classifier(googlenet, 1000, 5) == ["aux1.fc2", "aux2.fc2", "fc"]
    assert googlenet.fc.out_features == 5 and googlenet.aux1.fc2.out_features == 5
    squeezenet = torchvision.models.squeezenet1_1()
    assert replace_classifier(squeezenet, 1000, 3) == ["classifier.1"]
    assert isinstance(squeezenet.classifier[1], nn.Conv2d)
    assert squeezenet(torch.randn(2, 3, 96, 96)).shape == (2, 3)
    with pytest.raises(ValueError, match="no Linear or Conv2d layer with 1000 outputs"):
        replace_classifier(torchvision.models.resnet18(num_classes=10), 1000, 3)
