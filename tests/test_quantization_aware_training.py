"""QuantizationAwareTraining: fake quant vs real INT8, save/load, resume, GMP zeros, bad input."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_compress.classification import ClassificationModule
from lightning_compress.gradual_magnitude_pruning import GradualMagnitudePruning
from lightning_compress.models import SmallCNN
from lightning_compress.quantization_aware_training import (
    QuantizationAwareTraining,
    convert_to_int8,
    load_int8,
    prepare_qat,
    save_int8,
)

# Work in progress (issue 5): torch.export + PT2E prepare + inductor compiles take minutes on 2 cores, and torchao 0.18's
# conv-BN QAT fusion has failed intermittently (IndexError) when many graphs were prepared in one process. Kept out of
# `make test` until the issue lands; run with `make test-slow`.
pytestmark = pytest.mark.slow

QUIET = dict(
    accelerator="cpu",
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    enable_checkpointing=False,
    deterministic=True,
    num_sanity_val_steps=0,
)


def tiny_cnn(seed: int = 0, dropout: float = 0.0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(channels=(4, 8), hidden=16, image_size=8, dropout=dropout)


def loaders(n: int = 48, batch_size: int = 16) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=batch_size), DataLoader(data, batch_size=batch_size)


def module(seed: int = 0) -> ClassificationModule:
    return ClassificationModule(tiny_cnn(seed), num_classes=10, optimizer=lambda p: torch.optim.SGD(p, lr=0.05))


def int8_weights(converted: nn.Module) -> list[torch.Tensor]:
    """The int8 weight constants of a converted graph."""
    values = [functools.reduce(getattr, n.target.split("."), converted) for n in converted.graph.nodes if n.op == "get_attr"]
    return [v for v in values if isinstance(v, torch.Tensor) and v.dtype == torch.int8]


def count_weight_dequants(converted: torch.fx.GraphModule) -> int:
    op = torch.ops.quantized_decomposed.dequantize_per_channel.default
    return sum(n.target == op for n in converted.graph.nodes)


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": "int3"}, "`scheme` can be int8, got 'int3'"),
        ({"start_epoch": -1}, "`start_epoch` must be a number >= 0, got -1"),
        ({"freeze_bn_epoch": "2"}, "`freeze_bn_epoch` must be a number >= 0 or None"),
        ({"start_epoch": 2, "freeze_observers_epoch": 1}, "`freeze_observers_epoch` must be >= `start_epoch` (2)"),
        ({"filter_fn": 3}, "`filter_fn` must be a callable"),
        ({"skip_classifier": 1}, "`skip_classifier` must be a bool, got 1"),
        ({"example_inputs": 3.0}, "`example_inputs` must be a tensor"),
        ({"verbose": 2}, "`verbose` can be 0 or 1, got 2"),
    ],
)
def test_bad_arguments_fail_in_the_constructor(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        QuantizationAwareTraining(**kwargs)


def test_all_bad_arguments_are_reported_at_once() -> None:
    with pytest.raises(ValueError, match="scheme.*verbose"):
        QuantizationAwareTraining(scheme="fp4", verbose=7)


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: not exportable
            return self.fc(x)
        return -self.fc(x)


def test_unexportable_model_fails_before_training_with_a_hint() -> None:
    model = ClassificationModule(DataDependent(), num_classes=2)
    data = DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), batch_size=4)
    trainer = L.Trainer(max_epochs=1, callbacks=[QuantizationAwareTraining(verbose=0)], **QUIET)
    with pytest.raises(RuntimeError, match=r"(?s)DataDependent failed: .*Could not guard.*at File .*, in forward\).*Hint: data-dependent"):
        trainer.fit(model, data)
    assert trainer.global_step == 0


def test_model_without_quantizable_layers_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no layer of ReLU was quantized"):
        prepare_qat(nn.ReLU(), torch.randn(4, 3))


def test_a_module_without_model_needs_attribute() -> None:
    class Bare(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(4, 2)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.net(batch[0].flatten(1)[:, :4]).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    train, _ = loaders()
    trainer = L.Trainer(max_epochs=1, callbacks=[QuantizationAwareTraining(verbose=0)], **QUIET)
    with pytest.raises(ValueError, match='pass `attribute="<name of the submodule>"`'):
        trainer.fit(Bare(), train)


# ------------------------------------------------------------------------------------------------------ numerics
def test_fake_quant_matches_converted_and_save_load_round_trips(tmp_path: Path) -> None:
    model = tiny_cnn()
    x = torch.randn(32, 1, 8, 8)
    prepared = prepare_qat(model, x)
    opt = torch.optim.SGD(prepared.parameters(), lr=0.05)
    for _ in range(3):  # a few QAT steps so that BN statistics and observer ranges move
        loss = prepared(x).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    prepared.eval()
    with torch.no_grad():
        fake = prepared(x)
        reference = convert_to_int8(prepared, compile=False)
        real = reference(x)
    # fake quant and the converted graph differ only by rounding (BN folded into the weight before its int8 rounding,
    # requantization of each layer's output): a few activation quantization steps, here 3 % of the output range
    assert (fake - real).abs().max() <= 0.03 * (fake.max() - fake.min())
    assert (fake.argmax(-1) == real.argmax(-1)).float().mean() >= 0.9
    assert count_weight_dequants(reference) == 4  # 2 conv + 2 linear weights stored int8

    path = tmp_path / "int8.pt2"
    save_int8(reference, path, x)
    loaded = load_int8(path, compile=False)
    with torch.no_grad():
        assert torch.equal(loaded(x), real)
        assert loaded(x[:5]).shape == (5, 10)  # the batch dimension stays dynamic


def test_compiled_int8_matches_reference() -> None:
    x = torch.randn(16, 1, 8, 8)
    prepared = prepare_qat(tiny_cnn(), x)
    with torch.no_grad():
        prepared(x)  # observers record in training mode only
        prepared.eval()
        reference = convert_to_int8(prepared, compile=False)(x)
        compiled = convert_to_int8(prepared)
        out = compiled(x)
        assert compiled(x[:3]).shape == (3, 10)  # another batch size compiles again
    step = (reference.max() - reference.min()) / 255
    assert (out - reference).abs().max() <= 2 * step


def test_keep_layers_in_float() -> None:
    x = torch.randn(8, 1, 8, 8)
    skipped = prepare_qat(tiny_cnn(), x, skip_first_conv=True, skip_classifier=True)
    assert count_weight_dequants(convert_to_int8(skipped, compile=False)) == 2
    filtered = prepare_qat(tiny_cnn(), x, filter_fn=lambda m, fqn: not fqn.startswith("classifier"))
    assert count_weight_dequants(convert_to_int8(filtered, compile=False)) == 2


# ---------------------------------------------------------------------------------------------------- with Trainer
def test_fit_then_test_from_checkpoint(tmp_path: Path) -> None:
    train, val = loaders()
    qat = QuantizationAwareTraining(freeze_bn_epoch=1, verbose=0)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = L.Trainer(max_epochs=2, callbacks=[qat, ckpt], **{**QUIET, "enable_checkpointing": True})
    model = module()
    trainer.fit(model, train, val)
    assert qat.int8_model is not None and "val_int8/acc" in qat.int8_metrics
    with torch.no_grad():
        x = next(iter(val))[0]
        model.eval()
        fake = model(x)

    # a fresh module and callback: setup re-prepares the graph, Lightning loads weights, BN stats and scales into it
    qat2 = QuantizationAwareTraining(verbose=0, compile_int8=False)
    fresh = module(seed=1)
    results = L.Trainer(callbacks=[qat2], **QUIET).test(fresh, val, ckpt_path=str(tmp_path / "last.ckpt"))
    assert {"test/acc", "test_int8/acc"} <= set(results[0])
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), fake)
    assert abs(results[0]["test/acc"] - results[0]["test_int8/acc"]) <= 0.1


def _fit(tmp_path: Path, max_epochs: int, ckpt_path: str | None = None, extra: list | None = None) -> Any:
    train, _ = loaders()
    qat = QuantizationAwareTraining(
        start_epoch=1, freeze_observers_epoch=2, freeze_bn_epoch=3, evaluate_int8=False, compile_int8=False, verbose=0
    )
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = L.Trainer(
        max_epochs=max_epochs, callbacks=[qat, ckpt, *(extra or [])], **{**QUIET, "enable_checkpointing": True}
    )
    model = module()
    trainer.fit(model, train, ckpt_path=ckpt_path)
    return model, qat


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    straight, _ = _fit(tmp_path / "a", max_epochs=4)
    _fit(tmp_path / "b", max_epochs=2)
    resumed, qat = _fit(tmp_path / "c", max_epochs=4, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    a, b = straight.state_dict(), resumed.state_dict()
    assert set(a) == set(b) and any("activation_post_process" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    fqs = [m for n, m in resumed.model.named_modules() if n.startswith("activation_post_process") and "." not in n]
    assert all(int(m.fake_quant_enabled[0]) == 1 and int(m.observer_enabled[0]) == 0 for m in fqs)


def test_pruned_weights_stay_zero_through_fake_quant_and_conversion(tmp_path: Path) -> None:
    gmp = GradualMagnitudePruning(final_sparsity=0.5, end_epoch=1, update_every_n_steps=1, verbose=0)
    model, qat = _fit(tmp_path, max_epochs=2, extra=[gmp])  # QAT before GMP in the list: order does not matter
    masks = gmp.masks
    assert masks is not None and "model.features.0.weight" in masks.names
    named = dict(model.named_parameters())
    for name in masks.names:
        assert (named[name][~masks[name]] == 0).all(), name
    converted = convert_to_int8(qat.prepared_model, compile=False)
    weights = {tuple(w.shape): w for w in int8_weights(converted)}
    for name in masks.names:
        mask = masks[name]
        assert (weights[tuple(mask.shape)][~mask] == 0).all(), name  # zero stays zero in the int8 weights


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    raises=ValueError,
    reason="torchao 0.18 X86InductorQuantizer(is_qat=True) fails on torchvision BasicBlock: 'Input partition has more"
    " than one output node' in _annotate_qat_conv2d_bn_binary_unary (not caused by the inplace ReLU; unresolved)",
)
def test_resnet18_qat_converts() -> None:
    from lightning_compress.models import torchvision_model

    torch.manual_seed(0)
    net = torchvision_model("resnet18", num_classes=10)
    x = torch.randn(4, 3, 32, 32)
    prepared = prepare_qat(net, x)
    with torch.no_grad():
        prepared(x)  # observe once in training mode
        prepared.eval()
        fake = prepared(x)
        real = convert_to_int8(prepared, compile=False)(x)
    assert count_weight_dequants(convert_to_int8(prepared, compile=False)) == 21  # 20 convs + fc
    assert (fake - real).abs().max() <= 0.05 * (fake.max() - fake.min())
