"""PostTrainingQuantization: calibrates at the end of fit, before test alone (calibration_data, the datamodule's
training loader, or a clear refusal), never on the data it evaluates; logs the INT8 metrics; composes with pruning
and distillation; saves and reloads."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import QUIET
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lightning_compress.models import SmallCNN
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning
from lightning_compress.quantization import PostTrainingQuantization, load_quantized
from lightning_compress.training.classification import ClassificationModule


def tiny_cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(channels=(4, 8), hidden=16, image_size=8)


def data(n: int = 48, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    return TensorDataset(x, (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long())


def loaders() -> tuple[DataLoader, DataLoader]:
    return DataLoader(data(seed=0), batch_size=16), DataLoader(data(seed=1), batch_size=16)


def module(seed: int = 0) -> ClassificationModule:
    return ClassificationModule(tiny_cnn(seed), num_classes=10, optimizer=lambda p: torch.optim.SGD(p, lr=0.05))


class DataModule(L.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.train_calls = 0

    def train_dataloader(self) -> DataLoader:
        self.train_calls += 1
        return loaders()[0]

    def test_dataloader(self) -> DataLoader:
        return loaders()[1]


def ptq(**kwargs: Any) -> PostTrainingQuantization:
    return PostTrainingQuantization(**{"calibration_batches": 2, "compile_int8": False, "verbose": 0, **kwargs})


def int8_weights(converted: torch.fx.GraphModule) -> list[torch.Tensor]:
    from torch.ao.quantization.fx._decomposed import quantized_decomposed_lib  # noqa: F401

    target = torch.ops.quantized_decomposed.dequantize_per_channel.default
    return [functools.reduce(getattr, n.args[0].target.split("."), converted)
            for n in converted.graph.nodes if n.target == target]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"observer": "entropy"}, "`observer` can be histogram, minmax, moving_average or percentile"),
        ({"calibration_batches": 0}, "`calibration_batches` must be an int >= 1"),
        ({"calibration_batches": None}, "`calibration_batches` must be an int >= 1, got None"),
        ({"calibration_data": 3}, "`calibration_data` must be a DataLoader"),
        ({"attribute": ""}, "`attribute` must be a submodule name or None"),
        ({"compile_int8": 1}, "`compile_int8` must be a bool, got 1"),
    ],
)
def test_bad_arguments_fail_in_the_constructor(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PostTrainingQuantization(**kwargs)


def test_fit_calibrates_on_training_batches_and_logs_int8_metrics() -> None:
    train, val = loaders()
    callback = ptq()
    model = module()
    trainer = L.Trainer(max_epochs=1, callbacks=[callback], **QUIET)
    trainer.fit(model, train, val)
    assert callback.calibrated_on == "the training loader" and callback.calibrated.batches == 2
    assert "val_int8/acc" in callback.quantized_metrics
    x = next(iter(val))[0]
    model.eval()
    with torch.no_grad():
        fp32, int8 = model(x), callback.quantized_model(x)
    assert (fp32.argmax(-1) == int8.argmax(-1)).float().mean() >= 0.8
    assert isinstance(model.model, SmallCNN)  # the float network is left as it is


def test_test_alone_tests_an_int8_model_calibrated_on_calibration_data() -> None:
    train, val = loaders()
    callback = ptq(calibration_data=train)
    results = L.Trainer(callbacks=[callback], **QUIET).test(module(), val)
    assert {"test/acc", "test_int8/acc"} <= set(results[0])
    assert abs(results[0]["test/acc"] - results[0]["test_int8/acc"]) <= 0.1
    assert callback.calibrated_on == "calibration_data"


def test_test_alone_uses_the_datamodules_training_loader() -> None:
    dm = DataModule()
    callback = ptq()
    results = L.Trainer(callbacks=[callback], **QUIET).test(module(), datamodule=dm)
    assert "test_int8/acc" in results[0]
    assert callback.calibrated_on == "the datamodule's training loader" and dm.train_calls == 1


def test_test_alone_without_calibration_data_refuses() -> None:
    _, val = loaders()
    with pytest.raises(RuntimeError, match="has no calibration data: pass `calibration_data=`.*never calibrates on"):
        L.Trainer(callbacks=[ptq()], **QUIET).test(module(), val)


def test_it_never_calibrates_on_the_data_it_evaluates() -> None:
    _, val = loaders()
    with pytest.raises(ValueError, match="`calibration_data` is the test dataloader; it never calibrates on"):
        L.Trainer(callbacks=[ptq(calibration_data=val)], **QUIET).test(module(), val)


def test_validate_alone_logs_val_int8() -> None:
    train, val = loaders()
    results = L.Trainer(callbacks=[ptq(calibration_data=train)], **QUIET).validate(module(), val)
    assert {"val/acc", "val_int8/acc"} <= set(results[0])


def test_test_after_fit_recalibrates_when_a_checkpoint_is_loaded(tmp_path: Path) -> None:
    train, val = loaders()
    callback = ptq()
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_top_k=0, save_last=True)
    trainer = L.Trainer(max_epochs=2, callbacks=[callback, ckpt], **{**QUIET, "enable_checkpointing": True})
    model = module()
    trainer.fit(model, train, val)
    first = callback.calibrated
    trainer.test(model, val)  # the same weights: the INT8 model of fit is tested
    assert callback.calibrated is first
    trainer.test(model, val, ckpt_path=str(tmp_path / "last.ckpt"))  # weights loaded again: calibrated again
    assert callback.calibrated is not first


def test_pruned_zeros_stay_zero() -> None:
    train, val = loaders()
    gmp = GradualMagnitudePruning(final_sparsity=0.5, end_epoch=1, update_every_n_steps=1, verbose=0)
    callback = ptq()
    model = module()
    L.Trainer(max_epochs=2, callbacks=[gmp, callback], **QUIET).fit(model, train, val)
    named = dict(model.named_parameters())
    weights = int8_weights(callback.quantized_model)
    for name in gmp.masks.names:
        pruned = ~gmp.masks[name]
        assert pruned.any() and (named[name][pruned] == 0).all()
        q = next(w for w in weights if w.shape == pruned.shape)
        assert (q[pruned] == 0).all(), name


def test_distillation_quantizes_the_student() -> None:
    from lightning_compress.distillation.distillation_module import DistillationModule

    distill = DistillationModule(tiny_cnn(2), tiny_cnn(1), num_classes=10, alpha=0.5)
    train, val = loaders()
    callback = ptq()
    L.Trainer(max_epochs=1, callbacks=[callback], **QUIET).fit(distill, train, val)
    assert "val_int8/acc" in callback.quantized_metrics
    student = dict(distill.student.model.named_parameters())["classifier.4.weight"]
    assert int8_weights(callback.quantized_model)[-1].shape == student.shape == (10, 16)


def test_save_and_load(tmp_path: Path) -> None:
    train, val = loaders()
    callback = ptq()
    with pytest.raises(RuntimeError, match="there is no INT8 model yet"):
        callback.save_quantized(tmp_path / "x.pt2")
    L.Trainer(max_epochs=1, callbacks=[callback], **QUIET).fit(module(), train, val)
    callback.save_quantized(tmp_path / "int8.pt2")
    loaded = load_quantized(tmp_path / "int8.pt2", compile=False)
    x = next(iter(val))[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), callback.quantized_model(x))
