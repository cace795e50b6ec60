"""Reading a network's weights out of a Lightning checkpoint or a state-dict file.

A checkpoint of ``lc-train`` holds the weights of a :class:`~lightning_compress.ClassificationModule`, whose network
is its ``model`` attribute: its keys read ``model.<name>``. :func:`network_state` strips that prefix, and
:func:`load_network_weights` reads a file with ``torch.load(weights_only=True)`` (no code runs from the file) and loads
the weights into an architecture.

Example:
    >>> sorted(network_state({"model.0.weight": torch.ones(1), "model.0.bias": torch.ones(1)}))
    ['0.bias', '0.weight']
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn

__all__ = ["load_network_weights", "network_state", "read_state_dict"]

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
    """The state dict in a Lightning checkpoint (its ``state_dict``) or a ``torch.save(state_dict)`` file, loaded with
    ``weights_only=True``.

    Args:
        path: The file.
        what: How to call the file in error messages (the argument's name, e.g. ``"`init_from`"``).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If the file cannot be read as weights (the message names it and says what was found).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} must be an existing file, got {str(path)!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign, or holding pickled objects: every case means "not loadable here"
        raise ValueError(
            f"{what} {str(path)!r} cannot be read as a checkpoint or state dict with torch.load(weights_only=True):"
            f" {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
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
