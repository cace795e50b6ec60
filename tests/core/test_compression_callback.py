"""What the compression callbacks share: a resume with another configuration is an error naming old and new values
(or an explicit, logged migration), NaN / Inf weights are refused before a mask update or quantization, and the best
checkpoint is one of the final compressed state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import QUIET, TinyNet, fit, loader
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from lightning_compress.core.compression_callback import config_changes
from lightning_compress.core.final_state_checkpoint import FinalStateCheckpoint
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning
from lightning_compress.pruning.one_shot.one_shot_pruning import OneShotPruning
from lightning_compress.quantization.qat import QuantizationAwareTraining
from lightning_compress.sparsity.nm_sparsity import NMSparsity
from lightning_compress.training.classification import ClassificationModule

CKPT = {**QUIET, "enable_checkpointing": True}


class StopAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = True


def _first_run(tmp_path: Path, callback: Any, model: L.LightningModule | None = None) -> Path:
    """The first of two epochs with ``callback`` (the schedules are planned for two); the last checkpoint."""
    L.seed_everything(0)
    last = ModelCheckpoint(dirpath=tmp_path / "first", save_last=True)
    trainer = L.Trainer(max_epochs=2, callbacks=[callback, last, StopAfterFirstEpoch()], **CKPT)
    trainer.fit(model if model is not None else TinyNet(), loader())
    assert trainer.global_step == 8
    return tmp_path / "first" / "last.ckpt"


def _resume(ckpt: Path, callback: Any, model: L.LightningModule | None = None, epochs: int = 2) -> L.Trainer:
    trainer = L.Trainer(max_epochs=epochs, callbacks=[callback], **QUIET)
    trainer.fit(model if model is not None else TinyNet(), loader(), ckpt_path=ckpt)
    return trainer


def _gmp(**kwargs: Any) -> GradualMagnitudePruning:
    return GradualMagnitudePruning(**{"final_sparsity": 0.9, "end_epoch": 2, "update_every_n_steps": 3, "verbose": 0,
                                      **kwargs})  # fmt: skip


# ------------------------------------------------------------------------------------------ config on resume
def test_config_changes_lists_old_and_new() -> None:
    assert config_changes({"a": 1, "b": 0.5, "c": None}, {"a": 1.0, "b": 0.4, "d": 2}) == [
        "b: 0.5 -> 0.4",
        "c: None -> <not set>",
        "d: <not set> -> 2",
    ]


def test_resume_with_another_final_sparsity_names_old_and_new(tmp_path: Path) -> None:
    """final_sparsity is part of the state_key: Lightning alone would drop the saved masks with a generic warning."""
    ckpt = _first_run(tmp_path, _gmp())
    with pytest.raises(ValueError, match=r"GradualMagnitudePruning: .*final_sparsity: 0\.9 -> 0\.8") as err:
        _resume(ckpt, _gmp(final_sparsity=0.8))
    assert "allow_config_change=True" in str(err.value)


def test_resume_with_another_schedule_argument_names_it(tmp_path: Path) -> None:
    """update_every_n_steps is not in the state_key: the saved state's config catches it."""
    ckpt = _first_run(tmp_path, _gmp())
    with pytest.raises(ValueError, match=r"update_every_n_steps: 3 -> 5"):
        _resume(ckpt, _gmp(update_every_n_steps=5))


def test_resume_with_the_same_config_restores_the_masks(tmp_path: Path) -> None:
    ckpt = _first_run(tmp_path, _gmp())
    saved = torch.load(ckpt, weights_only=True)
    (state,) = [v for k, v in saved["callbacks"].items() if k.startswith("GradualMagnitudePruning")]
    assert state["config"]["final_sparsity"] == 0.9 and state["config"]["update_every_n_steps"] == 3
    resumed = _gmp()
    _resume(ckpt, resumed)
    assert resumed.is_final and resumed.current_sparsity == 0.9


def test_allow_config_change_carries_the_masks_over_and_warns(tmp_path: Path) -> None:
    first = _gmp()
    ckpt = _first_run(tmp_path, first)
    pruned_before = [~m for m in first.masks.masks]
    assert 0 < first.current_sparsity < 0.9  # mid-schedule
    migrated = _gmp(final_sparsity=0.95, allow_config_change=True)
    with pytest.warns(UserWarning, match=r"allow_config_change=True\): final_sparsity: 0\.9 -> 0\.95"):
        _resume(ckpt, migrated)
    for before, after in zip(pruned_before, migrated.masks.masks):
        assert not (before & after).any()  # every weight pruned by the first run stayed pruned: the masks carried over
    assert migrated.current_sparsity == 0.95


