"""One verb for every deployable artifact: ``export(model, path, format=...)``.

=========================  ===============================================================  ===========================
format                     what it writes                                                  who loads it
=========================  ===============================================================  ===========================
``onnx``                   an ONNX file: a float model in fp32, an INT8 model (QAT / PTQ)   ONNX Runtime (``load_onnx``)
                           as a Q/DQ graph placed for ONNX Runtime's integer kernels
``onnx-fp16``              an ONNX file of a float model in fp16 (weights and float inputs)  ONNX Runtime
``hf-compressed-tensors``  a Hugging Face folder; ``config.json`` carries a                 transformers (with
                           compressed-tensors ``quantization_config`` for W4A16 / W8A16      compressed-tensors), vLLM,
                           (weight-only modules) and W8A8 (an INT8 graph + ``hf_model``);   ``load_packed``
                           a float or pruned model is written dense
``pt2``                    a ``torch.export`` program of an INT8 model (``save_quantized``)  ``load_quantized``
``lc-compressed``          the library's bitmask (+ INT8) tensor file (``save_compressed``)  ``load_compressed``
=========================  ===============================================================  ===========================

What a format cannot hold is refused with the reason, naming the layer or op and the format (an op without an ONNX
function, AWQ input scales or a quantized Conv in compressed-tensors, fp16 of an INT8 model); nothing is silently
dropped. A path that exists is refused unless ``overwrite=True``; every file and folder is written to a temporary
path beside it and renamed into place, so a failed export leaves the old one as it was.

A LightningModule is exported as its network (:func:`~lightning_compress.core.target.find_network`); a QAT-prepared
graph (the network being trained) as its INT8 conversion (``convert_to_int8``).

Example:
    >>> result = export(int8_model, "model_int8.onnx", format="onnx", example_inputs=x)  # doctest: +SKIP
    >>> result = export(lm_w4, "smollm2-w4a16", format="hf-compressed-tensors")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from torch import Tensor, nn

from lightning_compress.core.batches import ExampleInputs
from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.export.int8_graph import is_int8_graph

__all__ = ["FORMATS", "ExportResult", "export", "exportable_model", "path_size"]

FORMATS: dict[str, str] = {
    "onnx": "ONNX file (fp32, or the INT8 model as a Q/DQ graph), run by ONNX Runtime",
    "onnx-fp16": "ONNX file of a float model in fp16, run by ONNX Runtime",
    "hf-compressed-tensors": "Hugging Face folder with a compressed-tensors quantization_config (transformers, vLLM)",
    "pt2": "torch.export program of an INT8 model (load_quantized)",
    "lc-compressed": "the library's bitmask / INT8 tensor file (load_compressed)",
}
_NEEDS_INPUTS = ("onnx", "onnx-fp16", "pt2")


@dataclass
class ExportResult:
    """What :func:`export` wrote: the ``format``, the ``path``, its size in ``bytes`` (a folder: all its files) and
    the writer's own record in ``details`` (``OnnxExport``, ``HFExport``, ``CompressedStats`` or None)."""

    format: str
    path: Path
    bytes: int
    details: Any = None


