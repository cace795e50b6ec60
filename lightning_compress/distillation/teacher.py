"""Loading a distillation teacher from a module or a file, freezing it, and fingerprinting its weights.

Accepted teacher sources (:func:`load_teacher`):

* an ``nn.Module`` (a plain network, a Hugging Face model, or a :class:`~lightning_compress.ClassificationModule`,
  whose ``.model`` is used);
* a folder holding a saved Hugging Face model (``config.json`` + weights, as ``save_pretrained`` writes it), loaded
  with ``AutoModelForSequenceClassification.from_pretrained`` (never with ``trust_remote_code``);
* a folder of a structurally pruned model (:func:`~lightning_compress.pruning.structured.serialization.save_pruned`,
  or a ``save_pretrained`` folder of a head-pruned BERT), rebuilt by ``load_pruned``;
* a Lightning checkpoint (``.ckpt``, as ``lc-train`` / ``ModelCheckpoint`` save it) of a ``ClassificationModule``: its
  ``model.*`` weights are loaded, strictly, into ``teacher_model`` (the checkpoint does not hold the architecture);
* a file written by ``torch.save(state_dict)`` or a safetensors file of weights, loaded strictly into
  ``teacher_model``;
* a file written by ``torch.save(module)``: only with ``allow_pickle=True``, which unpickles the whole module
  (``weights_only=False``) with an :class:`~lightning_compress.core.checkpoints.UnsafeLoadWarning`: unpickling runs
  whatever code the file names, so only for files you trust. Without it such a file is refused with a ``ValueError``
  that names the classes it would import; nothing is ever retried with ``weights_only=False`` silently.

Checkpoints and state dicts are read with ``torch.load(weights_only=True)`` or safetensors: no code runs from them.

Example:
    >>> net = load_teacher(torch.nn.Linear(4, 3))
    >>> net.training, any(p.requires_grad for p in net.parameters())
    (False, False)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from lightning_compress.core.checkpoints import PickledFileError, load_pickled, load_torch_file, read_state_dict
from lightning_compress.core.file_kinds import file_kind
from lightning_compress.core.sharding import is_dtensor
from lightning_compress.core.target import find_network

__all__ = ["TeacherSource", "freeze", "load_teacher", "module_fingerprint"]

TeacherSource = Union[nn.Module, str, os.PathLike]


def freeze(module: nn.Module) -> nn.Module:
    """Puts ``module`` in eval mode and turns off ``requires_grad`` of all its parameters; returns it."""
    module.eval()
    module.requires_grad_(False)
    return module


def load_teacher(
    source: TeacherSource, teacher_model: Optional[nn.Module] = None, allow_pickle: bool = False
) -> nn.Module:
    """Builds a frozen teacher network from a module or a file (see the module docstring for what is accepted).

    Args:
        source: The teacher, or the path of its saved weights.
        teacher_model: The architecture to load a checkpoint or a state dict into; not used otherwise.
        allow_pickle: Unpickle a file that holds a whole module (``torch.save(model)``), with a warning. Only for
            files you trust: unpickling runs the code the file names. Never read from a config file.

    Returns:
        The teacher network, in eval mode, with ``requires_grad=False`` everywhere, on the CPU for a file.

    Raises:
        FileNotFoundError: If ``source`` is a path that does not exist.
        ValueError: If a checkpoint or state dict comes without ``teacher_model``, does not fit it, the file holds
            a pickled module without ``allow_pickle``, or something else (the message names the file and what it
            holds).
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
        return freeze(_teacher_folder(path))
    if file_kind(path) == "safetensors":
        obj: Any = read_state_dict(path, "`teacher`")
    else:
        try:
            obj = load_torch_file(path, "`teacher`", "a Lightning checkpoint, a state dict or a saved module")
        except PickledFileError:
            if not allow_pickle:
                raise
            obj = load_pickled(path, "`teacher`", allow_pickle=True)
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


def _teacher_folder(path: Path) -> nn.Module:
    """A pruned model's folder (``load_pruned``) or a Hugging Face ``save_pretrained`` folder (no remote code)."""
    from lightning_compress.pruning.structured.serialization import is_pruned_folder, load_pruned

    if is_pruned_folder(path):
        return load_pruned(path)
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(
            f"`teacher` folder {str(path)!r} holds no config.json: a folder must be a Hugging Face model saved"
            " with `save_pretrained` or a pruned model saved with `save_pruned`; a Lightning checkpoint is a .ckpt file"
        )
    try:
        json.loads(config.read_text())
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"`teacher` folder {str(path)!r}: its config.json is no JSON") from None
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(path), trust_remote_code=False)


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

    Raises:
        ValueError: If the module is sharded (``DTensor`` weights): fingerprint it before sharding.

    Example:
        >>> a = torch.nn.Linear(2, 2)
        >>> b = torch.nn.Linear(2, 2)
        >>> module_fingerprint(a) == module_fingerprint(a), module_fingerprint(a) == module_fingerprint(b)
        (True, False)
    """
    sharded = [name for name, tensor in module.state_dict().items() if is_dtensor(tensor)]
    if sharded:
        raise ValueError(
            f"module_fingerprint: {type(module).__name__} is sharded ({sharded[0]} is a DTensor): a shard's digest"
            " differs on every rank; take the fingerprint before `fully_shard` (DistillationModule does, in"
            " `configure_model`)"
        )
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(module).__module__}.{type(module).__qualname__}|{extra}".encode())
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
