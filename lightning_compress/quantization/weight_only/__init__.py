"""Weight-only quantization of trained models in one shot (GPTQ, AWQ, round-to-nearest; 2-8 bits in groups; GPTQ
jointly with SparseGPT pruning), the layers that run the result on real INT4 / INT8 kernels, their file format and
the callback that quantizes at the start of ``fit``.
"""

from lightning_compress.quantization.weight_only.awq import awq_quantize
from lightning_compress.quantization.weight_only.gptq import gptq_quantize
from lightning_compress.quantization.weight_only.grid import Grid, QuantizedWeight, fake_quantize, grid_parameters
from lightning_compress.quantization.weight_only.int8_embedding import Int8Embedding, int8_embedding_
from lightning_compress.quantization.weight_only.one_shot_quantization import OneShotQuantization
from lightning_compress.quantization.weight_only.quantize import LayerReport, QuantizationResult, one_shot_quantize
from lightning_compress.quantization.weight_only.weight_only_file import load_weight_only, save_weight_only
from lightning_compress.quantization.weight_only.weight_only_linear import (
    Int4WeightOnlyLinear,
    Int8WeightOnlyLinear,
    to_weight_only_,
)

__all__ = [
    "Grid",
    "Int4WeightOnlyLinear",
    "Int8Embedding",
    "Int8WeightOnlyLinear",
    "LayerReport",
    "OneShotQuantization",
    "QuantizationResult",
    "QuantizedWeight",
    "awq_quantize",
    "fake_quantize",
    "gptq_quantize",
    "grid_parameters",
    "int8_embedding_",
    "load_weight_only",
    "one_shot_quantize",
    "save_weight_only",
    "to_weight_only_",
]
