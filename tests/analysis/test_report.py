"""lc-report: per-layer sparsity, 2:4 compliance, quantized layers and bytes, on pruned and on quantized models."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lightning_compress.analysis.report import compression_report
from lightning_compress.bench.model_benchmark import prune_unstructured
from lightning_compress.cli.report import load_for_report, main
from lightning_compress.export.compressed_format import save_compressed
from lightning_compress.models import SmallCNN
from lightning_compress.sparsity.nm_masks import nm_mask


def _pruned_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = prune_unstructured(SmallCNN(), 0.9)
    with torch.no_grad():
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]  # the small classifier
        head.weight.copy_(torch.randn_like(head.weight) * nm_mask(torch.randn_like(head.weight)))
    return model.eval()


def test_report_on_a_pruned_model():
    model = _pruned_cnn()
    report = compression_report(model)
    names = [r.name for r in report.layers]
    assert all(n.endswith("weight") for n in names) and len(names) == 4  # 2 convs + 2 linears
    assert report.parameters == sum(p.numel() for p in model.parameters())
    by_name = {r.name: r for r in report.layers}
    linears = [r for r in report.layers if r.layer == "Linear"]
    assert sum(r.nm_2_4 is True for r in linears) == 1  # the head made 2:4
    for row in report.layers:
        weight = dict(model.named_parameters())[row.name]
        assert row.nonzeros == int((weight != 0).sum())
        assert row.quantized == ""
        n, k, c = row.numel, row.nonzeros, row.shape[0]
        assert row.bytes() == {
            "dense fp32": 4 * n,
            "sparse (bitmask)": (n + 7) // 8 + 4 * k,
            "INT8": n + 4 * c,
            "sparse + INT8": (n + 7) // 8 + k + 4 * c,
        }
    first_conv = by_name["features.0.weight"]
    assert first_conv.nm_2_4 is None  # 1 input channel x 3 x 3 = 9: not groups of 4
    totals = report.totals()
    assert totals["dense fp32"] > totals["sparse (bitmask)"] > totals["sparse + INT8"]
    text = str(report)
    assert "sparse + INT8" in text and "features.0.weight" in text


def test_report_on_a_torchao_quantized_model():
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    with torch.no_grad():
        model[0].weight[:, :32] = 0.0
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    report = compression_report(model)
    assert [r.quantized for r in report.layers] == ["int8 (Int8Tensor)"] * 2
    assert report.layers[0].nonzeros <= 32 * 32  # counted on the int8 data
    assert report.parameters == 64 * 32 + 32 + 32 * 8 + 8


def test_report_on_an_int8_state_dict_like_a_converted_checkpoint():
    state = {
        "_frozen_param0": torch.randint(-127, 128, (16, 32), dtype=torch.int8) * (torch.rand(16, 32) < 0.5),
        "_scale_0": torch.rand(16),
        "_zero_point_0": torch.zeros(16, dtype=torch.int64),
        "fc.bias": torch.zeros(16),
    }
    report = compression_report(state)
    assert [r.name for r in report.layers] == ["_frozen_param0"]
    assert report.layers[0].quantized == "int8"
    assert report.layers[0].nonzeros == int((state["_frozen_param0"] != 0).sum())
    assert report.parameters == 16 * 32 + 16


def test_report_rejects_a_model_without_weights():
    with pytest.raises(ValueError, match="no Linear/Conv weight"):
        compression_report(nn.ReLU())


def test_cli_on_a_checkpoint_writes_json_and_a_compressed_file(tmp_path, capsys):
    model = _pruned_cnn()
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, ckpt)
    out_json, out_lcz = tmp_path / "r.json", tmp_path / "m.lc.safetensors"
    assert main([str(ckpt), "--json", str(out_json), "--save-compressed", str(out_lcz), "--int8"]) == 0
    printed = capsys.readouterr().out
    assert "model.features.0.weight" in printed and "dense fp32" in printed
    data = json.loads(out_json.read_text())
    assert 0.85 < data["sparsity"] < 0.95 and len(data["layers"]) == 4
    # the compressed file reads back as a report source too
    again = compression_report(load_for_report(str(out_lcz)))
    assert [r.name for r in again.layers] == [r["name"] for r in data["layers"]]


def test_cli_on_a_saved_module_and_a_compressed_file(tmp_path, capsys):
    model = _pruned_cnn()
    torch.save(model, tmp_path / "whole.pt")
    save_compressed(model, tmp_path / "m.lc.safetensors")
    with pytest.raises(SystemExit):  # a whole pickled module: refused without the opt-in
        main([str(tmp_path / "whole.pt")])
    assert "--allow-pickle" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="allow_pickle=True"):
        assert main([str(tmp_path / "whole.pt"), "--allow-pickle"]) == 0
    assert "Conv2d" in capsys.readouterr().out
    report = compression_report(load_for_report(str(tmp_path / "m.lc.safetensors")))
    assert report.nonzeros == compression_report(model).nonzeros


@pytest.mark.slow
def test_report_on_qat_prepared_and_converted_graphs(tmp_path):
    from lightning_compress.quantization import convert_to_int8, prepare_qat
    from lightning_compress.quantization import save_quantized as save

    model = _pruned_cnn().train()
    x = torch.randn(4, 1, 28, 28)
    prepared = prepare_qat(model, (x,))
    rep = compression_report(prepared)
    assert rep.layers and all(r.quantized == "int8 fake-quant (QAT)" for r in rep.layers)
    with torch.no_grad():
        prepared(x)
    prepared.eval()
    converted = convert_to_int8(prepared, compile=False)
    rep = compression_report(converted)
    assert sorted(r.name for r in rep.layers) == sorted(r.name for r in compression_report(model).layers)
    assert all(r.quantized == "int8 (PT2E converted)" for r in rep.layers)
    sparse_float = compression_report(model).nonzeros
    assert rep.nonzeros <= sparse_float  # pruned weights stay zero through int8
    save(converted, tmp_path / "m.pt2", (x,))
    assert compression_report(load_for_report(str(tmp_path / "m.pt2"))).layers
