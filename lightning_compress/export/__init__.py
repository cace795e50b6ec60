"""Files a compressed model is written to: the library's compressed format (bitmask + values, optionally INT8), and
deployable artifacts other runtimes load (``export``): ONNX (fp32, fp16, INT8 Q/DQ for ONNX Runtime) and Hugging Face
folders with a compressed-tensors quantization config (transformers, vLLM), with their loaders and the callback that
exports and evaluates them during training.

The package is callable: ``from lightning_compress import export`` gives this package (the import system binds the
folder's name), and ``export(model, path, format=...)`` calls :func:`lightning_compress.export.export.export`, so the
verb and the folder share one name and ``lightning_compress.export.<module>`` keeps working.
"""

import sys
import types
from typing import Any

from lightning_compress.export.compressed_format import load_compressed, save_compressed
from lightning_compress.export.export import FORMATS, ExportResult, export
from lightning_compress.export.export_callback import ExportCallback
from lightning_compress.export.hf_compressed_tensors import HFExport, save_hf_compressed_tensors
from lightning_compress.export.onnx_qdq import OrtKernels, ort_kernels
from lightning_compress.export.onnx_runtime import OnnxModel, load_onnx
from lightning_compress.export.packed_loader import load_packed

__all__ = [
    "FORMATS",
    "ExportCallback",
    "ExportResult",
    "HFExport",
    "OnnxModel",
    "OrtKernels",
    "export",
    "load_compressed",
    "load_onnx",
    "load_packed",
    "ort_kernels",
    "save_compressed",
    "save_hf_compressed_tensors",
]


class _CallablePackage(types.ModuleType):
    """This package, callable as the ``export`` verb."""

    def __call__(self, *args: Any, **kwargs: Any) -> ExportResult:
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
