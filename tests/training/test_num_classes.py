"""The class count read from the logits when not given: a ClassificationModule, and a bare distillation student."""

from __future__ import annotations

import functools

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_compress.distillation import DistillationModule
from lightning_compress.training import ClassificationModule

TRAINER = dict(
    accelerator="cpu",
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    enable_checkpointing=False,
    num_sanity_val_steps=0,
    max_epochs=1,
)
SGD = functools.partial(torch.optim.SGD, lr=0.05)


def _loader(classes: int = 5) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, generator=g)
    return DataLoader(TensorDataset(x, torch.randint(0, classes, (32,), generator=g)), batch_size=8)


def test_classification_module_reads_the_class_count_in_setup() -> None:
    module = ClassificationModule(nn.Linear(6, 5), metrics=("acc", "f1"), optimizer=SGD)
    assert module.num_classes is None and module.val_metrics is None
    trainer = pl.Trainer(**TRAINER)
    trainer.fit(module, _loader(), _loader())
    assert module.num_classes == 5 and module.hparams["num_classes"] == 5
    assert "val/acc" in trainer.callback_metrics and "val/f1" in trainer.callback_metrics
    assert module.val_metrics["acc"].num_classes == 5


def test_check_num_classes_sets_it_once_and_then_checks_it() -> None:
    module = ClassificationModule(nn.Linear(6, 1))  # one output: regression metrics must be asked for
    with pytest.raises(ValueError, match="metric 'acc' is for classification"):
        module.check_num_classes(next(iter(_loader())))
    module = ClassificationModule(nn.Linear(6, 3))
    module.check_num_classes(next(iter(_loader())))
    assert module.num_classes == 3
    module.model = nn.Linear(6, 4)
    with pytest.raises(ValueError, match="the model outputs 4 classes but the data has 3"):
        module.check_num_classes(next(iter(_loader())))


def test_bad_num_classes_and_metrics_are_named() -> None:
    with pytest.raises(ValueError, match=r"`num_classes` must be an int >= 1 or None, got 0"):
        ClassificationModule(nn.Linear(2, 2), num_classes=0)
    with pytest.raises(ValueError, match=r"`metrics` must be a list of metric names, got the string 'acc'"):
        ClassificationModule(nn.Linear(2, 2), num_classes=2, metrics="acc")
    with pytest.raises(ValueError, match=r"`metrics` can be acc, f1, mcc, pearson or spearman, got 'auc'"):
        ClassificationModule(nn.Linear(2, 2), num_classes=2, metrics=["auc"])


def test_a_bare_distillation_student_needs_no_num_classes() -> None:
    torch.manual_seed(0)
    module = DistillationModule(nn.Linear(6, 5), teacher=nn.Linear(6, 5), optimizer=SGD)
    assert module.student.num_classes is None
    trainer = pl.Trainer(**TRAINER)
    trainer.fit(module, _loader(), _loader())
    assert module.student.num_classes == 5
    assert "val/acc" in trainer.callback_metrics


def test_a_bare_student_that_disagrees_with_its_teacher_fails_in_setup() -> None:
    module = DistillationModule(nn.Linear(6, 4), teacher=nn.Linear(6, 5), optimizer=SGD)
    with pytest.raises(ValueError, match="the teacher outputs 5 classes but the student outputs 4"):
        pl.Trainer(**TRAINER).fit(module, _loader())
