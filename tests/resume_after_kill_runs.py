"""The runs of tests/test_resume_after_kill.py: one small 2-epoch training per compression callback, built the same
way in the test process and in a child process that SIGKILLs itself in the middle of the second epoch.

``python tests/resume_after_kill_runs.py <config> <folder> <kill step>`` trains ``<config>`` with a last checkpoint
at the end of every epoch in ``<folder>/checkpoints`` (and a teacher cache in ``<folder>/teacher_cache``) and kills
itself with SIGKILL at the start of optimizer step ``<kill step>``: no exception, no ``finally``, no hook runs.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import QUIET, TinyNet, loader  # noqa: E402

from lightning_compress.distillation.distillation_module import DistillationModule  # noqa: E402
from lightning_compress.models import SmallCNN  # noqa: E402
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning  # noqa: E402
from lightning_compress.pruning.one_shot.one_shot_pruning import OneShotPruning  # noqa: E402
from lightning_compress.quantization.qat import QuantizationAwareTraining  # noqa: E402
from lightning_compress.sparsity.nm_sparsity import NMSparsity  # noqa: E402
from lightning_compress.training.classification import ClassificationModule  # noqa: E402

torch.set_num_threads(2)  # as the test process (conftest): the same kernels, the same sums
EPOCHS = 2


class TinyNet4(TinyNet):
    """Every reduction dimension a multiple of 4 (conv kernel 4), so that N:M masks every layer."""

    kernel_size, padding = 4, 2


def _sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def _mlp_module(hidden: int = 32, seed: int = 0) -> ClassificationModule:
    torch.manual_seed(seed)
    return ClassificationModule(nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 4)), 4, optimizer=_sgd)


def _images() -> DataLoader:
    """48 seeded 8x8 images in batches of 16: 3 optimizer steps per epoch."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=16)


def _cnn_module() -> ClassificationModule:
    torch.manual_seed(0)
    return ClassificationModule(SmallCNN(channels=(4, 8), hidden=16, image_size=8), 10, optimizer=_sgd)


def _distillation(folder: Path) -> DistillationModule:
    torch.manual_seed(7)  # the same teacher in every process: its cache files carry its fingerprint
    teacher = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 4))
    return DistillationModule(_mlp_module(16), teacher, temperature=2.0, alpha=0.3, teacher_cache=folder)


@dataclass(frozen=True)
class Config:
    """What one run trains: ``module(folder)``, ``callbacks()``, ``data()``; killed at optimizer step ``kill_step``
    (in the second epoch; the last checkpoint is the end of the first)."""

    module: Callable[[Path], L.LightningModule]
    callbacks: Callable[[], list[Callback]]
    data: Callable[[], DataLoader]
    kill_step: int


def _groups_of_32(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, nn.Linear) and module.in_features % 32 == 0  # the classifier's 32 inputs, not the 8


def _int4() -> list[Callback]:
    return [QuantizationAwareTraining("int4_weight_only", start_epoch=0.5, group_size=32, filter_fn=_groups_of_32,
                                      evaluate_quantized=False, verbose=0)]  # fmt: skip


CONFIGS: dict[str, Config] = {
    # 8 steps per epoch: masks grow at steps 4, 6, ..., 12 and are final from 12; the checkpoint is at 8
    "gmp": Config(
        lambda folder: TinyNet("adamw"),
        lambda: [GradualMagnitudePruning(0.75, start_epoch=0.5, end_epoch=1.5, update_every_n_steps=2, verbose=0)],
        loader,
        12,
    ),
    "nm_fixed": Config(
        lambda folder: TinyNet4("adamw"),
        lambda: [NMSparsity(policy="fixed", start_epoch=0.25, ramp_epochs=1, update_every_n_steps=2, verbose=0)],
        loader,
        11,
    ),
    "nm_dynamic": Config(
        lambda folder: TinyNet4("adamw"),
        lambda: [NMSparsity(policy="dynamic", start_epoch=0.25, update_every_n_steps=3, verbose=0)],
        loader,
        11,
    ),
    "one_shot": Config(
        lambda folder: TinyNet("adamw"),
        lambda: [OneShotPruning("wanda", sparsity=0.5, calibration_batches=2, verbose=0)],
        loader,
        12,
    ),
    # 3 steps per epoch: fake quant from step 2, observers frozen from 3, BN statistics from 4; checkpoint at 3
    "qat_int8": Config(
        lambda folder: _cnn_module(),
        lambda: [
            QuantizationAwareTraining(
                start_epoch=0.5,
                freeze_observers_epoch=1,
                freeze_bn_epoch=1.5,
                evaluate_quantized=False,
                compile_int8=False,
                verbose=0,
            )
        ],  # fmt: skip
        _images,
        5,
    ),
    "qat_int4": Config(lambda folder: _mlp_module(), _int4, loader, 12),  # fake quant from step 4
    "distillation_cache": Config(
        lambda folder: _distillation(folder / "teacher_cache"),
        lambda: [GradualMagnitudePruning(0.5, start_epoch=0.5, end_epoch=1.5, update_every_n_steps=3, verbose=0)],
        loader,
        12,
    ),
}


class KillAt(Callback):
    """SIGKILL this process at the start of optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def run(name: str, folder: Path, ckpt_path: Optional[Path] = None, kill_step: Optional[int] = None) -> dict[str, Any]:
    """Train config ``name`` for 2 epochs (resumed from ``ckpt_path``; killed at ``kill_step``); the module's final
    state, its compression callbacks, the trainer's last global step and the module."""
    config = CONFIGS[name]
    L.seed_everything(0)
    folder.mkdir(parents=True, exist_ok=True)
    module = config.module(folder)
    compression = config.callbacks()
    last = ModelCheckpoint(dirpath=folder / "checkpoints", save_last=True, every_n_epochs=1, filename="{epoch}")
    extra = [KillAt(kill_step)] if kill_step is not None else []
    trainer = L.Trainer(max_epochs=EPOCHS, callbacks=[*compression, last, *extra], **{**QUIET,
                        "enable_checkpointing": True})  # fmt: skip
    trainer.fit(module, config.data(), ckpt_path=ckpt_path)
    return {
        "state": module.state_dict(),
        "callbacks": compression,
        "global_step": trainer.global_step,
        "module": module,
    }


if __name__ == "__main__":
    config_name, out, step = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    run(config_name, out, kill_step=step)
    sys.exit(f"{config_name}: not killed at step {step}")  # reaching the end is a failure of the test set-up
