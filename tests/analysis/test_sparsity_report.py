import pytest
import torch
from torch import nn

from lightning_compress.analysis.report import CompressionReport, LayerRow, sparsity_report


def _net() -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.zero_()  # 18 of 18
        net[3].weight[:3] = 0.0  # 24 of 32
        net[5].weight.fill_(1.0)  # 0 of 8
    return net


def test_rows_and_totals() -> None:
    report = sparsity_report(_net())
    assert isinstance(report, CompressionReport)
    assert [r.name for r in report.layers] == ["0.weight", "3.weight", "5.weight"]
    assert [r.shape for r in report.layers] == [(2, 1, 3, 3), (4, 8), (2, 4)]
    assert [r.nonzeros for r in report.layers] == [0, 8, 8]
    assert [r.sparsity for r in report.layers] == [1.0, 0.75, 0.0]
    assert (report.numel, report.nonzeros) == (58, 16)
    assert report.sparsity == pytest.approx(42 / 58)


def test_table_lists_every_layer_and_the_total() -> None:
    text = str(sparsity_report(_net()))
    lines = text.splitlines()
    assert lines[0].split() == ["name", "layer", "shape", "nonzeros", "sparsity", "2:4", "quantized"]
    assert lines[1].split()[:5] == ["0.weight", "Conv2d", "2x1x3x3", "0/18", "100.00%"]
    assert lines[2].split()[:5] == ["3.weight", "Linear", "4x8", "8/32", "75.00%"]
    assert len({len(line) for line in lines[:4]}) <= 2  # header and rows aligned on the same columns
    assert "sparsity 72.41%" in text


def test_to_dict_and_filter() -> None:
    d = sparsity_report(_net(), filter_fn=lambda m, fqn: isinstance(m, nn.LayerNorm)).to_dict()
    assert [(r["name"], r["shape"], r["numel"], r["nonzeros"], r["sparsity"]) for r in d["layers"]] == [
        ("4.weight", [4], 4, 4, 0.0)
    ]
    assert (d["layer_numel"], d["nonzeros"], d["sparsity"]) == (4, 4, 0.0)


def test_empty_selection_raises() -> None:
    with pytest.raises(ValueError, match="selected no parameter"):
        sparsity_report(nn.Sequential(nn.ReLU()))


def test_empty_report_is_zero_sparse() -> None:
    assert CompressionReport([]).sparsity == 0.0
    assert LayerRow("x", "Linear", (0,), 0, 0, None).sparsity == 0.0


def test_the_old_name_is_a_deprecated_alias() -> None:
    import lightning_compress

    with pytest.warns(DeprecationWarning, match="CompressionReport"):
        assert lightning_compress.SparsityReport is CompressionReport
