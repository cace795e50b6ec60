"""The distillation configs: conf/compression/distill.yaml and the two presets compose, instantiate and run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from lightning_compress.cli.train import CONFIG_DIR
from lightning_compress.distillation.distillation_module import DistillationModule
from lightning_compress.models import SmallCNN
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning


def compose_train(overrides: list[str], output_dir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def build_and_fit(cfg: DictConfig) -> tuple[L.LightningModule, list[Any]]:
    """What `lc-train` does once it knows about `compression.distill` (the change proposed for train.py)."""
    L.seed_everything(cfg.seed)
    datamodule = instantiate(cfg.data)
    key = "num_labels" if "name_or_path" in cfg.model else "num_classes"
    model = instantiate(cfg.model, **({} if cfg.model.get(key) is not None else {key: datamodule.num_classes}))
    module = instantiate(
        cfg.module,
        model=model,
        num_classes=datamodule.num_classes,
        metrics=list(datamodule.metrics),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    )
    compression = cfg.get("compression") or {}
    if compression.get("distill") is not None:
        module = instantiate(compression.distill)(student=module)
    callbacks = [instantiate(node) for name, node in compression.items() if node is not None and name != "distill"]
    datamodule.setup("fit")
    module.check_num_classes(next(iter(datamodule.train_dataloader())))
    trainer = L.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    trainer.fit(module, datamodule=datamodule)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return module, callbacks


@pytest.fixture(scope="module")
def mnist_teacher_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint in the layout `lc-train experiment=mnist_cnn model.channels=[64,128] model.hidden=256` writes."""
    path = tmp_path_factory.mktemp("teacher") / "last.ckpt"
    teacher = SmallCNN(channels=(64, 128), hidden=256)
    torch.save({"state_dict": {f"model.{k}": v for k, v in teacher.state_dict().items()}}, path)
    return path


def test_distill_node_is_a_partial_that_wraps_the_student(tmp_path: Path) -> None:
    cfg = compose_train(["compression=distill"], tmp_path)
    partial = instantiate(cfg.compression.distill)
    assert partial.func is DistillationModule
    with pytest.raises(ValueError, match="`teacher` must be an nn.Module, a Hugging Face model folder or a checkpoint"):
        partial(student=instantiate(cfg.module, model=SmallCNN(), num_classes=10))


def test_distill_and_gmp_compose(tmp_path: Path, mnist_teacher_ckpt: Path) -> None:
    cfg = compose_train(
        ["experiment=mnist_distill", "compression=[distill,gmp]", f"compression.distill.teacher={mnist_teacher_ckpt}"],
        tmp_path,
    )
    assert set(cfg.compression) == {"distill", "gmp"}
    module, callbacks = build_and_fit(cfg)
    assert isinstance(module, DistillationModule)
    (pruning,) = callbacks
    assert isinstance(pruning, GradualMagnitudePruning) and pruning.masks.names[0] == "model.features.0.weight"


def test_preset_mnist_distill(tmp_path: Path, mnist_teacher_ckpt: Path) -> None:
    cfg = compose_train(["experiment=mnist_distill", f"compression.distill.teacher={mnist_teacher_ckpt}"], tmp_path)
    module, _ = build_and_fit(cfg)
    assert isinstance(module, DistillationModule)
    assert [c for c in module.student.model.features if isinstance(c, torch.nn.Conv2d)][0].out_channels == 8
    assert [c for c in module.teacher.features if isinstance(c, torch.nn.Conv2d)][0].out_channels == 64


def test_presets_need_a_teacher(tmp_path: Path) -> None:
    cfg = compose_train(["experiment=mnist_distill"], tmp_path)
    with pytest.raises(ValueError, match="`teacher` must be an nn.Module, a Hugging Face model folder or a checkpoint"):
        build_and_fit(cfg)


@pytest.mark.slow
def test_preset_rotten_tomatoes_distill(tmp_path: Path) -> None:
    """The student keeps layers 1, 3, 5 of a (here: not fine-tuned) MiniLM teacher checkpoint."""
    from lightning_compress.models import huggingface_classifier, offline_minilm_path

    teacher = huggingface_classifier(offline_minilm_path(), num_labels=2)
    ckpt = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in teacher.state_dict().items()}}, ckpt)
    cfg = compose_train(
        [
            "experiment=rotten_tomatoes_distill",
            f"compression.distill.teacher={ckpt}",
            "data.batch_size=4",
            "data.max_train_samples=8",
            "data.max_eval_samples=4",
        ],
        tmp_path,
    )
    module, _ = build_and_fit(cfg)
    assert module.student.model.config.num_hidden_layers == 3 and module.teacher.config.num_hidden_layers == 6
    assert torch.equal(module.teacher.classifier.weight, teacher.classifier.weight)  # the teacher is the checkpoint
