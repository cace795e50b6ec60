"""lightning_compress: pruning, N:M sparsity, quantization-aware training and distillation for Lightning.

Compression techniques are callbacks (or a module wrapper) added to the Trainer you already have:

Example:
    >>> import lightning.pytorch as pl
    >>> from lightning_compress import GradualMagnitudePruning
    >>> trainer = pl.Trainer(max_epochs=12, callbacks=[GradualMagnitudePruning(final_sparsity=0.9, end_epoch=8)])
    >>> from lightning_compress import NMSparsity
    >>> trainer = pl.Trainer(max_epochs=12, callbacks=[NMSparsity(n=2, m=4)])
    >>> from lightning_compress import QuantizationAwareTraining
    >>> trainer = pl.Trainer(max_epochs=3, callbacks=[QuantizationAwareTraining(scheme="int8")])
"""

from lightning_compress.bench import BenchResult, benchmark_gemm, benchmark_model
from lightning_compress.channel_pruning import prune_channels, remove_channels
from lightning_compress.classification import ClassificationModule
from lightning_compress.compressed_format import load_compressed, save_compressed
from lightning_compress.compression_advice import advise
from lightning_compress.distillation import DistillationModule
from lightning_compress.distillation_loss import feature_loss, kd_loss
from lightning_compress.gradual_magnitude_pruning import GradualMagnitudePruning
from lightning_compress.lr_schedule import warmup_lr
from lightning_compress.magnitude import global_magnitude_masks, magnitude_mask, num_to_prune
from lightning_compress.masking import (
    ParameterMasks,
    broadcast_masks,
    compression_target,
    pack_mask,
    schedule_step,
    unpack_mask,
)
from lightning_compress.nm_mask import is_nm_sparse, nm_mask, partial_nm_mask
from lightning_compress.nm_sparsity import NMSparsity
from lightning_compress.one_shot_pruning import OneShotResult, one_shot_prune
from lightning_compress.one_shot_pruning_callback import OneShotPruning
from lightning_compress.prunable_weights import prunable_weights
from lightning_compress.pruned_student import pruned_student
from lightning_compress.quantization_aware_training import (
    QuantizationAwareTraining,
    convert_to_int4,
    convert_to_int8,
    load_quantized,
    prepare_int4_qat,
    prepare_qat,
    save_quantized,
    set_qat_mode,
)
from lightning_compress.report import CompressionReport, compression_report
from lightning_compress.semi_structured import to_semi_structured
from lightning_compress.sparsegpt import sparsegpt_prune
from lightning_compress.sparsity_report import SparsityReport, sparsity_report
from lightning_compress.sparsity_schedule import constant_schedule, cubic_schedule, linear_schedule, sparsity_at_step
from lightning_compress.structured_pruning import StructuredPruningReport
from lightning_compress.student_builders import layer_subset_student, small_cnn_student
from lightning_compress.teacher import load_teacher
from lightning_compress.teacher_cache import TeacherCache
from lightning_compress.transformer_pruning import prune_ffn_neurons, prune_heads
from lightning_compress.wanda import wanda_mask

__all__ = [
    "BenchResult",
    "ClassificationModule",
    "CompressionReport",
    "DistillationModule",
    "GradualMagnitudePruning",
    "NMSparsity",
    "OneShotPruning",
    "OneShotResult",
    "ParameterMasks",
    "QuantizationAwareTraining",
    "SparsityReport",
    "StructuredPruningReport",
    "TeacherCache",
    "advise",
    "benchmark_gemm",
    "benchmark_model",
    "broadcast_masks",
    "compression_report",
    "compression_target",
    "constant_schedule",
    "convert_to_int4",
    "convert_to_int8",
    "cubic_schedule",
    "feature_loss",
    "global_magnitude_masks",
    "is_nm_sparse",
    "kd_loss",
    "layer_subset_student",
    "linear_schedule",
    "load_compressed",
    "load_quantized",
    "load_teacher",
    "magnitude_mask",
    "nm_mask",
    "num_to_prune",
    "one_shot_prune",
    "pack_mask",
    "partial_nm_mask",
    "prepare_int4_qat",
    "prepare_qat",
    "prunable_weights",
    "prune_channels",
    "prune_ffn_neurons",
    "prune_heads",
    "pruned_student",
    "remove_channels",
    "save_compressed",
    "save_quantized",
    "schedule_step",
    "set_qat_mode",
    "small_cnn_student",
    "sparsegpt_prune",
    "sparsity_at_step",
    "sparsity_report",
    "to_semi_structured",
    "unpack_mask",
    "wanda_mask",
    "warmup_lr",
]
__version__ = "0.1.0"
