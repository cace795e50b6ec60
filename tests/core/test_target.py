"""The network inside a LightningModule, found with no configuration (`find_network`), and epoch lengths."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
from torch import nn

from lightning_compress.core.target import compression_target, find_network
from lightning_compress.distillation import DistillationModule
from lightning_compress.training import ClassificationModule


class _Outside(pl.LightningModule):
    """A LightningModule written elsewhere: a network and a parameter-free loss."""

    def __init__(self, second: bool = False) -> None:
        super().__init__()
        self.net = nn.Linear(4, 2)
        self.loss = nn.CrossEntropyLoss()
        if second:
            self.extra = nn.Linear(2, 2)


def test_plain_module_is_its_own_network() -> None:
    net = nn.Linear(2, 2)
    assert find_network(net) == (net, "")


def test_classification_module_network_is_its_model() -> None:
    module = ClassificationModule(nn.Linear(4, 3), num_classes=3)
    assert find_network(module) == (module.model, "model")


def test_single_child_with_parameters_is_the_network() -> None:
    module = _Outside()
    assert find_network(module) == (module.net, "net")


def test_distillation_student_is_followed_through_compression_target() -> None:
    student = ClassificationModule(nn.Linear(4, 3), num_classes=3)
    module = DistillationModule(student, teacher=nn.Linear(4, 3))
    assert compression_target(module) is student
    assert find_network(module) == (student.model, "student.model")


def test_explicit_attribute_wins_and_a_wrong_one_is_named() -> None:
    module = _Outside(second=True)
    assert find_network(module, attribute="extra") == (module.extra, "extra")
    with pytest.raises(ValueError, match=r"`attribute` must name a submodule of _Outside, got 'nope'"):
        find_network(module, attribute="nope")


def test_ambiguous_module_lists_the_candidates_or_is_kept_when_not_strict() -> None:
    module = _Outside(second=True)
    with pytest.raises(ValueError, match=r"children with parameters are net \(Linear\), extra \(Linear\)"):
        find_network(module)
    assert find_network(module, strict=False) == (module, "")


def test_a_module_without_parameters_is_named_in_the_error() -> None:
    class Empty(pl.LightningModule):
        pass

    with pytest.raises(ValueError, match="children with parameters are none"):
        find_network(Empty())
