"""one_shot_quantize over models: block-sequential equals one pass on a single block, the default selection leaves the
tied output head alone (a selected tied weight warns), bad input is refused before any work, unsupported layers are
listed; the OneShotQuantization callback freezes the quantized weights (or trains them through fake quant)."""

from __future__ import annotations

import copy
import warnings

import lightning as L
import pytest
import torch
from conftest import QUIET
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_compress.pruning.one_shot.calibration import InputStatistics
from lightning_compress.quantization.weight_only.gptq import gptq_quantize
from lightning_compress.quantization.weight_only.grid import dequantize
from lightning_compress.quantization.weight_only.one_shot_quantization import OneShotQuantization
from lightning_compress.quantization.weight_only.quantize import _block_of, one_shot_quantize


class _Block(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(x)))


class _Stack(nn.Module):
    def __init__(self, blocks: int, outer: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(16, 32) if outer else nn.ZeroPad1d((0, 16))  # (B, 16) -> (B, 32)
        self.layers = nn.ModuleList(_Block() for _ in range(blocks))
        self.out = nn.Linear(32, 4) if outer else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.layers:
            h = block(h)
        return self.out(h)


def _data(batches: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(8, 16, generator=g) @ torch.randn(16, 16, generator=g) for _ in range(batches)]


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_block_sequential_and_one_pass_agree_on_a_single_block_model(method: str) -> None:
    a, b = _Stack(1, outer=False), _Stack(1, outer=False)  # every Linear inside the one block
    _, ra = one_shot_quantize(a, _data(), method=method, bits=4, group_size=16, blocks="layers")
    _, rb = one_shot_quantize(b, _data(), method=method, bits=4, group_size=16, blocks=None)
    assert ra.blocks == "layers" and rb.blocks is None and list(ra.layers) == list(rb.layers)
    for name in ra.layers:
        assert torch.allclose(a.get_submodule(name).weight, b.get_submodule(name).weight, atol=1e-6), name
        assert torch.allclose(ra.layers[name].scale, rb.layers[name].scale, atol=1e-7)


def test_the_result_shares_the_layers_weights_and_they_are_exactly_gptqs_output() -> None:
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    torch.manual_seed(0)
    for p in net.parameters():
        nn.init.normal_(p)
    original = {name: net.get_submodule(name).weight.detach().clone() for name in ("0", "2")}
    hessians = {}
    reference = nn.Sequential(*(copy.deepcopy(m) for m in net))
    for name in ("0", "2"):  # each layer's Hessian as the one-pass calibration gathers it, on the float model
        stats = InputStatistics(reference.get_submodule(name), hessian=True)
        for batch in _data():
            reference(batch)
        stats.remove()
        hessians[name] = stats.hessian()
    _, result = one_shot_quantize(net, _data(), method="gptq", bits=4, group_size=16, blocks=None)
    for name, q in result.layers.items():
        weight = net.get_submodule(name).weight
        assert q.weight.data_ptr() == weight.data_ptr()  # the result holds no second copy of the weights
        expected = gptq_quantize(original[name], hessians[name], bits=4, group_size=16)
        assert torch.equal(weight, expected.weight) and torch.equal(q.scale, expected.scale), name
        assert torch.equal(dequantize(q.codes(), q.scale, q.zero), weight)


def test_blocks_are_quantized_in_order_and_the_report_is_complete() -> None:
    net = _Stack(3)
    x = torch.cat(_data())
    before = net(x)
    _, result = one_shot_quantize(net, _data(), method="gptq", bits=4, group_size=16)
    assert result.blocks == "layers" and result.calibration_batches == 4
    assert list(result.layers) == ["inp", "layers.0.up", "layers.0.down", "layers.1.up", "layers.1.down",
                                   "layers.2.up", "layers.2.down", "out"]  # fmt: skip
    for name, q in result.layers.items():
        weight = net.get_submodule(name).weight
        assert torch.allclose(dequantize(q.codes(), q.scale, q.zero), weight, atol=1e-6)
        report = result.report[name]
        assert report.error is not None and 0 < report.error < 0.05 and 0 < report.weight_error < 0.05
        assert report.seconds >= 0
    assert float((net(x) - before).norm() / before.norm()) < 0.1
    assert "gptq W4 g16 sym: 8 layers" in result.summary()


def _tied() -> nn.Module:
    class TinyLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(64, 32)
            self.body = nn.Linear(32, 32)
            self.lm_head = nn.Linear(32, 64, bias=False)
            self.lm_head.weight = self.embed.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.lm_head(torch.relu(self.body(self.embed(ids))))

    torch.manual_seed(0)
    return TinyLM()


def test_the_tied_output_head_stays_float_by_default_and_warns_when_selected() -> None:
    ids = torch.randint(0, 64, (4, 8))
    net = _tied()
    embedding = net.embed.weight.detach().clone()
    _, result = one_shot_quantize(net, ids, method="gptq", bits=4, group_size=32)
    assert list(result.layers) == ["body"] and "lm_head" in result.skipped
    assert "embed.weight (tied)" in result.skipped["lm_head"]
    assert torch.equal(net.embed.weight, embedding)
    with pytest.warns(UserWarning, match=r"lm_head\.weight is the same tensor as embed\.weight \(tied weights\)"):
        one_shot_quantize(_tied(), ids, method="rtn", bits=4, group_size=32, ignore=())
    _, result = one_shot_quantize(_tied(), ids, method="rtn", bits=4, group_size=32, ignore=["bo*"])
    assert result.skipped == {"body": "matches ignore pattern 'bo*'"} and list(result.layers) == ["lm_head"]


def test_unsupported_layers_are_skipped_and_listed() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 32))
    _, result = one_shot_quantize(net, [torch.randn(4, 1, 8, 8)], method="gptq", bits=4, group_size=48)
    assert list(result.layers) == ["2"]
    assert result.skipped == {"0": "Conv2d is not an nn.Linear (weight-only quantization handles Linear layers)"}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"bits": 9}, r"`bits` must be an int in 2\.\.8, got 9"),
        ({"bits": 1}, r"`bits` must be an int in 2\.\.8, got 1"),
        ({"bits": 8, "group_size": 16}, r"`group_size` must be None .* for bits=8: .*one scale per output channel"),
        ({"method": "obq"}, r"`method` can be awq, gptq or rtn, got 'obq'"),
        ({"method": "awq", "n": 2, "m": 4}, r"pruning .* goes with method='gptq'"),
        ({"calibration_data": []}, r"`calibration_data` is empty: method='gptq' needs calibration batches"),
        ({"calibration_data": None}, r"`calibration_data` must give calibration batches for method='gptq'"),
        (
            {"group_size": 24},
            r"`group_size`=24 does not divide the input width of 4 selected layer\(s\): 16 \(inp\); 32",
        ),
        ({"ignore": 3}, r"`ignore` must be 'auto' or a list of module names"),
    ],
)
def test_bad_input_is_refused_before_any_work(kwargs, match) -> None:
    net = _Stack(1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        one_shot_quantize(net, **{"calibration_data": _data(), "group_size": 16, **kwargs})
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_nan_weights_are_refused_naming_the_layer() -> None:
    net = _Stack(1)
    with torch.no_grad():
        net.layers[0].down.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"refusing gptq quantization: .*layers\.0\.down\.weight \(1 NaN"):
        one_shot_quantize(net, _data(), bits=4, group_size=16)


