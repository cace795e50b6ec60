"""Quantization: post-training INT8 quantization from calibration batches (with SmoothQuant, per-layer sensitivity
and an accuracy budget), quantization-aware training to a real INT8 model through PT2E (or INT4 weight-only), and
saving the converted model.
"""

from lightning_compress.quantization.int4 import convert_to_int4, prepare_int4_qat
from lightning_compress.quantization.observers import OBSERVERS
from lightning_compress.quantization.post_training_quantization import PostTrainingQuantization
from lightning_compress.quantization.pt2e import FrozenInt8, convert_to_int8, max_pool_on_int8, prepare_qat
from lightning_compress.quantization.ptq import QuantizationReport, quantize
from lightning_compress.quantization.ptq_graph import calibrate, prepare_ptq
from lightning_compress.quantization.qat import QuantizationAwareTraining
from lightning_compress.quantization.qat_modes import is_prepared, set_qat_mode
from lightning_compress.quantization.sensitivity import SensitivityTable, quantization_sensitivity
from lightning_compress.quantization.serialization import load_quantized, save_quantized
from lightning_compress.quantization.smoothquant import smooth_graph_

__all__ = [
    "OBSERVERS",
    "FrozenInt8",
    "PostTrainingQuantization",
    "QuantizationAwareTraining",
    "QuantizationReport",
    "SensitivityTable",
    "calibrate",
    "convert_to_int4",
    "convert_to_int8",
    "is_prepared",
    "load_quantized",
    "max_pool_on_int8",
    "prepare_int4_qat",
    "prepare_ptq",
    "prepare_qat",
    "quantization_sensitivity",
    "quantize",
    "save_quantized",
    "set_qat_mode",
    "smooth_graph_",
]
