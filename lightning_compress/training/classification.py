"""A LightningModule that trains any classifier (CNN, torchvision, Hugging Face) with task metrics."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryF1Score, MatthewsCorrCoef, MulticlassAccuracy, MulticlassF1Score
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef
from typing_extensions import override

from lightning_compress.core.batches import first_batch, stage_dataloader
from lightning_compress.core.validation import ArgumentErrors

__all__ = ["ClassificationModule", "task_metrics", "METRIC_NAMES"]

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]

METRIC_NAMES = ("acc", "f1", "mcc", "pearson", "spearman")
_REGRESSION_METRICS = {"pearson", "spearman"}
_INTERVALS = ("step", "epoch")


def task_metrics(names: Sequence[str], num_classes: int) -> MetricCollection:
    """Builds the torchmetrics of a task.

    Args:
        names: metric names from ``METRIC_NAMES``; ``pearson``/``spearman`` need ``num_classes == 1`` (regression),
            the others ``num_classes >= 2``. ``f1`` is the positive-class F1 for two classes, macro F1 otherwise.
        num_classes: model outputs per example; 1 means regression.

    Raises:
        ValueError: an unknown name, or a name that does not fit the task.

    Example:
        >>> sorted(task_metrics(["acc", "mcc"], num_classes=2).keys())
        ['acc', 'mcc']
    """
    metrics: dict[str, Metric] = {}
    for name in names:
        if name not in METRIC_NAMES:
            raise ValueError(f"`metrics` entries must be among {', '.join(METRIC_NAMES)}, got {name!r}")
        if (name in _REGRESSION_METRICS) != (num_classes == 1):
            kind = "regression (num_classes=1)" if name in _REGRESSION_METRICS else "classification (num_classes>=2)"
            raise ValueError(f"metric {name!r} is for {kind}, got `num_classes`={num_classes}")
        if name == "acc":
            metrics[name] = MulticlassAccuracy(num_classes=num_classes, average="micro")
        elif name == "f1":
            metrics[name] = BinaryF1Score() if num_classes == 2 else MulticlassF1Score(num_classes, average="macro")
        elif name == "mcc":
            metrics[name] = MatthewsCorrCoef(task="multiclass", num_classes=num_classes)
        elif name == "pearson":
            metrics[name] = PearsonCorrCoef()
        else:
            metrics[name] = SpearmanCorrCoef()
    return MetricCollection(metrics)


class ClassificationModule(pl.LightningModule):
    """Trains a classifier (or a one-output regressor) with cross-entropy (MSE) and per-task metrics.

    Batches are ``(inputs, labels)`` tuples or Hugging Face dicts holding ``labels``; a model output with a
    ``.logits`` attribute (Hugging Face) is unwrapped. Logs ``train/loss``, ``val/loss``, ``val/<metric>`` and
    ``test/<metric>``.

    Args:
        model: any ``nn.Module`` mapping inputs to logits of shape ``(B, num_classes)``.
        num_classes: classes of the task; 1 means regression (MSE loss, labels float ``(B,)``). None: read from the
            width of the model's logits on the first batch of the stage's dataloader, in ``setup`` (or by
            :meth:`check_num_classes`); the metrics are built then.
        metrics: metric names (see ``task_metrics``), the primary one first.
        optimizer: a factory ``params -> Optimizer`` (a ``functools.partial`` or a Hydra ``_partial_`` node);
            AdamW(lr=1e-3) when omitted.
        scheduler: a factory ``optimizer -> LRScheduler``; if it takes ``total_steps``, the trainer's number of
            optimizer steps is passed.
        scheduler_interval: ``"step"`` or ``"epoch"``.
        label_smoothing: cross-entropy label smoothing.

    Raises:
        ValueError: bad ``num_classes``, metric names, ``scheduler_interval`` or ``label_smoothing``; when ``fit``
            starts on an empty train dataloader.

    Example:
        >>> module = ClassificationModule(nn.Linear(4, 3), num_classes=3)
        >>> module.training_step((torch.randn(8, 4), torch.randint(0, 3, (8,))), 0).shape
        torch.Size([])
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int | None = None,
        metrics: Sequence[str] = ("acc",),
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        errors = ArgumentErrors()
        errors.int("num_classes", num_classes, optional=True)
        errors.one_of("scheduler_interval", scheduler_interval, _INTERVALS)
        errors.interval("label_smoothing", label_smoothing, 0, 1, "[)")
        if isinstance(metrics, str):
            errors.add(f"`metrics` must be a list of metric names, got the string {metrics!r} (write [{metrics!r}])")
        elif errors.require(len(tuple(metrics)) > 0, "metrics", "a list of at least one metric name", metrics):
            for name in metrics:
                errors.one_of("metrics", name, METRIC_NAMES)
        errors.raise_if_any()
        metrics = tuple(metrics)  # a plain tuple in the saved hyperparameters (not a Hydra ListConfig: weights_only)
        self.model = model
        self.num_classes: int | None = None
        self.metric_names = metrics
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.label_smoothing = label_smoothing
        self.val_metrics: MetricCollection | None = None
        self.test_metrics: MetricCollection | None = None
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        if num_classes is not None:
            self._set_num_classes(num_classes)

    def _set_num_classes(self, num_classes: int) -> None:
        """Fix the class count and build the metrics for it (checked against the metric names)."""
        self.val_metrics = task_metrics(self.metric_names, num_classes).clone(prefix="val/")
        self.test_metrics = task_metrics(self.metric_names, num_classes).clone(prefix="test/")
        self.num_classes = num_classes
        self.hparams["num_classes"] = num_classes

    def fit_metric_names(self) -> tuple[str, ...]:
        """The metrics this module logs during ``fit``, which a ``ModelCheckpoint`` or ``EarlyStopping`` may monitor.

        Example:
            >>> ClassificationModule(nn.Linear(4, 3), num_classes=3, metrics=("acc", "f1")).fit_metric_names()
            ('train/loss', 'val/loss', 'val/acc', 'val/f1')
        """
        return ("train/loss", "val/loss", *(f"val/{name}" for name in self.metric_names))

    @property
    def is_regression(self) -> bool:
        return self.num_classes == 1

    @override
    def forward(self, inputs: Any) -> Tensor:
        """Logits ``(B, num_classes)`` for a tensor input or a dict of Hugging Face model inputs."""
        out = self.model(**inputs) if isinstance(inputs, Mapping) else self.model(inputs)
        return out.logits if hasattr(out, "logits") else out

    @staticmethod
    def split_batch(batch: Any) -> tuple[Any, Tensor]:
        """Splits a ``(x, y)`` tuple or a dict with ``labels`` into model inputs and labels."""
        if isinstance(batch, Mapping):
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            return inputs, batch["labels"]
        inputs, labels = batch
        return inputs, labels

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy on ``(B, C)`` logits and ``(B,)`` int labels, or MSE for one-output regression."""
        if self.is_regression:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)

    def _predictions(self, logits: Tensor) -> Tensor:
        if self.is_regression:
            return logits.squeeze(-1).float()
        return logits.argmax(dim=-1) if "f1" in self.metric_names and self.num_classes == 2 else logits.float()

    def logits_width(self, batch: Any) -> int:
        """The width of the model's logits on two examples of ``batch`` (run in eval mode, without gradients)."""
        inputs, _ = self.split_batch(batch)
        if isinstance(inputs, Mapping):
            inputs = {k: v[:2] for k, v in inputs.items()}
        else:
            inputs = inputs[:2]
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return int(self(inputs).shape[-1])
        finally:
            self.train(was_training)

    def check_num_classes(self, batch: Any) -> None:
        """Runs the model on two examples of ``batch`` and checks its output width against ``num_classes`` (or, when
        it was not given, takes it from there).

        Raises:
            ValueError: the model's output width differs from the data's label count.
        """
        width = self.logits_width(batch)
        if self.num_classes is None:
            self._set_num_classes(width)
        elif width != self.num_classes:
            raise ValueError(
                f"the model outputs {width} classes but the data has {self.num_classes} "
                f"(check `model.num_classes` / `model.num_labels` against the data set)"
            )

    @override
    def setup(self, stage: str) -> None:
        if self.num_classes is None:
            self.check_num_classes(first_batch(self.trainer, stage))
        elif stage == "fit" and self.trainer.limit_train_batches != 0:
            self._check_train_loader()

    def _check_train_loader(self) -> None:
        """An empty train loader is an error before anything runs (Lightning only warns, then fits nothing)."""
        try:
            batches = len(stage_dataloader(self.trainer, "fit"))  # type: ignore[arg-type]
        except (TypeError, ValueError):  # no length (an iterable dataset), or no loader: Lightning reports that
            return
        if batches == 0:
            raise ValueError(
                "ClassificationModule: the train dataloader is empty (0 batches), so fit would run no training step;"
                " pass a dataloader with at least one batch (or set `limit_train_batches=0` to skip training)"
            )

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs, labels = self.split_batch(batch)
        loss = self.loss(self(inputs), labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=labels.shape[0])
        return loss

    def _eval_step(self, batch: Any, stage: str, metrics: MetricCollection) -> None:
        inputs, labels = self.split_batch(batch)
        logits = self(inputs)
        self.log(f"{stage}/loss", self.loss(logits, labels), prog_bar=True, batch_size=labels.shape[0])
        metrics.update(self._predictions(logits), labels.float() if self.is_regression else labels)
        self.log_dict(metrics, prog_bar=True)

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        assert self.val_metrics is not None, "the class count is known from `setup` on"
        self._eval_step(batch, "val", self.val_metrics)

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        assert self.test_metrics is not None, "the class count is known from `setup` on"
        self._eval_step(batch, "test", self.test_metrics)

    @override
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            optimizer = torch.optim.AdamW(params, lr=1e-3)
        else:
            optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        kwargs: dict[str, Any] = {}
        if "total_steps" in inspect.signature(self.scheduler_factory).parameters:
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}