def test_a_rank_deficient_hessian_warns_with_the_layer_name_and_gives_no_nan() -> None:
    net = nn.Sequential(nn.Linear(32, 16))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, result = one_shot_quantize(net, [torch.randn(2, 32)], bits=4, group_size=16, damping=0.0)
    assert any(str(c.message).startswith("0: the Hessian is not positive definite") for c in caught)
    assert bool(torch.isfinite(net[0].weight).all())


class _Module(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(2)
    return DataLoader(TensorDataset(torch.randn(64, 16, generator=g), torch.randint(0, 4, (64,), generator=g)),
                      batch_size=16)  # fmt: skip


@pytest.mark.parametrize("train", ["freeze", "fake_quant"])
def test_callback_quantizes_at_fit_start_and_the_weights_end_on_the_grid(train: str) -> None:
    module = _Module()
    callback = OneShotQuantization(method="gptq", bits=4, group_size=16, calibration_batches=2, train=train, verbose=0)
    L.Trainer(max_epochs=2, callbacks=[callback], **QUIET).fit(module, _loader())
    assert callback.result is not None and list(callback.result.layers) == ["net.0", "net.2"]
    for name, q in callback.result.layers.items():
        layer = module.get_submodule(name)
        assert type(layer) is nn.Linear
        assert torch.allclose(dequantize(q.codes(), q.scale, q.zero), layer.weight, atol=1e-6)
        if train == "freeze":
            assert not layer.weight.requires_grad and torch.equal(q.weight, layer.weight)
    assert "OneShotQuantization: gptq W4 g16" in callback.describe_state()


def test_callback_refuses_bad_arguments_at_once() -> None:
    with pytest.raises(
        ValueError, match=r"`bits` must be an int in 2\.\.8, got 12; `train` can be freeze or fake_quant"
    ):
        OneShotQuantization(bits=12, train="qat")


def test_layers_are_assigned_to_their_repeated_block() -> None:
    assert _block_of("model.layers.12.mlp.up_proj", "model.layers") == "12"
    assert _block_of("model.layers_norm.weight", "model.layers") is None
    assert _block_of("lm_head", "model.layers") is None and _block_of("lm_head", None) is None
    assert _block_of("3.fc", "") == "3"  # the model itself is the ModuleList of blocks
