"""Quantization: quantization-aware training to a real INT8 model through PT2E (or INT4 weight-only), and saving the
converted model.
"""

from lightning_compress.quantization.int4 import convert_to_int4, prepare_int4_qat
from lightning_compress.quantization.pt2e import FrozenInt8, convert_to_int8, max_pool_on_int8, prepare_qat
from lightning_compress.quantization.qat import QuantizationAwareTraining
from lightning_compress.quantization.qat_modes import is_prepared, set_qat_mode
from lightning_compress.quantization.serialization import load_quantized, save_quantized

__all__ = [
    "FrozenInt8",
    "QuantizationAwareTraining",
    "convert_to_int4",
    "convert_to_int8",
    "is_prepared",
    "load_quantized",
    "max_pool_on_int8",
    "prepare_int4_qat",
    "prepare_qat",
    "save_quantized",
    "set_qat_mode",
]
