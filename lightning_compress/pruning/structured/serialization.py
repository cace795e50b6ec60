"""Saving and loading structurally pruned models without pickle and without remote code.

A pruned model is narrower than any model its class's constructor builds, so neither a state dict alone nor (for
head-pruned BERTs) a plain ``save_pretrained`` folder describes it: transformers 5 has no ``config.pruned_heads``
(the key is ignored; ``BertSelfAttention`` gives every layer ``num_attention_heads`` heads). :func:`save_pruned`
writes a folder with

- ``structure.json``: the format (``lightning_compress.structured/1``), the base architecture (a dotted name and its
  constructor arguments: ``torchvision.models.resnet.ResNet`` with its block and layer counts,
  ``lightning_compress.models.cnn.SmallCNN`` with its widths, or the transformers class) and the widths kept: the
  channels kept per channel group, or the attention heads per layer and the FFN width;
- ``model.safetensors``: the weights, with a checksum (:mod:`~lightning_compress.core.tensor_file`);
- for transformers, ``config.json`` (``attention_heads_per_layer`` and ``intermediate_size`` in it, no ``auto_map``,
  no code). A model whose FFN neurons alone were pruned reloads with a plain ``from_pretrained`` of its class; a
  head-pruned one makes plain transformers fail on the first narrower layer (a size mismatch), never load wrong.

:func:`load_pruned` rebuilds the base architecture (only model classes and builders allowed by
:func:`~lightning_compress.core.safe_targets.check_target`), narrows it to the saved widths, and loads the verified
weights strictly. It also reads ``save_pretrained`` folders of the ``PrunedBert*`` classes (which older versions saved
with a copy of their code and ``auto_map``), with this library's classes: the folder's ``.py`` file is never run.

Example:
    >>> from lightning_compress.models import SmallCNN
    >>> from lightning_compress.pruning.structured.channels import remove_channels
    >>> import tempfile
    >>> small = remove_channels(SmallCNN(), {"features.0": [0, 2, 5]})
    >>> folder = save_pruned(small, tempfile.mkdtemp() + "/small")
    >>> load_pruned(folder).features[0].out_channels
    3
"""

from __future__ import annotations

import inspect
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

from torch import nn

from lightning_compress.core.file_kinds import describe_file
from lightning_compress.core.files import atomic_folder
from lightning_compress.core.safe_targets import check_target
from lightning_compress.core.tensor_file import read_tensor_file, write_tensor_file
from lightning_compress.models.cnn import SmallCNN
from lightning_compress.pruning.structured.channels import channel_groups, remove_channels

__all__ = ["FORMAT", "STRUCTURE_FILE", "is_pruned_folder", "load_pruned", "save_pruned"]

FORMAT = "lightning_compress.structured/1"
STRUCTURE_FILE = "structure.json"
WEIGHTS_FILE = "model.safetensors"
PathLike = Union[str, os.PathLike]
Architecture = Mapping[str, Any]


