"""Saving and loading a converted quantized model as a ``torch.export`` program (``.pt2``).

A ``.pt2`` archive is a zip of JSON (the graph, the weights' layout) and raw tensor bytes, but ``torch.export.load``
also unpickles some entries: weights or constants stored with ``use_pickle`` (tensor subclasses), torchbind and opaque
objects, legacy ``.pt`` weight files and sample inputs that ``weights_only=True`` refuses, and it loads AOTInductor
shared libraries. :func:`load_quantized` reads the archive into memory, inspects it (:func:`pt2_unsafe_entries`) and
refuses every such entry unless ``allow_pickle=True`` (which warns), so no code runs from a file you were handed. The
INT8 programs of :func:`save_quantized` (``convert_to_int8``) hold plain tensors only and load without the opt-in;
INT4 programs (``convert_to_int4``) hold torchao tensor subclasses, which ``torch.export`` pickles: they load only with
``allow_pickle=True``, i.e. a ``.pt2`` of INT4 weights is code, to be loaded from trusted sources only.

Example:
    >>> save_quantized(int8_model, "model_int8.pt2", torch.randn(2, 1, 28, 28))  # doctest: +SKIP
    >>> model = load_quantized("model_int8.pt2")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Union

import torch
from torch import nn

from lightning_compress.core.checkpoints import UnsafeLoadWarning
from lightning_compress.core.file_kinds import describe_file, require_file
from lightning_compress.core.files import atomic_write
from lightning_compress.quantization.export_inputs import ExampleInputs, as_args_kwargs, dynamic_shapes, shrink_inputs
from lightning_compress.quantization.pt2e import FrozenInt8

__all__ = ["load_quantized", "pt2_unsafe_entries", "save_quantized"]

_EXPECTED = "a torch.export .pt2 archive (as save_quantized writes it)"
_QUANT_NAMESPACES = ("quantized_decomposed", "torchao", "quantized")


def _register_quantized_ops() -> None:
    """The ``quantized_decomposed`` ops a converted INT8 graph calls must be registered before it deserializes."""
    try:
        from torch.ao.quantization.fx._decomposed import quantized_decomposed_lib  # noqa: F401
    except ImportError:  # pragma: no cover - a torch without the ops: the archive then fails to load, named
        pass


def _is_quantized_op(target: object) -> bool:
    name = str(target)
    namespace = getattr(target, "namespace", None) or name.split(".")[0]
    return namespace in _QUANT_NAMESPACES or "quantize" in name


def save_quantized(model: nn.Module, path: Union[str, os.PathLike], example_inputs: ExampleInputs) -> None:
    """Save a model from :func:`convert_to_int8` or :func:`convert_to_int4` as a ``torch.export`` program, atomically
    (a temporary file in the same folder renamed over ``path``).

    The file holds the int8 (or int4-in-int8) weights, their scales and the graph; the batch dimension (and the
    sequence dimension of token inputs) stays dynamic. Loading it needs no model code: :func:`load_quantized` (an
    INT4 program needs ``allow_pickle=True``: its weights are pickled tensor subclasses).

    Args:
        model: The converted model (compiled or not).
        path: File to write (``.pt2``).
        example_inputs: Inputs of the model's forward, as for :func:`prepare_qat`.

    Raises:
        ValueError: If the exported program calls no quantized op (a float model: convert it first).

    Example:
        >>> save_quantized(int8_model, "model_int8.pt2", torch.randn(2, 1, 28, 28))  # doctest: +SKIP
    """
    graph = getattr(model, "_orig_mod", model)
    args, kwargs = as_args_kwargs(shrink_inputs(example_inputs))
    with torch.no_grad():
        program = torch.export.export(graph, args, kwargs, dynamic_shapes=dynamic_shapes(args, kwargs))
    calls = [n.target for n in program.graph.nodes if n.op == "call_function"]
    if not any(_is_quantized_op(t) for t in calls):
        raise ValueError(
            f"`model` ({type(graph).__name__}) calls no quantized op: it is a float model, and save_quantized writes"
            " quantized ones. Convert it first (convert_to_int8(prepare_qat(...)) or convert_to_int4), or save a float"
            " model's weights with save_compressed / a state dict"
        )
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())


def _const(name: str, default: str) -> str:
    try:
        from torch.export.pt2_archive import constants
    except ImportError:  # pragma: no cover
        return default
    return getattr(constants, name, default)


def _weights_only_loads(data: bytes) -> bool:
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        return False
    return True


def _payload_entries(archive: zipfile.ZipFile, root: str, config_file: str, folder: str) -> list[str]:
    """The pickled entries a weights / constants config names."""
    if root + config_file not in archive.namelist():
        return []
    config = json.loads(archive.read(root + config_file)).get("config", {})
    unsafe = []
    custom = _const("CUSTOM_OBJ_FILENAME_PREFIX", "custom_obj_")
    opaque = _const("OPAQUE_OBJ_FILENAME_PREFIX", "opaque_obj_")
    for fqn, meta in config.items():
        name = str(meta.get("path_name", ""))
        if meta.get("use_pickle"):
            unsafe.append(f"{folder}{name} ({fqn}: a pickled tensor)")
        elif name.startswith(custom):
            unsafe.append(f"{folder}{name} ({fqn}: a pickled torchbind object)")
        elif name.startswith(opaque):
            unsafe.append(f"{folder}{name} ({fqn}: a pickled opaque object)")
    return unsafe


def pt2_unsafe_entries(archive: zipfile.ZipFile) -> list[str]:
    """The entries of a ``.pt2`` archive that ``torch.export.load`` would unpickle or run, found without loading any.

    Args:
        archive: The open archive.

    Returns:
        One line per such entry (pickled weights / constants, torchbind and opaque objects, legacy ``.pt`` payloads
        and sample inputs that ``weights_only=True`` refuses, AOTInductor libraries); ``[]`` for a plain program.

    Raises:
        ValueError: If the archive has no ``archive_format`` entry (not a ``.pt2`` of this torch's format).
    """
    names = archive.namelist()
    formats = [n for n in names if n == "archive_format" or n.endswith("/archive_format")]
    if not formats:
        raise ValueError("no archive_format entry")
    root = formats[0][: -len("archive_format")]
    models = _const("MODELS_DIR", "models/")
    weights_dir = _const("WEIGHTS_DIR", "data/weights/")
    constants_dir = _const("CONSTANTS_DIR", "data/constants/")
    unsafe = [n for n in names if n.startswith(root + _const("AOTINDUCTOR_DIR", "data/aotinductor/"))]
    unsafe = [f"{n} (AOTInductor native code)" for n in unsafe[:3]]
    for entry in names:
        if not (entry.startswith(root + models) and entry.endswith(".json")):
            continue
        model = entry[len(root + models) : -len(".json")]
        weights = _const("WEIGHTS_CONFIG_FILENAME_FORMAT", "data/weights/{}_weights_config.json").format(model)
        constants = _const("CONSTANTS_CONFIG_FILENAME_FORMAT", "data/constants/{}_constants_config.json").format(model)
        unsafe += _payload_entries(archive, root, weights, weights_dir)
        unsafe += _payload_entries(archive, root, constants, constants_dir)
        sample = _const("SAMPLE_INPUTS_FILENAME_FORMAT", "data/sample_inputs/{}.pt").format(model)
        legacy = [sample, f"{weights_dir}{model}.pt", f"{constants_dir}{model}.pt"]
        for name in legacy:  # torch.export.load retries these with weights_only=False when the safe load fails
            if root + name in names and not _weights_only_loads(archive.read(root + name)):
                unsafe.append(f"{name} (a pickle that weights_only=True refuses)")
    return unsafe


def _read_program(path: Union[str, os.PathLike], allow_pickle: bool, what: str) -> torch.export.ExportedProgram:
    path = require_file(path, what, _EXPECTED)
    data = Path(path).read_bytes()  # inspected and loaded from the same bytes
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        unsafe = pt2_unsafe_entries(archive)
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError) as err:
        found = describe_file(path)
        detail = "" if isinstance(err, zipfile.BadZipFile) else f" ({err})"
        raise ValueError(f"{what} {str(path)!r} must be {_EXPECTED}, found {found}{detail}") from None
    if unsafe and not allow_pickle:
        shown = "; ".join(unsafe[:4]) + ("; ..." if len(unsafe) > 4 else "")
        raise ValueError(
            f"{what} {str(path)!r} holds entries that loading would unpickle or run: {shown}. Load it only if you"
            " trust its source, with allow_pickle=True (--allow-pickle on the command line)"
        )
    if unsafe:
        warnings.warn(
            f"loading {what} {str(path)!r} with allow_pickle=True: it unpickles {len(unsafe)} entries, which can run"
            " any code they name",
            UnsafeLoadWarning,
            stacklevel=3,
        )
    _register_quantized_ops()
    try:
        return torch.export.load(io.BytesIO(data))
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"{what} {str(path)!r} must be {_EXPECTED}; it does not load ({type(err).__name__}: {first})"
        ) from None


def load_quantized(
    path: Union[str, os.PathLike], compile: bool = True, allow_pickle: bool = False, what: str = "`path`"
) -> nn.Module:
    """Load a model written by :func:`save_quantized` (or any ``torch.export`` program without pickled entries).

    Args:
        path: The ``.pt2`` file.
        compile: Wrap it in :class:`FrozenInt8` (``torch.compile`` with inductor freezing: the fast path for INT8).
        allow_pickle: Also load archives with pickled entries or native code (see the module docstring); warns.
            Only for files you trust.
        what: How to call the file in error messages.

    Returns:
        The model; its forward takes the inputs it was saved with (any batch size).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If it is no ``.pt2`` archive, is damaged, or holds pickled entries without ``allow_pickle`` (the
            message names the file and the entries).

    Example:
        >>> model = load_quantized("model_int8.pt2")  # doctest: +SKIP
    """
    module = _read_program(path, allow_pickle, what).module()
    return FrozenInt8(module) if compile else module