def test_a_checkpoint_without_saved_config_is_compared_by_its_key(tmp_path: Path) -> None:
    """Checkpoints written before the config was saved: the key still tells what changed."""
    ckpt = _first_run(tmp_path, _gmp())
    saved = torch.load(ckpt, weights_only=True)
    for state in saved["callbacks"].values():
        state.pop("config", None)
    torch.save(saved, ckpt)
    _resume(ckpt, _gmp())  # the same arguments: fine
    with pytest.raises(ValueError, match=r"end_epoch: 2 -> 1\.5"):
        _resume(ckpt, _gmp(end_epoch=1.5))


def test_testing_a_checkpoint_with_other_schedule_arguments_is_fine(tmp_path: Path) -> None:
    ckpt = _first_run(tmp_path, _gmp())
    tester = L.Trainer(callbacks=[_gmp(update_every_n_steps=7)], **QUIET)
    (result,) = tester.test(TinyNet(), loader(), ckpt_path=ckpt, verbose=False)
    assert 0 <= result["test_acc"] <= 1


def test_two_instances_of_one_class_resume_each_their_own_state(tmp_path: Path) -> None:
    def convs(module: nn.Module, fqn: str) -> bool:
        return isinstance(module, nn.Conv1d)

    def linears(module: nn.Module, fqn: str) -> bool:
        return isinstance(module, nn.Linear)

    L.seed_everything(0)
    last = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    callbacks = [_gmp(filter_fn=convs), _gmp(filter_fn=linears), last, StopAfterFirstEpoch()]
    L.Trainer(max_epochs=2, callbacks=callbacks, **CKPT).fit(TinyNet(), loader())
    a, b = _gmp(filter_fn=convs), _gmp(filter_fn=linears)
    L.Trainer(max_epochs=2, callbacks=[a, b], **QUIET).fit(TinyNet(), loader(), ckpt_path=tmp_path / "last.ckpt")
    assert a.masks.names == ["conv.weight"] and b.masks.names == ["fc1.weight", "fc2.weight"]
    with pytest.raises(ValueError, match=r"final_sparsity: 0\.9 -> 0\.5"):
        _resume(tmp_path / "last.ckpt", _gmp(filter_fn=convs, final_sparsity=0.5))


def test_nm_sparsity_resume_with_another_policy_names_it(tmp_path: Path) -> None:
    ckpt = _first_run(tmp_path, NMSparsity(policy="fixed", ramp_epochs=1.5, verbose=0), TinyNet())
    with pytest.raises(ValueError, match=r"NMSparsity: .*policy: 'fixed' -> 'dynamic'"):
        _resume(ckpt, NMSparsity(policy="dynamic", ramp_epochs=1.5, verbose=0))


def test_one_shot_resume_with_another_calibration_names_it(tmp_path: Path) -> None:
    ckpt = _first_run(tmp_path, OneShotPruning("wanda", sparsity=0.5, calibration_batches=2, verbose=0))
    with pytest.raises(ValueError, match=r"calibration_batches: 2 -> 4"):
        _resume(ckpt, OneShotPruning("wanda", sparsity=0.5, calibration_batches=4, verbose=0))


def _mlp_module(seed: int = 0) -> ClassificationModule:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    return ClassificationModule(net, num_classes=4, optimizer=lambda p: torch.optim.SGD(p, lr=0.05))


def _int4(**kwargs: Any) -> QuantizationAwareTraining:
    # the first Linear's 8 inputs are too few for a group of 16: only the classifier's 32 are quantized
    return QuantizationAwareTraining(scheme="int4_weight_only", group_size=16, verbose=0, **kwargs)


def test_qat_resume_with_another_start_names_it(tmp_path: Path) -> None:
    ckpt = _first_run(tmp_path, _int4(start_epoch=0.5, filter_fn=_big_enough), _mlp_module())
    with pytest.raises(ValueError, match=r"QuantizationAwareTraining: .*start_epoch: 0\.5 -> 0\.0"):
        _resume(ckpt, _int4(filter_fn=_big_enough), _mlp_module(1))


def _big_enough(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, nn.Linear) and module.in_features % 16 == 0


# ---------------------------------------------------------------------------------------------- NaN and Inf
def _poisoned() -> TinyNet:
    model = TinyNet()
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
        model.fc1.weight[1, 1] = float("inf")
    return model


@pytest.mark.parametrize(
    "callback",
    [_gmp(), NMSparsity(policy="fixed", verbose=0), NMSparsity(policy="dynamic", verbose=0)],
    ids=["gmp", "nm-fixed", "nm-dynamic"],
)
def test_nan_weights_are_refused_before_masking(callback: Any) -> None:
    with pytest.raises(
        ValueError, match=r"refusing \w+'s masking \(fit start\): .*values: fc1\.weight \(1 NaN, 1 Inf of 768\)\. "
    ):
        fit(_poisoned(), [callback], max_epochs=2)


class PoisonAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.fc2.weight[0, 0] = float("nan")


@pytest.mark.parametrize("policy", ["fixed", "dynamic"])
def test_weights_that_turn_nan_are_refused_at_the_next_mask_update(policy: str) -> None:
    gmp = _gmp()  # updates every 3 steps: NaN after step 4, refused at 6
    with pytest.raises(ValueError, match=r"mask update at step 6: .* values: .*fc2\.weight \(\d+ NaN"):
        fit(TinyNet(), [gmp, PoisonAt(5)], max_epochs=2)
    assert gmp.current_sparsity < 0.9
    nm = NMSparsity(policy=policy, ramp_epochs=1, update_every_n_steps=3, verbose=0)
    with pytest.raises(ValueError, match=r"NMSparsity's mask update at step 6: .* values: .*fc2\.weight \(\d+ NaN"):
        fit(TinyNet(), [nm, PoisonAt(5)], max_epochs=2)


def test_nan_weights_are_refused_before_qat_prepare_and_convert() -> None:
    module = _mlp_module()
    with torch.no_grad():
        module.model[2].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"refusing int4_weight_only QAT preparation .*: 2\.weight \(1 NaN, 0 Inf"):
        fit(module, [_int4(filter_fn=_big_enough)], max_epochs=1)

    qat = _int4(filter_fn=_big_enough, evaluate_quantized=False)
    module = _mlp_module()
    fit(module, [qat], max_epochs=1)
    with torch.no_grad():
        module.model[2].weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"refusing int4_weight_only conversion.*2\.weight \(0 NaN, 1 Inf of 128\)"):
        qat.convert()


# ----------------------------------------------------------------------------------- final state, best checkpoint
class ScoresEarly(TinyNet):
    """A validation score that only falls: a plain ModelCheckpoint's best would be the first, least pruned one."""

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_score", -float(self.global_step))


def _selection(tmp_path: Path, callbacks: list[Any]) -> FinalStateCheckpoint:
    L.seed_everything(0)
    ckpt = FinalStateCheckpoint(dirpath=tmp_path, monitor="val_score", mode="max", filename="{epoch}", save_last=True)
    L.Trainer(max_epochs=4, callbacks=[*callbacks, ckpt], **CKPT).fit(ScoresEarly(), loader(), loader(16))
    return ckpt


def test_best_checkpoint_is_one_of_the_final_compressed_state(tmp_path: Path) -> None:
    gmp = _gmp(end_epoch=2)  # 8 steps per epoch: the final masks apply at step 16, in the third epoch
    ckpt = _selection(tmp_path, [gmp])
    assert gmp.final_step == 16 and gmp.is_final
    assert [step for step, _ in ckpt.skipped] == [8, 16]
    assert "not final yet (final from step 16)" in ckpt.skipped[0][1]
    assert ckpt.first_final_step == 24 and Path(ckpt.best_model_path).name == "epoch=2.ckpt"
    state = torch.load(ckpt.best_model_path, weights_only=True)["state_dict"]
    weights = [state[name] for name in gmp.masks.names]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.9 * sum(w.numel() for w in weights))  # the best checkpoint holds the final sparsity


def test_without_compression_it_selects_like_model_checkpoint(tmp_path: Path) -> None:
    ckpt = _selection(tmp_path, [])
    assert ckpt.skipped == [] and ckpt.first_final_step == 8 and Path(ckpt.best_model_path).name == "epoch=0.ckpt"


def test_final_state_of_each_callback() -> None:
    nm = NMSparsity(policy="fixed", start_epoch=0.5, ramp_epochs=1, verbose=0)
    one_shot = OneShotPruning("magnitude", sparsity=0.5, verbose=0)
    assert not nm.is_final and nm.final_step is None and not one_shot.is_final
    fit(TinyNet(), [nm], max_epochs=2)
    fit(TinyNet(), [one_shot], max_epochs=1)
    assert nm.is_final and nm.final_step == 12 and one_shot.is_final and one_shot.final_step == 0
    assert nm.describe_state() == "NMSparsity 2:4 (fixed): 100% of the groups 2:4, final from step 12"
    qat = _int4(start_epoch=1, filter_fn=_big_enough, evaluate_quantized=False)
    fit(_mlp_module(), [qat], max_epochs=2)
    assert qat.is_final and qat.final_step == 8
    assert qat.describe_state() == "QuantizationAwareTraining int4_weight_only: fake quant on, final from step 8"