# ------------------------------------------------------------------------------------------------ the architecture
def _name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _small_cnn(model: SmallCNN) -> dict[str, Any]:
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    first, last = model.classifier[1], model.classifier[-1]
    side = math.isqrt(first.in_features // convs[-1].out_channels)
    return {"target": _name(type(model)), "kwargs": {
        "in_channels": convs[0].in_channels, "num_classes": last.out_features,
        "channels": [c.out_channels for c in convs], "hidden": first.out_features,
        "image_size": side * 2 ** len(convs), "dropout": float(model.classifier[3].p)}}  # fmt: skip


def _resnet(model: nn.Module) -> Optional[dict[str, Any]]:
    try:
        from torchvision.models.resnet import ResNet
    except ModuleNotFoundError:
        return None
    if type(model) is not ResNet or model._norm_layer is not nn.BatchNorm2d:
        return None
    layers = [getattr(model, f"layer{i}") for i in range(1, 5)]
    return {"target": _name(ResNet), "kwargs": {
        "block": {"_class_": _name(type(layers[0][0]))}, "layers": [len(layer) for layer in layers],
        "num_classes": model.fc.out_features, "groups": model.groups, "width_per_group": model.base_width,
        "replace_stride_with_dilation": [layer[0].stride == 1 for layer in layers[1:]]}}  # fmt: skip


def _resolve(value: Any, key: str) -> Any:
    """Constructor arguments with ``{"_class_": name}`` entries replaced by the (allowed) class."""
    if isinstance(value, Mapping):
        if set(value) == {"_class_"}:
            return check_target(value["_class_"], key)
        return {k: _resolve(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def _build(architecture: Architecture, where: str) -> nn.Module:
    if not isinstance(architecture, Mapping) or not isinstance(architecture.get("kwargs", {}), Mapping):
        raise ValueError(f"{where}: `architecture` must be a mapping with 'target' and 'kwargs', got {architecture!r}")
    builder = check_target(architecture.get("target"), f"{where}: architecture.target")
    kwargs = _resolve(dict(architecture.get("kwargs", {})), f"{where}: architecture.kwargs")
    model = builder(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"{where}: architecture {architecture['target']!r} built a {type(model).__name__}")
    return model


def _narrow(base: nn.Module, channels: Mapping[str, int]) -> nn.Module:
    return remove_channels(base, {name: range(width) for name, width in channels.items()}) if channels else base


def _check_same(model: nn.Module, rebuilt: nn.Module, architecture: Architecture) -> None:
    ours, theirs = model.state_dict(), rebuilt.state_dict()
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if a is None or b is None or a.shape != b.shape:
            raise ValueError(
                f"`architecture` {architecture.get('target')!r} does not rebuild `model`: {key!r} is "
                f"{tuple(a.shape) if a is not None else 'missing'} in the model and "
                f"{tuple(b.shape) if b is not None else 'missing'} when rebuilt; pass `architecture=` (a model class or"
                " builder and its arguments) that builds the unpruned model"
            )


# ---------------------------------------------------------------------------------------------------------- saving
def _transformer_structure(model: nn.Module) -> tuple[dict[str, Any], Any]:
    import transformers

    from lightning_compress.pruning.structured.transformer import transformer_layers

    cls = type(model)
    if cls.__module__.startswith("lightning_compress.pruning.structured.pruned_bert"):
        cls = cls.__mro__[1]  # PrunedBertForX -> BertForX
    if getattr(transformers, cls.__name__, None) is not cls:
        raise ValueError(f"`model` is a {_name(type(model))}, which is no class of transformers")
    layers = transformer_layers(model)
    heads = [layer.attention.self.num_attention_heads for layer in layers.values()]
    widths = {layer.intermediate.dense.out_features for layer in layers.values()}
    if len(widths) != 1:
        raise ValueError(f"`model`'s layers have different FFN widths {sorted(widths)}; one intermediate_size is saved")
    config = model.config.__class__.from_dict(model.config.to_dict())
    config.attention_heads_per_layer = heads
    config.intermediate_size = widths.pop()
    config.architectures = [cls.__name__]
    for attr in ("auto_map", "custom_pipelines"):
        if hasattr(config, attr):
            delattr(config, attr)
    structure = {"format": FORMAT, "kind": "transformer", "architecture": {"target": f"transformers.{cls.__name__}"},
                 "attention_heads_per_layer": heads, "intermediate_size": config.intermediate_size}  # fmt: skip
    return structure, config


def save_pruned(model: nn.Module, folder: PathLike, architecture: Optional[Architecture] = None) -> Path:
    """Save a structurally pruned model (channels, heads or FFN neurons) as a folder that :func:`load_pruned` rebuilds
    without pickle or remote code; the folder is written to a temporary sibling and swapped in.

    Args:
        model: The result of :func:`prune_channels` / :func:`remove_channels` (a torchvision ResNet or a SmallCNN),
            or of :func:`prune_heads` / :func:`prune_ffn_neurons` (a transformers BERT-family model).
        folder: The folder to write (replaced if it exists).
        architecture: For channel-pruned models that are no plain torchvision ``ResNet`` / ``SmallCNN``: the unpruned
            model's builder, ``{"target": "lightning_compress.models.torchvision_model", "kwargs": {"name":
            "resnet18", "num_classes": 10}}`` (classes as ``{"_class_": name}``); checked by rebuilding it.

    Returns:
        ``folder``.

    Raises:
        ValueError: If the model is not supported, or the architecture does not rebuild it (the message names the
            first tensor that differs).

    Example:
        >>> save_pruned(small_resnet, "pruned/resnet18")  # doctest: +SKIP
    """
    folder = Path(folder)
    config = None
    if hasattr(model, "config") and hasattr(model, "base_model"):
        structure, config = _transformer_structure(model)
    else:
        try:
            groups = channel_groups(model)
        except ValueError as err:
            raise ValueError(f"`model` must be a channel- or head/neuron-pruned model: {err}") from None
        if architecture is None:
            architecture = _small_cnn(model) if type(model) is SmallCNN else _resnet(model)
        if architecture is None:
            raise ValueError(
                f"`model` is a {_name(type(model))}: pass `architecture=` (the builder of the unpruned model and its"
                " arguments) to save it"
            )
        channels = {} if type(model) is SmallCNN and architecture.get("target") == _name(SmallCNN) else {
            name: g.channels for name, g in groups.items()}  # fmt: skip
        _check_same(model, _narrow(_build(architecture, "`architecture`"), channels), architecture)
        structure = {"format": FORMAT, "kind": "channels", "architecture": dict(architecture), "channels": channels}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_folder(folder) as tmp:
        (tmp / STRUCTURE_FILE).write_text(json.dumps(structure, indent=2))
        write_tensor_file(tmp / WEIGHTS_FILE, state, FORMAT, {"format": "pt"})
        if config is not None:
            config.to_json_file(tmp / "config.json")
    return folder


# --------------------------------------------------------------------------------------------------------- loading
def _config_dict(folder: Path) -> Optional[dict[str, Any]]:
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{str(path)!r} must be a transformers config.json, found {describe_file(path)}") from None
    return config if isinstance(config, dict) else None


def is_pruned_folder(folder: PathLike) -> bool:
    """Whether ``folder`` holds a model of :func:`save_pruned`, or a ``save_pretrained`` folder of a head-pruned BERT
    (``attention_heads_per_layer`` in its config)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    if (folder / STRUCTURE_FILE).is_file():
        return True
    try:
        config = _config_dict(folder)
    except ValueError:
        return False
    return config is not None and "attention_heads_per_layer" in config


def _transformers_config(folder: Path, heads: Optional[list[int]]) -> Any:
    from transformers import AutoConfig

    config = _config_dict(folder)
    if config is None or "model_type" not in config:
        raise ValueError(f"{str(folder)!r} must hold a transformers config.json with a model_type")
    config = {k: v for k, v in config.items() if k not in ("auto_map", "custom_pipelines", "transformers_version")}
    built = AutoConfig.for_model(config.pop("model_type"), **config)  # a config class of transformers: no remote code
    if heads is not None:
        built.attention_heads_per_layer = heads
    return built


def _transformer_class(name: str, where: str) -> type:
    from lightning_compress.pruning.structured import pruned_bert

    if name.startswith("PrunedBert") and inspect.isclass(getattr(pruned_bert, name, None)):
        return getattr(pruned_bert, name)
    cls = check_target(f"transformers.{name}", where)
    pruned = getattr(pruned_bert, f"Pruned{name}", None)
    return pruned if inspect.isclass(pruned) else cls


def _load_transformer(folder: Path, structure: Optional[Mapping[str, Any]]) -> nn.Module:
    from lightning_compress.pruning.structured.pruned_bert import shrink_attention

    heads = list(structure["attention_heads_per_layer"]) if structure else None
    config = _transformers_config(folder, heads)
    if structure:
        name = str(structure["architecture"]["target"]).removeprefix("transformers.")
    else:
        name = (getattr(config, "architectures", None) or ["?"])[0]
    cls = _transformer_class(name, f"{str(folder)!r}: architecture")
    model = cls(config)
    heads = list(getattr(config, "attention_heads_per_layer", None) or [])
    if heads and not cls.__module__.startswith("lightning_compress."):
        shrink_attention(model, heads)  # a BERT-family class without a PrunedBert twin (RoBERTa, ELECTRA, ...)
    if structure:
        state, _ = read_tensor_file(folder / WEIGHTS_FILE, FORMAT, "weights", "the weights of a save_pruned folder")
    else:
        from safetensors.torch import load_file

        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(
                f"{str(folder)!r} holds no {WEIGHTS_FILE} (a save_pretrained folder of safetensors)"
            )
        state = load_file(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    if unexpected or [k for k in missing if k not in tied]:
        raise ValueError(
            f"the weights in {str(folder)!r} do not fit {name}: missing {missing}, unexpected {unexpected}"
        )
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


def load_pruned(folder: PathLike) -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned` (or a ``save_pretrained`` folder of a ``PrunedBert*`` model).

    Returns:
        The pruned model, in eval mode, on the CPU: of the base class (a torchvision ``ResNet``, ``SmallCNN``) for
        channels; the ``PrunedBert*`` class for BERT classes, the base transformers class otherwise.

    Raises:
        FileNotFoundError: If ``folder`` is not a folder or lacks its files.
        ValueError: If ``structure.json`` is damaged or names an architecture that is not allowed, or the weights are
            damaged or do not fit (the message names the folder or file).

    Example:
        >>> model = load_pruned("pruned/resnet18")  # doctest: +SKIP
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"`folder` {str(folder)!r} must be a folder of save_pruned, found {describe_file(folder)}"
        )
    path = folder / STRUCTURE_FILE
    if not path.is_file():
        if is_pruned_folder(folder):
            return _load_transformer(folder, None).eval()
        raise FileNotFoundError(f"`folder` {str(folder)!r} holds no {STRUCTURE_FILE}: it is no folder of save_pruned")
    try:
        structure = json.loads(path.read_text())
        assert isinstance(structure, dict) and structure.get("format") == FORMAT and structure.get("kind") in (
            "channels", "transformer") and isinstance(structure.get("architecture"), dict)  # fmt: skip
    except (ValueError, UnicodeDecodeError, AssertionError):
        raise ValueError(
            f"{str(path)!r} must be the JSON structure of a save_pruned folder ({FORMAT}), found {describe_file(path)}"
        ) from None
    if structure["kind"] == "transformer":
        return _load_transformer(folder, structure).eval()
    channels = structure.get("channels") or {}
    model = _narrow(_build(structure["architecture"], str(path)), channels)
    state, _ = read_tensor_file(folder / WEIGHTS_FILE, FORMAT, "weights", "the weights of a save_pruned folder")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"the weights in {str(folder)!r} do not fit the architecture of {STRUCTURE_FILE}: {err}"
        ) from None
    return model.eval()
