"""ClassificationModule: losses, metrics and batch formats, trained for real on small data."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_compress import ClassificationModule, warmup_lr
from lightning_compress.training.classification import task_metrics


def _blobs(n: int = 256, classes: int = 3, seed: int = 0) -> TensorDataset:
    centers = torch.randn(classes, 8, generator=torch.Generator().manual_seed(123)) * 3
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    return TensorDataset(centers[y] + torch.randn(n, 8, generator=g), y)


def _trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_trains_to_high_accuracy_and_logs_metrics() -> None:
    pl.seed_everything(0)
    data = DataLoader(_blobs(), batch_size=32, shuffle=True)
    module = ClassificationModule(
        nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)),
        num_classes=3,
        metrics=["acc", "mcc", "f1"],
        optimizer=partial(torch.optim.AdamW, lr=1e-2),
        scheduler=partial(warmup_lr, warmup=0.1),
        scheduler_interval="step",
    )
    trainer = _trainer(max_epochs=5)
    trainer.fit(module, data, DataLoader(_blobs(seed=1), batch_size=64))
    assert trainer.callback_metrics["val/acc"] > 0.9
    assert trainer.callback_metrics["val/mcc"] > 0.85
    result = trainer.test(module, DataLoader(_blobs(seed=2), batch_size=64), verbose=False)[0]
    assert set(result) == {"test/loss", "test/acc", "test/mcc", "test/f1"}
    # the warm-up/decay schedule received the real step count: lr reached 0 at the last step
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-6)


class _HFLike(nn.Module):
    """Returns an object with `.logits`, like a Hugging Face model, from dict inputs."""

    def __init__(self, vocab: int = 50, out: int = 1) -> None:
        super().__init__()
        self.emb = nn.EmbeddingBag(vocab, 8)
        self.head = nn.Linear(8, out)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.head(self.emb(input_ids * attention_mask)))


def test_regression_on_dict_batches_uses_mse_and_correlations() -> None:
    module = ClassificationModule(_HFLike(out=1), num_classes=1, metrics=["pearson", "spearman"])
    batch = {
        "input_ids": torch.randint(0, 50, (6, 5)),
        "attention_mask": torch.ones(6, 5, dtype=torch.long),
        "labels": torch.linspace(0, 5, 6),
    }
    inputs, labels = module.split_batch(batch)
    logits = module(inputs)
    assert logits.shape == (6, 1)
    assert float(module.loss(logits, labels)) == pytest.approx(float(((logits.squeeze(-1) - labels) ** 2).mean()))
    module.val_metrics.update(module._predictions(logits), labels)
    assert set(module.val_metrics.compute()) == {"val/pearson", "val/spearman"}


def test_cross_entropy_matches_torch() -> None:
    module = ClassificationModule(nn.Linear(4, 3), num_classes=3, label_smoothing=0.1)
    logits, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    expected = nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    assert torch.equal(module.loss(logits, labels), expected)


def test_check_num_classes() -> None:
    module = ClassificationModule(nn.Linear(4, 3), num_classes=5)
    with pytest.raises(ValueError, match="outputs 3 classes but the data has 5"):
        module.check_num_classes((torch.randn(8, 4), torch.zeros(8, dtype=torch.long)))
    ClassificationModule(nn.Linear(4, 5), num_classes=5).check_num_classes((torch.randn(8, 4), torch.zeros(8)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0}, "`num_classes`"),
        ({"scheduler_interval": "batch"}, "`scheduler_interval` can be"),
        ({"label_smoothing": 1.0}, "`label_smoothing`"),
        ({"metrics": ["auc"]}, "got 'auc'"),
        ({"metrics": ["pearson"]}, "regression"),
        ({"metrics": []}, "`metrics`"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClassificationModule(nn.Linear(4, 3), **{"num_classes": 3, **kwargs})


def test_task_metrics_binary_f1_is_the_positive_class_f1() -> None:
    metrics = task_metrics(["f1", "acc"], num_classes=2)
    preds, target = torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 0, 1])
    out = metrics(preds, target)
    assert out["f1"] == pytest.approx(0.5) and out["acc"] == pytest.approx(0.5)
