"""lightning_compress: pruning, N:M sparsity, quantization and distillation as plugins for the Lightning Trainer.

Compression techniques are callbacks (or a module wrapper) added to the Trainer you already have:

Example:
    >>> import lightning.pytorch as pl
    >>> from lightning_compress import GradualMagnitudePruning
    >>> trainer = pl.Trainer(max_epochs=12, callbacks=[GradualMagnitudePruning(final_sparsity=0.9, end_epoch=8)])
    >>> from lightning_compress import NMSparsity
    >>> trainer = pl.Trainer(max_epochs=12, callbacks=[NMSparsity(n=2, m=4)])
    >>> from lightning_compress import QuantizationAwareTraining
    >>> trainer = pl.Trainer(max_epochs=3, callbacks=[QuantizationAwareTraining(scheme="int8")])

The package is laid out by technique (``core``, ``sparsity``, ``pruning`` with ``one_shot`` and ``structured``,
``quantization``, ``distillation``, ``export``, ``analysis``, ``bench``, ``training``, beside ``data`` and ``models``;
the console scripts live in ``cli``). Every public name is importable from here; each is imported on first use, so
``import lightning_compress`` itself loads no technique, benchmark, plotting or command-line code.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from lightning_compress import _compat

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # core
    "ParameterMasks": "core.masks",
    "pack_mask": "core.masks",
    "unpack_mask": "core.masks",
    "broadcast_masks": "core.distributed",
    "compression_target": "core.target",
    "CompressionCallback": "core.compression_callback",
    "FinalStateCheckpoint": "core.final_state_checkpoint",
    "find_network": "core.target",
    "schedule_step": "core.target",
    "prunable_weights": "core.selection",
    "select_layers": "core.selection",
    # sparsity
    "NMSparsity": "sparsity.nm_sparsity",
    "is_nm_sparse": "sparsity.nm_masks",
    "nm_mask": "sparsity.nm_masks",
    "partial_nm_mask": "sparsity.nm_masks",
    "to_semi_structured": "sparsity.semi_structured",
    "to_semi_structured_": "sparsity.semi_structured",
    # pruning
    "GradualMagnitudePruning": "pruning.gradual_magnitude_pruning",
    "global_magnitude_masks": "pruning.magnitude",
    "magnitude_mask": "pruning.magnitude",
    "num_to_prune": "pruning.magnitude",
    "constant_schedule": "pruning.schedule",
    "cubic_schedule": "pruning.schedule",
    "linear_schedule": "pruning.schedule",
    "sparsity_at_step": "pruning.schedule",
    "OneShotPruning": "pruning.one_shot.one_shot_pruning",
    "OneShotResult": "pruning.one_shot.prune",
    "one_shot_prune": "pruning.one_shot.prune",
    "sparsegpt_prune": "pruning.one_shot.sparsegpt",
    "wanda_mask": "pruning.one_shot.wanda",
    "StructuredPruningReport": "pruning.structured.report",
    "prune_channels": "pruning.structured.channels",
    "remove_channels": "pruning.structured.channels",
    "prune_ffn_neurons": "pruning.structured.transformer",
    "prune_heads": "pruning.structured.transformer",
    "load_pruned": "pruning.structured.serialization",
    "save_pruned": "pruning.structured.serialization",
    # quantization
    "QuantizationAwareTraining": "quantization.qat",
    "prepare_qat": "quantization.pt2e",
    "convert_to_int8": "quantization.pt2e",
    "set_qat_mode": "quantization.qat_modes",
    "prepare_int4_qat": "quantization.int4",
    "convert_to_int4": "quantization.int4",
    "load_quantized": "quantization.serialization",
    "PostTrainingQuantization": "quantization.post_training_quantization",
    "quantize": "quantization.ptq",
    "quantization_sensitivity": "quantization.sensitivity",
    "save_quantized": "quantization.serialization",
    "one_shot_quantize": "quantization.weight_only.quantize",
    "OneShotQuantization": "quantization.weight_only.one_shot_quantization",
    "QuantizationResult": "quantization.weight_only.quantize",
    "gptq_quantize": "quantization.weight_only.gptq",
    "awq_quantize": "quantization.weight_only.awq",
    "Int4WeightOnlyLinear": "quantization.weight_only.weight_only_linear",
    "Int8WeightOnlyLinear": "quantization.weight_only.weight_only_linear",
    "to_weight_only_": "quantization.weight_only.weight_only_linear",
    "save_weight_only": "quantization.weight_only.weight_only_file",
    "load_weight_only": "quantization.weight_only.weight_only_file",
    "Int8Embedding": "quantization.weight_only.int8_embedding",
    "int8_embedding_": "quantization.weight_only.int8_embedding",
    # distillation
    "DistillationModule": "distillation.distillation_module",
    "feature_loss": "distillation.losses",
    "kd_loss": "distillation.losses",
    "load_teacher": "distillation.teacher",
    "TeacherCache": "distillation.teacher_cache",
    "layer_subset_student": "distillation.students",
    "pruned_student": "distillation.students",
    "small_cnn_student": "distillation.students",
    # export
    "load_compressed": "export.compressed_format",
    "save_compressed": "export.compressed_format",
    "ExportCallback": "export.export_callback",
    "load_onnx": "export.onnx_runtime",
    "ort_kernels": "export.onnx_qdq",
    "load_packed": "export.packed_loader",
    "save_hf_compressed_tensors": "export.hf_compressed_tensors",
    # analysis
    "CompressionReport": "analysis.report",
    "compression_report": "analysis.report",
    "sparsity_report": "analysis.report",
    "perplexity": "analysis.perplexity",
    "token_windows": "analysis.perplexity",
    # bench
    "BenchResult": "bench.results",
    "benchmark_gemm": "bench.gemm_benchmark",
    "benchmark_model": "bench.model_benchmark",
    "advise": "bench.advice",
    # planner
    "Budget": "planner.budget",
    "CompressionPlanner": "planner.planner_callback",
    "compress": "planner.walk",
    # training
    "ClassificationModule": "training.classification",
    "warmup_lr": "training.lr_schedule",
}

# old public name -> (new public name, why it changed)
_RENAMED: dict[str, tuple[str, str]] = {
    "SparsityReport": ("CompressionReport", "the sparsity report is a CompressionReport (one report type)"),
}

__all__ = sorted([*_EXPORTS, *_RENAMED])


# subpackages reachable as attributes before their first import (`export` is also the export verb: its package is
# callable)
_SUBPACKAGES = frozenset({"export"})


def __getattr__(name: str) -> Any:
    if name in _RENAMED:  # warns at every use: never cached
        new, why = _RENAMED[name]
        _compat.warn_renamed(f"lightning_compress.{name}", f"lightning_compress.{new}", why)
        return __getattr__(new)
    if name not in _EXPORTS:
        if name in _SUBPACKAGES:  # `lightning_compress.export(...)`: the callable export package
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The package module: importing an old module path whose name is also a public name
    (``lightning_compress.nm_mask``,
    ``.prunable_weights``, ``.pruned_student``, ``.sparsity_report``) must not replace that name with the old module,
    which the import system would do by setting the package attribute."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, _compat.MovedModule):
            return  # the old module stays in sys.modules; `lightning_compress.<name>` stays the public object
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
_compat.install()

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names above are imported on first use
    from lightning_compress.analysis.perplexity import perplexity, token_windows
    from lightning_compress.analysis.report import CompressionReport, compression_report, sparsity_report
    from lightning_compress.bench.advice import advise
    from lightning_compress.bench.gemm_benchmark import benchmark_gemm
    from lightning_compress.bench.model_benchmark import benchmark_model
    from lightning_compress.bench.results import BenchResult
    from lightning_compress.core.compression_callback import CompressionCallback
    from lightning_compress.core.distributed import broadcast_masks
    from lightning_compress.core.final_state_checkpoint import FinalStateCheckpoint
    from lightning_compress.core.masks import ParameterMasks, pack_mask, unpack_mask
    from lightning_compress.core.selection import prunable_weights, select_layers
    from lightning_compress.core.target import compression_target, find_network, schedule_step
    from lightning_compress.distillation.distillation_module import DistillationModule
    from lightning_compress.distillation.losses import feature_loss, kd_loss
    from lightning_compress.distillation.students import layer_subset_student, pruned_student, small_cnn_student
    from lightning_compress.distillation.teacher import load_teacher
    from lightning_compress.distillation.teacher_cache import TeacherCache
    from lightning_compress.export.compressed_format import load_compressed, save_compressed
    from lightning_compress.export.export_callback import ExportCallback
    from lightning_compress.export.hf_compressed_tensors import save_hf_compressed_tensors
    from lightning_compress.export.onnx_qdq import ort_kernels
    from lightning_compress.export.onnx_runtime import load_onnx
    from lightning_compress.export.packed_loader import load_packed
    from lightning_compress.planner.budget import Budget
    from lightning_compress.planner.planner_callback import CompressionPlanner
    from lightning_compress.planner.walk import compress
    from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning
    from lightning_compress.pruning.magnitude import global_magnitude_masks, magnitude_mask, num_to_prune
    from lightning_compress.pruning.one_shot.one_shot_pruning import OneShotPruning
    from lightning_compress.pruning.one_shot.prune import OneShotResult, one_shot_prune
    from lightning_compress.pruning.one_shot.sparsegpt import sparsegpt_prune
    from lightning_compress.pruning.one_shot.wanda import wanda_mask
    from lightning_compress.pruning.schedule import constant_schedule, cubic_schedule, linear_schedule, sparsity_at_step
    from lightning_compress.pruning.structured.channels import prune_channels, remove_channels
    from lightning_compress.pruning.structured.report import StructuredPruningReport
    from lightning_compress.pruning.structured.serialization import load_pruned, save_pruned
    from lightning_compress.pruning.structured.transformer import prune_ffn_neurons, prune_heads
    from lightning_compress.quantization.int4 import convert_to_int4, prepare_int4_qat
    from lightning_compress.quantization.post_training_quantization import PostTrainingQuantization
    from lightning_compress.quantization.pt2e import convert_to_int8, prepare_qat
    from lightning_compress.quantization.ptq import quantize
    from lightning_compress.quantization.qat import QuantizationAwareTraining
    from lightning_compress.quantization.qat_modes import set_qat_mode
    from lightning_compress.quantization.sensitivity import quantization_sensitivity
    from lightning_compress.quantization.serialization import load_quantized, save_quantized
    from lightning_compress.quantization.weight_only.awq import awq_quantize
    from lightning_compress.quantization.weight_only.gptq import gptq_quantize
    from lightning_compress.quantization.weight_only.int8_embedding import Int8Embedding, int8_embedding_
    from lightning_compress.quantization.weight_only.one_shot_quantization import OneShotQuantization
    from lightning_compress.quantization.weight_only.quantize import QuantizationResult, one_shot_quantize
    from lightning_compress.quantization.weight_only.weight_only_file import load_weight_only, save_weight_only
    from lightning_compress.quantization.weight_only.weight_only_linear import (
        Int4WeightOnlyLinear,
        Int8WeightOnlyLinear,
        to_weight_only_,
    )
    from lightning_compress.sparsity.nm_masks import is_nm_sparse, nm_mask, partial_nm_mask
    from lightning_compress.sparsity.nm_sparsity import NMSparsity
    from lightning_compress.sparsity.semi_structured import to_semi_structured, to_semi_structured_
    from lightning_compress.training.classification import ClassificationModule
    from lightning_compress.training.lr_schedule import warmup_lr
