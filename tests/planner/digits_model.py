"""A SmallCNN trained for 2 epochs on the sklearn digits, deterministically: the model of the real planner test
(``lc-compress tests/planner/digits_model.py:trained_cnn --data digits``)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from lightning_compress.data import DigitsDataModule
from lightning_compress.models import SmallCNN
from lightning_compress.training.classification import ClassificationModule


def trained_cnn() -> SmallCNN:
    torch.manual_seed(0)
    net = SmallCNN(num_classes=10, channels=(8, 16), hidden=32, image_size=8)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, deterministic=True)  # fmt: skip
    trainer.fit(ClassificationModule(net, num_classes=10), datamodule=DigitsDataModule(batch_size=64))
    return net.eval()