def path_size(path: Union[str, os.PathLike]) -> int:
    """Bytes of a file, or of every file under a folder."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def exportable_model(model: nn.Module) -> nn.Module:
    """What :func:`export` writes for ``model``: the network of a LightningModule, and the INT8 conversion of a
    QAT-prepared graph (reference graph, not compiled); anything else as it is."""
    from lightning_compress.quantization.pt2e import convert_to_int8
    from lightning_compress.quantization.qat_modes import fake_quantizers, is_prepared

    try:
        import lightning.pytorch as pl

        if isinstance(model, pl.LightningModule):
            from lightning_compress.core.target import find_network

            model = find_network(model)[0]
    except ImportError:  # pragma: no cover - lightning is a dependency
        pass
    if is_prepared(model) and not is_int8_graph(model):  # a converted graph keeps the prepared graph's mark
        if fake_quantizers(model):  # type: ignore[arg-type]
            return convert_to_int8(model, compile=False)  # type: ignore[arg-type]
        raise ValueError(
            "`model` is a PTQ graph with observers still in it (prepare_ptq): calibrate and convert it (quantize or"
            " calibrate(...).int8()) before exporting"
        )
    return model


def _validate(model: Any, path: Any, format: Any, example_inputs: Any, overwrite: Any, calibration_data: Any) -> None:
    errors = ArgumentErrors("export: ")
    errors.require(isinstance(model, nn.Module), "model", "an nn.Module", type(model).__name__)
    errors.require(isinstance(path, (str, os.PathLike)) and str(path) != "", "path", "a file or folder path", path)
    errors.one_of("format", format, tuple(FORMATS))
    errors.bool("overwrite", overwrite)
    if format in _NEEDS_INPUTS and example_inputs is None:
        errors.add(f"`example_inputs` must be one batch of the model's inputs for format={format!r} (it is exported"
                   " with them, batch dimension dynamic), got None")  # fmt: skip
    elif example_inputs is not None and not isinstance(example_inputs, (Tensor, tuple, list, dict)):
        errors.add(f"`example_inputs` must be a tensor, a tuple of inputs or a dict of keyword inputs, got"
                   f" {type(example_inputs).__name__}")  # fmt: skip
    if calibration_data is not None:
        if format != "onnx":
            errors.add(f"`calibration_data` calibrates the Q/DQ placement of an INT8 ONNX export and applies to"
                       f" format='onnx' only, got format={format!r}")  # fmt: skip
        elif isinstance(calibration_data, Tensor) and calibration_data.dim() == 0:
            errors.add("`calibration_data` must hold batches of inputs (a tensor (N, ...), a list of batches, a"
                       " DataLoader or a dict batch), got a 0-d tensor")  # fmt: skip
        elif isinstance(calibration_data, (str, bytes)) or not isinstance(
            calibration_data, (Tensor, Mapping, Iterable)
        ):
            errors.add(f"`calibration_data` must be a tensor of inputs (N, ...), a list of batches, a DataLoader or a"
                       f" dict batch (as for quantize), got {type(calibration_data).__name__}")  # fmt: skip
    errors.raise_if_any()
    if Path(path).exists() and not overwrite:
        raise FileExistsError(
            f"export: `path` {str(path)!r} exists; pass overwrite=True to replace it (the new {format} artifact is"
            " written to a temporary path beside it and swapped in)"
        )


def export(
    model: nn.Module,
    path: Union[str, os.PathLike],
    format: str = "onnx",
    *,
    example_inputs: Optional[ExampleInputs] = None,
    hf_model: Optional[nn.Module] = None,
    tokenizer: Any = None,
    calibration_data: Any = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write ``model`` as a deployable artifact of ``format`` (see the module docstring).

    Args:
        model: A float model, an INT8 model (``convert_to_int8`` / ``quantize``), a QAT-prepared graph, a Hugging Face
            model with weight-only INT4 / INT8 layers, or a LightningModule holding one of them.
        path: The file (``.onnx``, ``.pt2``, ``.lc.safetensors``) or folder (``hf-compressed-tensors``).
        format: One of :data:`FORMATS`.
        example_inputs: One batch of inputs (tensor, tuple or dict); required for ``onnx``, ``onnx-fp16`` and
            ``pt2``.
        hf_model: For ``hf-compressed-tensors`` of an INT8 graph: the float Hugging Face model it was quantized from.
        tokenizer: For ``hf-compressed-tensors``: saved into the folder.
        calibration_data: For ``onnx`` of an INT8 model: a few batches of inputs (the forms ``quantize`` takes: a
            tensor ``(N, ...)`` split into batches of 32, a list of batches, a DataLoader, a dict batch; the first 32
            batches are used), best the calibration batches of the INT8 model. The output range of each convolution
            whose output the INT8 graph reads in float (the projection before a residual add) is observed on them
            (uint8, histogram observer), and the output is quantized there, so that ONNX Runtime runs it as
            ``QLinearConv`` (and the add as ``QLinearAdd``) instead of the slow ``ConvInteger``; the values then
            differ from the PyTorch INT8 model by that rounding (at most half a step per element). None: those
            convolutions are written as ``ConvInteger`` (exact) and a warning names them
            (``result.details.conv_integer``).
        overwrite: Replace an existing file or folder.

    Returns:
        :class:`ExportResult`.

    Raises:
        ValueError: On a bad argument (all listed at once), when the format cannot hold the model (the message
            names the layer or op and the format), ``calibration_data`` for a float model, or a calibration batch
            that does not match the model's inputs.
        FileExistsError: If ``path`` exists and ``overwrite`` is False.
        TypeError: If the format takes another kind of model (``hf-compressed-tensors`` of a CNN).
        RuntimeError: If ``torch.export`` cannot capture the model (the failing op is named).

    Example:
        >>> import tempfile, os, torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> path = os.path.join(tempfile.mkdtemp(), "net.onnx")
        >>> export(net, path, "onnx", example_inputs=torch.randn(2, 8)).details.kind  # doctest: +SKIP
        'float32'
        >>> int8 = quantize(resnet, calib, compile=False)  # doctest: +SKIP
        >>> result = export(int8, "net_int8.onnx", example_inputs=calib[0], calibration_data=calib)  # doctest: +SKIP
        >>> result.details.conv_integer  # doctest: +SKIP
        []
    """
    _validate(model, path, format, example_inputs, overwrite, calibration_data)
    target = exportable_model(model)
    details: Any
    if format in ("onnx", "onnx-fp16"):
        from lightning_compress.export.onnx_export import save_onnx

        assert example_inputs is not None
        calibration = None
        if calibration_data is not None:
            from lightning_compress.quantization.calibration import calibration_inputs

            calibration = calibration_inputs(calibration_data, num_batches=32, what="calibration_data")
        dtype = "float16" if format == "onnx-fp16" else "float32"
        details = save_onnx(target, path, example_inputs, dtype, format, calibration)
    elif format == "hf-compressed-tensors":
        from lightning_compress.export.hf_compressed_tensors import save_hf_compressed_tensors

        details = save_hf_compressed_tensors(target, path, hf_model, tokenizer, overwrite=True)
    elif format == "pt2":
        from lightning_compress.quantization.serialization import save_quantized

        assert example_inputs is not None
        if not is_int8_graph(target):
            raise ValueError(f"format 'pt2' holds INT8 programs and {type(target).__name__} is a float model: quantize"
                             " it first (quantize / QAT), or use format='onnx'")  # fmt: skip
        save_quantized(target, path, example_inputs)
        details = None
    else:
        from lightning_compress.export.compressed_format import save_compressed

        if is_int8_graph(target):
            raise ValueError("format 'lc-compressed' holds float state dicts (optionally rounded to int8 per channel),"
                             " not INT8 graphs: export an INT8 model to 'onnx' or 'pt2'")  # fmt: skip
        details = save_compressed(target, path)
    return ExportResult(format, Path(path), path_size(path), details)
