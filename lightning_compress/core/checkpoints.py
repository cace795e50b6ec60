"""Reading a network's weights out of a Lightning checkpoint or a state-dict file.

A checkpoint of ``lc-train`` holds the weights of a :class:`~lightning_compress.ClassificationModule`, whose network
is its ``model`` attribute: its keys read ``model.<name>``. :func:`network_state` strips that prefix, and
:func:`load_network_weights` reads a file with ``torch.load(weights_only=True)`` or safetensors (no code runs from the
file) and loads the weights into an architecture.

:func:`load_torch_file` is the one safe ``torch.load`` of the library: ``weights_only=True``, and every failure
(missing, empty, truncated, foreign, or holding pickled objects) a :class:`ValueError` / :class:`FileNotFoundError`
that names the file, what was expected and what was found. A file that holds whole pickled objects
(``torch.save(model)``) is read only by :func:`load_pickled`, and only with ``allow_pickle=True``, which warns
(:class:`UnsafeLoadWarning`): unpickling runs whatever code the file names.

Example:
    >>> sorted(network_state({"model.0.weight": torch.ones(1), "model.0.bias": torch.ones(1)}))
    ['0.bias', '0.weight']
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from typing import Any, Union

import torch
from torch import Tensor, nn

from lightning_compress.core.file_kinds import describe_file, file_kind, require_file
from lightning_compress.core.tensor_file import FORMAT_KEY, read_tensor_header

__all__ = [
    "PickledFileError",
    "UnsafeLoadWarning",
    "load_network_weights",
    "load_pickled",
    "load_torch_file",
    "network_state",
    "pickled_globals",
    "read_state_dict",
]

TORCH_KINDS = ("torch-zip", "pickle")


class UnsafeLoadWarning(UserWarning):
    """A file is being unpickled (``allow_pickle=True``): it can run any code it names."""


class PickledFileError(ValueError):
    """A file holds pickled objects beyond tensors (a whole module): it loads only with ``allow_pickle=True``."""


def pickled_globals(path: Union[str, os.PathLike]) -> list[str]:
    """The classes and functions a ``torch.save`` archive would import when unpickled, read without running any of
    them (``torch.serialization.get_unsafe_globals_in_checkpoint``); ``[]`` when they cannot be read.

    Example:
        >>> pickled_globals("no/such/file")
        []
    """
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(os.fspath(path)))
    except Exception:  # not a zip archive, damaged: no list to give
        return []


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def load_torch_file(path: Union[str, os.PathLike], what: str = "file", expected: str = "a torch.save file") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that name the file: no code runs.

    Args:
        path: The file.
        what: How to call it in messages (an argument's name, e.g. ``"`--checkpoint`"``).
        expected: What it should be, in words.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If it is not a ``torch.save`` file (the message says what it is) or is damaged.
        PickledFileError: (a ``ValueError``) If it holds pickled objects other than tensors and plain containers (the
            message lists the classes and names ``allow_pickle``).

    Example:
        >>> load_torch_file("no/such.pt", "`teacher`")
        Traceback (most recent call last):
        ...
        FileNotFoundError: `teacher` 'no/such.pt' must be a torch.save file, found no such file or folder
    """
    path = require_file(path, what, expected)
    kind = file_kind(path)
    if kind not in TORCH_KINDS:
        raise ValueError(f"{what} {str(path)!r} must be {expected}, found {describe_file(path)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        names = pickled_globals(path)
        if names or "Unsupported global" in str(err) or "weights_only" in str(err):
            shown = (
                ", ".join(names[:6]) + (", ..." if len(names) > 6 else "") if names else "objects that are no tensors"
            )
            raise PickledFileError(
                f"{what} {str(path)!r} holds pickled objects ({shown}), which loading would import and run; expected"
                f" {expected} of tensors only. Unpickle it only if you trust its source: pass allow_pickle=True"
                " (--allow-pickle on the command line), or save a state dict / safetensors instead"
            ) from None
        raise ValueError(f"{what} {str(path)!r} must be {expected}; it is damaged: {_first_line(err)}") from None
    except Exception as err:  # truncated zip, bad records: every case means "not loadable"
        raise ValueError(
            f"{what} {str(path)!r} must be {expected}; it is damaged or truncated ({describe_file(path)}):"
            f" {_first_line(err)}"
        ) from None


def load_pickled(path: Union[str, os.PathLike], what: str = "file", allow_pickle: bool = False) -> Any:
    """Unpickle a whole ``torch.save`` file (``weights_only=False``), only with ``allow_pickle=True``, with a warning.

    Raises:
        ValueError: Without ``allow_pickle`` (the message names the file and the classes it would import), or if the
            file is not a ``torch.save`` file.
        FileNotFoundError: If ``path`` is not a file.

    Warns:
        UnsafeLoadWarning: Every time a file is unpickled.
    """
    path = require_file(path, what, "a torch.save file")
    if not allow_pickle:
        return load_torch_file(path, what)  # raises for pickled objects, naming them and allow_pickle
    if file_kind(path) not in TORCH_KINDS:
        raise ValueError(f"{what} {str(path)!r} must be a torch.save file, found {describe_file(path)}")
    warnings.warn(
        f"unpickling {what} {str(path)!r} (allow_pickle=True): it can run any code it names; load only files you trust",
        UnsafeLoadWarning,
        stacklevel=2,
    )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(
            f"{what} {str(path)!r} cannot be unpickled ({describe_file(path)}): {_first_line(err)}"
        ) from err


PathLike = Union[str, os.PathLike]


def network_state(state: Mapping[str, Any], prefix: str = "model.") -> dict[str, Any]:
    """The network's entries of a LightningModule's state dict: those under ``prefix``, without it; ``state`` as it
    is when no key has the prefix (a plain network's state dict).

    Example:
        >>> network_state({"weight": torch.ones(1)})
        {'weight': tensor([1.])}
    """
    if any(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


def read_state_dict(path: PathLike, what: str = "checkpoint") -> dict[str, Tensor]:
    """The state dict in a Lightning checkpoint (its ``state_dict``), a ``torch.save(state_dict)`` file (loaded with
    ``weights_only=True``) or a plain safetensors file of weights.

    Args:
        path: The file.
        what: How to call the file in error messages (the argument's name, e.g. ``"`init_from`"``).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If the file cannot be read as weights (the message names it and says what was found).
    """
    expected = "a Lightning checkpoint, a torch.save(state_dict) file or a safetensors file of weights"
    path = require_file(path, what, expected)
    if file_kind(path) == "safetensors":
        meta = read_tensor_header(path, what, expected)[1]
        if FORMAT_KEY in meta:
            raise ValueError(
                f"{what} {str(path)!r} must be {expected}, found a lightning_compress {meta[FORMAT_KEY]!r} file (a"
                " compressed file loads with load_compressed, a pruned model's folder with load_pruned)"
            )
        from safetensors.torch import load_file

        try:
            return dict(load_file(path))
        except Exception as err:
            raise ValueError(f"{what} {str(path)!r} must be {expected}; it is damaged: {_first_line(err)}") from None
    obj = load_torch_file(path, what, expected)
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        found = type(state).__name__ if not isinstance(state, Mapping) else "a dict with non-tensor values"
        raise ValueError(f"{what} {str(path)!r} holds {found}, not a state dict or a Lightning checkpoint")
    return dict(state)


def load_network_weights(
    model: nn.Module, source: Union[PathLike, Mapping[str, Any]], what: str = "checkpoint"
) -> nn.Module:
    """Load a checkpoint's (or state dict's) network weights into ``model``, strictly; returns ``model``.

    Args:
        model: The architecture.
        source: A file (see :func:`read_state_dict`) or a state dict; the ``model.`` prefix of a
            ``ClassificationModule`` checkpoint is stripped (:func:`network_state`).
        what: How to call the source in error messages.

    Raises:
        ValueError: If the weights do not fit ``model`` (the message names the source and the keys).
    """
    state = read_state_dict(source, what) if isinstance(source, (str, os.PathLike)) else dict(source)
    name = str(source) if isinstance(source, (str, os.PathLike)) else "the state dict"
    try:
        model.load_state_dict(network_state(state), strict=True)
    except RuntimeError as err:
        raise ValueError(f"the weights of {what} {name!r} do not fit {type(model).__name__}: {err}") from err
    return model
