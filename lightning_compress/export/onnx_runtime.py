"""Running an exported ONNX model with ONNX Runtime's CPU provider as a torch-facing callable, after checking that the
file is an ONNX model (a truncated or foreign file is a clear error naming it, not a protobuf traceback).

Example:
    >>> model = load_onnx("model_int8.onnx")  # doctest: +SKIP
    >>> model(torch.randn(4, 1, 28, 28)).shape  # doctest: +SKIP
    torch.Size([4, 10])
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from lightning_compress.core.file_kinds import describe_file, file_kind, require_file

__all__ = ["OnnxModel", "check_onnx_file", "load_onnx"]

_EXPECTED = "an ONNX model file (.onnx, as export(..., format='onnx') writes it)"
_NOT_ONNX = ("empty", "safetensors", "truncated-safetensors", "torch-zip", "pt2", "zip", "damaged-zip", "pickle",
             "json", "text")  # fmt: skip


def check_onnx_file(path: Union[str, os.PathLike], what: str = "`path`") -> Any:
    """Parse ``path`` as an ONNX model (no external-data loading) and run ONNX's checker on it; returns the
    ``ModelProto``.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If it is another kind of file, does not parse, or fails the checker; the message names the file,
            what was expected and what was found.
    """
    import onnx

    path = require_file(path, what, _EXPECTED)
    if file_kind(path) in _NOT_ONNX:
        raise ValueError(f"{what} {str(path)!r} must be {_EXPECTED}, found {describe_file(path)}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError and friends: every one means "not a readable model"
        raise ValueError(
            f"{what} {str(path)!r} must be {_EXPECTED}; it does not parse (truncated or damaged,"
            f" {describe_file(path)}): {type(err).__name__}"
        ) from None
    if not model.graph.node and not model.graph.output:
        raise ValueError(f"{what} {str(path)!r} must be {_EXPECTED}, found {describe_file(path)} with no graph")
    try:
        onnx.checker.check_model(model)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{what} {str(path)!r} is not a valid ONNX model: {first}") from None
    return model


def _array(value: Tensor, dtype: Any) -> np.ndarray:
    value = value.detach().cpu()
    if value.is_floating_point() and dtype is not None:
        return value.to(dtype).numpy()
    return value.numpy()


_NUMPY_TO_TORCH = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(double)": torch.float64,
                   "tensor(int64)": torch.int64, "tensor(int32)": torch.int32, "tensor(bool)": torch.bool}  # fmt: skip


class OnnxModel:
    """An ONNX Runtime CPU session called like the PyTorch model it was exported from.

    Inputs are a tensor, a tuple of tensors (positional inputs, in the graph's input order) or a dict of tensors by
    input name (keys the graph does not take, such as ``labels``, are dropped); float inputs are cast to the graph's
    float type (fp16 models). The first output comes back as a float32 torch tensor.

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads (default: torch's thread count).

    Raises:
        FileNotFoundError / ValueError: As :func:`check_onnx_file`, or if ONNX Runtime cannot create a session.
    """

    def __init__(self, path: Union[str, os.PathLike], threads: Optional[int] = None, what: str = "`path`") -> None:
        import onnxruntime as ort

        check_onnx_file(path, what)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{what} {str(path)!r}: ONNX Runtime cannot run it: {first}") from None
        self.path = Path(path)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self._types = {i.name: _NUMPY_TO_TORCH.get(i.type) for i in self.session.get_inputs()}

    def feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        """The session feeds of a tensor, a tuple or a dict of inputs."""
        if isinstance(inputs, Tensor):
            inputs = (inputs,)
        if isinstance(inputs, Mapping):
            named = {k: v for k, v in inputs.items() if k in self._types and isinstance(v, Tensor)}
            missing = [k for k in self.inputs if k not in named]
            if missing:
                raise ValueError(f"the ONNX model takes inputs {self.inputs}; missing {missing} (got {sorted(inputs)})")
        else:
            if len(inputs) != len(self.inputs):
                raise ValueError(f"the ONNX model takes {len(self.inputs)} inputs {self.inputs}, got {len(inputs)}")
            named = dict(zip(self.inputs, inputs))
        out = {}
        for name, value in named.items():
            dtype = self._types.get(name)
            out[name] = _array(value, dtype if dtype is not None and dtype.is_floating_point else None)
        return out

    def __call__(self, inputs: Any) -> Tensor:
        result = self.session.run(None, self.feeds(inputs))[0]
        return torch.from_numpy(np.asarray(result)).float()


def load_onnx(path: Union[str, os.PathLike], threads: Optional[int] = None) -> OnnxModel:
    """An :class:`OnnxModel` of ``path`` (ONNX Runtime, CPU).

    Example:
        >>> load_onnx("no/such.onnx")
        Traceback (most recent call last):
        ...
        FileNotFoundError: `path` 'no/such.onnx' must be an ONNX model file (.onnx, as export(..., format='onnx') ...
    """
    return OnnxModel(path, threads)
