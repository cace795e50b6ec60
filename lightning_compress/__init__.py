"""lightning_compress: pruning, N:M sparsity, quantization-aware training and distillation for Lightning.

Example:
    >>> from lightning_compress import ClassificationModule
"""

from lightning_compress.classification import ClassificationModule
from lightning_compress.lr_schedule import warmup_lr

__all__ = ["ClassificationModule", "warmup_lr"]
__version__ = "0.1.0"
