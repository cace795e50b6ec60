"""The prune-then-distil presets compose and run through the real training function."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from lightning_compress.cli.train import CONFIG_DIR, train
from lightning_compress.distillation.students import pruned_student
from lightning_compress.models import SmallCNN


def compose_train(overrides: list[str], output_dir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def test_pruned_student_of_a_frozen_teacher_is_trainable() -> None:
    teacher = SmallCNN().requires_grad_(False)
    student = pruned_student(teacher, [(torch.randn(4, 1, 28, 28), torch.arange(4))], channels=0.25)
    assert student.features[0].out_channels == 12 and student.training
    assert all(p.requires_grad for p in student.parameters()) and teacher.features[0].out_channels == 16


def test_pruned_student_bad_input() -> None:
    batches = [(torch.randn(4, 1, 28, 28), torch.arange(4))]
    with pytest.raises(ValueError, match=r"`channels` must be a float in \[0, 1\)"):
        pruned_student(SmallCNN(), batches, channels=1.0)
    with pytest.raises(ValueError, match="set one kind"):
        pruned_student(SmallCNN(), batches, heads=0.5, channels=0.5)
    with pytest.raises(ValueError, match="`model` must be a BERT-family"):
        pruned_student(SmallCNN(), batches, heads=0.5)


def test_preset_mnist_prune_distill(tmp_path: Path) -> None:
    ckpt = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in SmallCNN().state_dict().items()}}, ckpt)
    cfg = compose_train(
        [
            "experiment=mnist_prune_distill",
            f"compression.distill.teacher={ckpt}",
            "+trainer.fast_dev_run=true",
            "trainer.enable_progress_bar=false",
            "~callbacks.progress_bar",
            "~callbacks.model_summary",
        ],
        tmp_path,
    )
    assert cfg.model.calibration._target_ == cfg.data._target_
    train(cfg)


@pytest.mark.slow
def test_preset_rotten_tomatoes_prune_distill(tmp_path: Path) -> None:
    from lightning_compress.models import huggingface_classifier, offline_minilm_path

    teacher = huggingface_classifier(offline_minilm_path(), num_labels=2)
    ckpt = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in teacher.state_dict().items()}}, ckpt)
    cfg = compose_train(
        [
            "experiment=rotten_tomatoes_prune_distill",
            f"compression.distill.teacher={ckpt}",
            "data.batch_size=4",
            "data.max_train_samples=8",
            "data.max_eval_samples=4",
            "model.max_batches=1",
            "+trainer.fast_dev_run=true",
            "trainer.enable_progress_bar=false",
            "~callbacks.progress_bar",
            "~callbacks.model_summary",
        ],
        tmp_path,
    )
    train(cfg)
