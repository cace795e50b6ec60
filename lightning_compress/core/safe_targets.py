"""Which dotted names a file may ask the library to call: model builders only, never an arbitrary callable.

A run folder's ``.hydra/config.yaml`` (its ``_target_`` entries) and a pruned model's ``structure.json`` (its
architecture) name what to build. Read from a file someone handed you, such a name must not be ``torch.load``,
``os.system``, ``torch.hub.load`` or a ``from_pretrained(..., trust_remote_code=True)``: :func:`check_target` accepts

- ``nn.Module`` classes defined in this library, torch, torchvision or transformers;
- the model builders of ``lightning_compress.models`` and ``torchvision.models`` (functions defined there), and this
  library's teacher and student builders (``load_teacher``, ``pruned_student``, ``layer_subset_student``,
  ``small_cnn_student``);
- ``from_pretrained`` of a transformers class (``trust_remote_code`` is refused by :func:`check_arguments`);
- the data modules of ``lightning_compress.data`` (a run's ``data`` node, a student's calibration data);

and refuses everything else (other packages, private names, ``torch.hub``), naming the key and the target, before
anything is imported outside those four packages.

Example:
    >>> check_target("torch.nn.Linear", "model._target_").__name__
    'Linear'
    >>> check_target("torch.load", "model._target_")
    Traceback (most recent call last):
    ...
    ValueError: model._target_ = 'torch.load' is not allowed: a file may build only nn.Module classes ...
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from torch import nn

__all__ = [
    "ALLOWED_PACKAGES",
    "FORBIDDEN_KEYS",
    "check_arguments",
    "check_keys",
    "check_target",
    "check_tree",
    "find_targets",
]

ALLOWED_PACKAGES = ("lightning_compress", "torch", "torchvision", "transformers")
FORBIDDEN_KEYS = ("trust_remote_code", "allow_pickle")
_BUILDER_MODULES = ("lightning_compress.models", "torchvision.models")
_LIBRARY_BUILDERS = {
    "lightning_compress.distillation.teacher": ("load_teacher",),
    "lightning_compress.distillation.students": ("pruned_student", "layer_subset_student", "small_cnn_student"),
}
_RULE = (
    "a file may build only nn.Module classes of lightning_compress, torch, torchvision and transformers, the model"
    " builders of lightning_compress.models / torchvision.models, this library's teacher and student builders,"
    " transformers' from_pretrained (without trust_remote_code) and lightning_compress.data modules"
)


def _refuse(key: str, target: Any, why: str = "") -> ValueError:
    return ValueError(f"{key} = {target!r} is not allowed: {_RULE}{f' ({why})' if why else ''}")


def _locate(path: str) -> Any:
    """The object a dotted path names, resolved as Hydra's ``_locate`` does (an attribute first, else a submodule)."""
    parts = path.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=2):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[:i]))
    return obj


def _defined_in(obj: Any, prefixes: tuple[str, ...]) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _is_data_module(obj: Any) -> bool:
    try:
        from lightning.pytorch import LightningDataModule
    except ImportError:  # pragma: no cover
        return False
    return (
        inspect.isclass(obj) and issubclass(obj, LightningDataModule) and _defined_in(obj, ("lightning_compress.data",))
    )


def check_target(target: Any, key: str = "_target_") -> Callable[..., Any]:
    """The callable ``target`` names, if a file may name it (see the module docstring).

    Args:
        target: The dotted name (``"torchvision.models.resnet18"``).
        key: Where it was found, for the message (``"model.teacher._target_"``).

    Raises:
        ValueError: If the target is not allowed or cannot be found; the message names ``key`` and ``target``.
    """
    if not isinstance(target, str) or not target:
        raise _refuse(key, target, "not a dotted name")
    parts = target.split(".")
    if parts[0] not in ALLOWED_PACKAGES:
        raise _refuse(key, target, f"package {parts[0]!r}")
    if any(not p.isidentifier() or p.startswith("_") for p in parts) or "hub" in parts:
        raise _refuse(key, target, "private names and torch.hub are refused")
    try:
        obj = _locate(target)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{key} = {target!r} does not exist ({type(err).__name__}: {err})") from None
    if inspect.isclass(obj):
        if issubclass(obj, nn.Module) and _defined_in(obj, ALLOWED_PACKAGES):
            return obj
        if _is_data_module(obj):
            return obj
        raise _refuse(key, target, f"the class {obj.__module__}.{obj.__qualname__} is no nn.Module")
    if inspect.isfunction(obj):
        if _defined_in(obj, _BUILDER_MODULES):
            return obj
        if obj.__name__ in _LIBRARY_BUILDERS.get(obj.__module__, ()):
            return obj
        raise _refuse(key, target, f"the function {obj.__module__}.{obj.__qualname__} builds no model")
    if inspect.ismethod(obj) and obj.__name__ == "from_pretrained":
        owner = obj.__self__
        if inspect.isclass(owner) and _defined_in(owner, ("transformers",)):
            return obj
    raise _refuse(key, target, f"a {type(obj).__name__}")


def check_arguments(node: Mapping[str, Any], key: str) -> None:
    """Refuses ``trust_remote_code`` (unless false) and any ``allow_pickle`` among a node's arguments.

    Raises:
        ValueError: Naming the key, e.g. ``model.trust_remote_code``.
    """
    for name in FORBIDDEN_KEYS:
        if name in node and (name == "allow_pickle" or node[name] not in (False, None)):
            what = "runs code from the model's folder or hub repository" if name == "trust_remote_code" else (
                "unpickling is an explicit opt-in of the Python call or the command line, never read from a file"
            )  # fmt: skip
            raise ValueError(f"{key}.{name} = {node[name]!r} is not allowed in a file: {what}")


def find_targets(node: Any, key: str = "") -> Iterator[tuple[str, Any, Mapping[str, Any]]]:
    """``(key, target, node)`` for every mapping with a ``_target_`` in a nested structure of dicts and lists."""
    if isinstance(node, Mapping):
        if "_target_" in node:
            yield (f"{key}._target_" if key else "_target_"), node["_target_"], node
        for name, value in node.items():
            yield from find_targets(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from find_targets(value, f"{key}[{i}]")


def check_tree(node: Any, key: str = "") -> None:
    """Checks every ``_target_`` (:func:`check_target`) and every mapping's arguments (:func:`check_arguments`) of
    a nested structure of dicts and lists (a resolved config node).

    Raises:
        ValueError: At the first refused entry, naming its key.

    Example:
        >>> check_tree({"_target_": "torch.nn.Sequential", "_args_": [{"_target_": "os.system", "_args_": ["ls"]}]},
        ...            "model")
        Traceback (most recent call last):
        ...
        ValueError: model._args_[0]._target_ = 'os.system' is not allowed: ...
    """
    if isinstance(node, Mapping):
        check_arguments(node, key or "config")
        if "_target_" in node:
            check_target(node["_target_"], f"{key}._target_" if key else "_target_")
        for name, value in node.items():
            check_tree(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_tree(value, f"{key}[{i}]")


def check_keys(node: Any, key: str = "") -> None:
    """Refuses ``trust_remote_code`` and ``allow_pickle`` (:func:`check_arguments`) anywhere in a nested structure,
    without judging its targets (the parts of a config that are not built from a file).

    Raises:
        ValueError: At the first refused key, naming it.
    """
    if isinstance(node, Mapping):
        check_arguments(node, key or "config")
        for name, value in node.items():
            check_keys(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_keys(value, f"{key}[{i}]")
