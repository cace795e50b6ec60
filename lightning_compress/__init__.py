"""lightning_compress: pruning, N:M sparsity, quantization-aware training and distillation for Lightning.

Compression techniques are callbacks (or a module wrapper) added to the Trainer you already have:

Example:
    >>> import lightning.pytorch as pl
    >>> from lightning_compress import GradualMagnitudePruning
    >>> trainer = pl.Trainer(max_epochs=12, callbacks=[GradualMagnitudePruning(final_sparsity=0.9, end_epoch=8)])
"""

from lightning_compress.classification import ClassificationModule
from lightning_compress.gradual_magnitude_pruning import GradualMagnitudePruning
from lightning_compress.lr_schedule import warmup_lr
from lightning_compress.magnitude import global_magnitude_masks, magnitude_mask, num_to_prune
from lightning_compress.masking import ParameterMasks, compression_target, pack_mask, unpack_mask
from lightning_compress.prunable_weights import prunable_weights
from lightning_compress.sparsity_report import SparsityReport, sparsity_report
from lightning_compress.sparsity_schedule import constant_schedule, cubic_schedule, linear_schedule, sparsity_at_step

__all__ = [
    "ClassificationModule",
    "GradualMagnitudePruning",
    "ParameterMasks",
    "SparsityReport",
    "compression_target",
    "constant_schedule",
    "cubic_schedule",
    "global_magnitude_masks",
    "linear_schedule",
    "magnitude_mask",
    "num_to_prune",
    "pack_mask",
    "prunable_weights",
    "sparsity_at_step",
    "sparsity_report",
    "unpack_mask",
    "warmup_lr",
]
__version__ = "0.1.0"
