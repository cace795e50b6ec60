"""The shared pieces of structured pruning: unit gates, their importance, the choice of units, the report."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_compress.pruning.structured.report import BatchCounter, StructuredPruningReport, check_prune_fraction
from lightning_compress.pruning.structured.unit_gates import (
    UnitGate,
    default_loss,
    gate_importance,
    gated,
    units_to_keep,
)


def test_gate_of_one_is_identity_and_zero_removes_a_group() -> None:
    layer = nn.Linear(6, 2)
    x = torch.randn(3, 5, 6)
    gate = UnitGate(layer, units=3, group=2)
    with gated([gate]):
        torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight, layer.bias), rtol=0, atol=0)
        gate.values[1] = 0.0
        kept = x.clone()
        kept[..., 2:4] = 0
        torch.testing.assert_close(layer(x), nn.functional.linear(kept, layer.weight, layer.bias), rtol=0, atol=0)
    assert not layer._forward_pre_hooks  # detached on exit


def test_importance_is_abs_gradient_times_activation_summed_over_batches() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    batches = [(torch.randn(6, 4), torch.randint(0, 3, (6,))) for _ in range(3)]
    scores = gate_importance(model, {"hidden": UnitGate(model[2], units=5)}, batches)["hidden"]
    expected = torch.zeros(5)
    for x, y in batches:
        h = model[1](model[0](x)).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model[2](h), y), h)
        expected += (grad * h).sum(0).abs()
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-7)
    assert all(p.requires_grad for p in model.parameters()) and all(p.grad is None for p in model.parameters())


def test_units_to_keep_and_counts() -> None:
    scores = torch.tensor([0.5, 0.1, 0.4, 0.2, 0.3, 0.0, 0.6, 0.7])
    assert units_to_keep(scores, 0.25).tolist() == [0, 2, 3, 4, 6, 7]
    assert units_to_keep(scores, 0.0).tolist() == list(range(8))
    assert units_to_keep(scores, 0.99).tolist() == [7]  # floor: at least one unit stays
    assert units_to_keep(torch.zeros(4), 0.5).tolist() == [0, 1]  # ties keep the lower index


def test_report_and_counter() -> None:
    report = StructuredPruningReport("ffn_neurons", 0.5, {"a": [0, 1]}, {"a": [2, 3]}, 100, 60, 2)
    assert (
        str(report)
        == "Pruned 2/4 ffn neurons (fraction 0.5) from 2 calibration batches; parameters: 100 -> 60 (-40.00%)"
    )
    assert report.to_dict()["units_removed"] == 2
    counter = BatchCounter(range(5))
    assert list(counter) == list(range(5)) and counter.count == 5


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"`fraction` must be a float in \[0, 1\) .*got 1.0"):
        check_prune_fraction(1.0)
    with pytest.raises(ValueError, match="needs a `labels` entry"):
        default_loss(nn.Identity(), {"input_ids": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"input has 5 features on dim 1, expected units \* group = 2 \* 2"):
        with gated([UnitGate(nn.Linear(5, 1), units=2, group=2)]) as (gate,):
            gate.consumer(torch.zeros(1, 5))
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="calibration loss of batch 0 is nan"):
        gate_importance(model, {"x": UnitGate(model, 2)}, [(torch.full((1, 2), float("nan")), torch.tensor([0]))])
