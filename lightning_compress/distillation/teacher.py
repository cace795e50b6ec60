"""Loading a distillation teacher from a module or a file, freezing it, and fingerprinting its weights.

Accepted teacher sources (:func:`load_teacher`):

* an ``nn.Module`` (a plain network, a Hugging Face model, or a :class:`~lightning_compress.ClassificationModule`,
  whose ``.model`` is used);
* a folder holding a saved Hugging Face model (``config.json`` + weights, as ``save_pretrained`` writes it), loaded
  with ``AutoModelForSequenceClassification.from_pretrained``;
* a Lightning checkpoint (``.ckpt``, as ``lc-train`` / ``ModelCheckpoint`` save it) of a ``ClassificationModule``: its
  ``model.*`` weights are loaded, strictly, into ``teacher_model`` (the checkpoint does not hold the architecture);
* a file written by ``torch.save(state_dict)``, loaded strictly into ``teacher_model``;
* a file written by ``torch.save(module)``: the whole module is unpickled (``weights_only=False``: only load files
  you trust).

Example:
    >>> net = load_teacher(torch.nn.Linear(4, 3))
    >>> net.training, any(p.requires_grad for p in net.parameters())
    (False, False)
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from lightning_compress.core.target import find_network

__all__ = ["TeacherSource", "freeze", "load_teacher", "module_fingerprint"]

TeacherSource = Union[nn.Module, str, os.PathLike]


def freeze(module: nn.Module) -> nn.Module:
    """Puts ``module`` in eval mode and turns off ``requires_grad`` of all its parameters; returns it."""
    module.eval()
    module.requires_grad_(False)
    return module


def load_teacher(source: TeacherSource, teacher_model: Optional[nn.Module] = None) -> nn.Module:
    """Builds a frozen teacher network from a module or a file (see the module docstring for what is accepted).

    Args:
        source: The teacher, or the path of its saved weights.
        teacher_model: The architecture to load a checkpoint or a state dict into; not used otherwise.

    Returns:
        The teacher network, in eval mode, with ``requires_grad=False`` everywhere, on the CPU for a file.

    Raises:
        FileNotFoundError: If ``source`` is a path that does not exist.
        ValueError: If a checkpoint or state dict comes without ``teacher_model``, does not fit it, or the file holds
            something else.
        TypeError: If ``source`` is neither a module nor a path.

    Example:
        >>> load_teacher("no/such/teacher.ckpt")
        Traceback (most recent call last):
        ...
        FileNotFoundError: `teacher` must be an nn.Module or an existing path, got 'no/such/teacher.ckpt' ...
    """
    if isinstance(source, nn.Module):
        return freeze(find_network(source, strict=False)[0])
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "`teacher` must be an nn.Module, a Hugging Face model folder or a checkpoint path,"
            f" got {type(source).__name__}"
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"`teacher` must be an nn.Module or an existing path, got {str(source)!r} (no such file or folder; "
            "`lc-train experiment=mnist_cnn` writes a checkpoint under outputs/mnist_cnn/<date>/checkpoints/)"
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"`teacher` folder {str(path)!r} holds no config.json: a folder must be a Hugging Face model saved"
                " with `save_pretrained`; a Lightning checkpoint is a .ckpt file"
            )
        from transformers import AutoModelForSequenceClassification

        return freeze(AutoModelForSequenceClassification.from_pretrained(str(path)))
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        obj = torch.load(path, map_location="cpu", weights_only=False)  # a whole pickled module (trusted source)
    if isinstance(obj, nn.Module):
        return freeze(find_network(obj, strict=False)[0])
    if isinstance(obj, Mapping):
        state = obj["state_dict"] if isinstance(obj.get("state_dict"), Mapping) else obj
        if not all(isinstance(v, Tensor) for v in state.values()):
            raise ValueError(f"`teacher` file {str(path)!r} holds neither a module, a state dict nor a checkpoint")
        if teacher_model is None:
            raise ValueError(
                f"`teacher` {str(path)!r} holds weights only; pass `teacher_model`, the teacher's architecture "
                "(e.g. SmallCNN(channels=(64, 128), hidden=256)), to load them into"
            )
        _load_weights(teacher_model, state, path)
        return freeze(teacher_model)
    raise ValueError(
        f"`teacher` file {str(path)!r} holds a {type(obj).__name__}, not a module, state dict or checkpoint"
    )


def _load_weights(model: nn.Module, state: Mapping[str, Tensor], path: Path) -> None:
    """Loads a ``ClassificationModule`` checkpoint's ``model.*`` entries (or a plain state dict) strictly."""
    prefix = "model."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"the weights in `teacher` {str(path)!r} do not fit `teacher_model` ({type(model).__name__}); "
            f"check its configuration (channels, hidden size, label count): {err}"
        ) from err


def module_fingerprint(module: nn.Module, extra: str = "") -> str:
    """A hex digest of a module's class, parameter and buffer names, dtypes, shapes and values (and ``extra``).

    Two modules with equal fingerprints compute the same function (up to their code); used to key cached teacher
    outputs. One BLAKE2b pass over the weights.

    Example:
        >>> a = torch.nn.Linear(2, 2)
        >>> b = torch.nn.Linear(2, 2)
        >>> module_fingerprint(a) == module_fingerprint(a), module_fingerprint(a) == module_fingerprint(b)
        (True, False)
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(module).__module__}.{type(module).__qualname__}|{extra}".encode())
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
