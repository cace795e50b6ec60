"""Lightning glue for training the models the library compresses: a classification module and learning-rate
schedules (what ``lc-train`` builds from its configs)."""

from lightning_compress.training.classification import ClassificationModule, task_metrics
from lightning_compress.training.lr_schedule import warmup_lr

__all__ = ["ClassificationModule", "task_metrics", "warmup_lr"]
