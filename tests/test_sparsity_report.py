import pytest
import torch
from torch import nn

from lightning_compress.sparsity_report import SparsityReport, SparsityRow, sparsity_report


def _net() -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.zero_()  # 18 of 18
        net[3].weight[:3] = 0.0  # 24 of 32
        net[5].weight.fill_(1.0)  # 0 of 8
    return net


def test_rows_and_totals() -> None:
    report = sparsity_report(_net())
    assert [r.name for r in report.rows] == ["0.weight", "3.weight", "5.weight"]
    assert [r.shape for r in report.rows] == [(2, 1, 3, 3), (4, 8), (2, 4)]
    assert [r.nonzeros for r in report.rows] == [0, 8, 8]
    assert [r.sparsity for r in report.rows] == [1.0, 0.75, 0.0]
    assert (report.numel, report.nonzeros) == (58, 16)
    assert report.sparsity == pytest.approx(42 / 58)


def test_table_is_aligned() -> None:
    text = str(sparsity_report(_net()))
    lines = text.splitlines()
    assert lines[0].split() == ["name", "shape", "numel", "nonzeros", "sparsity"]
    assert lines[1].split()[-1] == "100.00%" and lines[2].split()[-1] == "75.00%"
    assert lines[-1].split() == ["total", "58", "16", "72.41%"]
    assert len({len(line) for line in lines}) == 1  # right-aligned numeric columns end together


def test_to_dict_and_filter() -> None:
    d = sparsity_report(_net(), filter_fn=lambda m, fqn: isinstance(m, nn.LayerNorm)).to_dict()
    assert d["rows"] == [{"name": "4.weight", "shape": [4], "numel": 4, "nonzeros": 4, "sparsity": 0.0}]
    assert (d["numel"], d["nonzeros"], d["sparsity"]) == (4, 4, 0.0)


def test_empty_selection_raises() -> None:
    with pytest.raises(ValueError, match="selected no parameter"):
        sparsity_report(nn.Sequential(nn.ReLU()))


def test_empty_report_is_zero_sparse() -> None:
    assert SparsityReport([]).sparsity == 0.0
    assert SparsityRow("x", (0,), 0, 0).sparsity == 0.0
