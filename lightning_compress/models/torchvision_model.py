"""Classification models from torchvision by name, with an optional new head for pretrained weights.

torchvision is optional (the ``vision`` extra): it is imported when a model is built, through
:func:`import_torchvision`, which the vision data modules use too, so ``import lightning_compress.models`` and every
feature that needs no torchvision model or data set work without it.
"""

from __future__ import annotations

import importlib.metadata
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import nn

from lightning_compress.core.validation import ArgumentErrors

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

ALIASES = {"mobilenet_v3": "mobilenet_v3_large"}

VISION_INSTALL = "pip install 'lightning-compress[vision]'"


def _matching_torchvision() -> str:
    """The torchvision release made for the installed torch: 0.(minor + 15) for torch 2.x (0.29 for torch 2.14), from
    the index of a local build such as ``2.13.0+cpu``."""
    major, minor = torch.__version__.split(".")[:2]
    build = torch.__version__.partition("+")[2]
    release = f"torchvision 0.{int(minor) + 15}" if major == "2" else "the torchvision release"
    index = f" (from the same index: `--index-url https://download.pytorch.org/whl/{build}`)" if build else ""
    return f"{release} built for torch {torch.__version__}{index}"


def import_torchvision(user: str) -> ModuleType:
    """Imports torchvision for ``user`` (the class or function that needs it), or says how to install it.

    Args:
        user: Named in the error, e.g. ``"CIFAR10DataModule"``.

    Returns:
        The ``torchvision`` module (its ``datasets``, ``models`` and ``transforms`` loaded).

    Raises:
        ModuleNotFoundError: If torchvision is not installed; the message gives the install command.
        ImportError: If it is installed but fails to load (a build made for another torch).

    Example:
        >>> import_torchvision("resnet18").models.resnet18(num_classes=10).fc.out_features
        10
    """
    try:
        import torchvision
    except ModuleNotFoundError as err:
        if err.name not in (None, "torchvision"):  # torchvision is there; something it imports is not
            raise
        raise ModuleNotFoundError(
            f"{user} needs torchvision, which is not installed: install it with `{VISION_INSTALL}`, or install "
            f"{_matching_torchvision()}",
            name="torchvision",
        ) from err
    except (ImportError, RuntimeError) as err:  # e.g. "operator torchvision::nms does not exist"
        try:
            installed = f"torchvision {importlib.metadata.version('torchvision')}"
        except importlib.metadata.PackageNotFoundError:
            installed = "the torchvision found"
        raise ImportError(
            f"{user} needs torchvision, but {installed} does not load beside torch {torch.__version__}"
            f" ({type(err).__name__}: {err}): install {_matching_torchvision()} in its place",
            name="torchvision",
        ) from err
    return torchvision


def torchvision_model(name: str, num_classes: int = 1000, weights: str | WeightsEnum | None = None) -> nn.Module:
    """Builds a torchvision classification model, e.g. ``resnet18``.

    Without weights the model is built with ``num_classes`` outputs. With pretrained weights it is built with the
    weights' own classes (1000 for ImageNet-1k) and, if ``num_classes`` differs, every layer producing those logits
    (the head, plus the auxiliary heads of ``googlenet`` / ``inception_v3``) is replaced by a freshly initialised one of
    the same kind with ``num_classes`` outputs. Pretrained weights download on first use.

    Args:
        name: A name from ``torchvision.models.list_models(module=torchvision.models)``, or the alias
            ``mobilenet_v3`` (= ``mobilenet_v3_large``).
        num_classes: Number of output logits.
        weights: ``None`` (random init), a weights name such as ``"DEFAULT"`` or ``"IMAGENET1K_V1"``, or a
            ``WeightsEnum`` member.

    Returns:
        The model; it maps ``(B, 3, H, W)`` images to ``(B, num_classes)`` logits.

    Raises:
        ValueError: If ``name`` is not a torchvision classification model, ``num_classes`` is not a positive int, or
            ``weights`` is not one of the model's weights.
        ModuleNotFoundError: If torchvision is not installed (``pip install 'lightning-compress[vision]'``).

    Example:
        >>> import torch
        >>> torchvision_model("resnet18", num_classes=10)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 10])
    """
    if not isinstance(name, str):
        raise ValueError(f"`name` must be a torchvision model name (a str such as 'resnet18'), got {name!r}")
    torchvision = import_torchvision("torchvision_model")
    name = ALIASES.get(name, name)
    errors = ArgumentErrors()
    errors.one_of("name", name, sorted(torchvision.models.list_models(module=torchvision.models)))
    errors.int("num_classes", num_classes)
    errors.raise_if_any()
    if weights is None:
        return torchvision.models.get_model(name, num_classes=num_classes)
    enum = torchvision.models.get_model_weights(name)
    try:
        weights = enum.verify(weights)
    except (KeyError, TypeError) as err:
        valid = ", ".join(enum.__members__)  # includes the DEFAULT alias
        raise ValueError(f"`weights` for {name} must be None or one of {valid}, got {weights!r}") from err
    model = torchvision.models.get_model(name, weights=weights)
    pretrained_classes = len(weights.meta["categories"])
    if num_classes != pretrained_classes:
        replace_classifier(model, pretrained_classes, num_classes)
    return model


def replace_classifier(model: nn.Module, old_classes: int, num_classes: int) -> list[str]:
    """Replaces, in place, every ``Linear`` / ``Conv2d`` with ``old_classes`` outputs by a new one with ``num_classes``.

    In torchvision's classification models the only such layers are the classifier and the auxiliary classifiers.
    Works on any model; needs no torchvision.

    Args:
        model: The model to edit.
        old_classes: The output size of the layers to replace (e.g. 1000).
        num_classes: Their new output size.

    Returns:
        The qualified names of the replaced layers, e.g. ``["fc"]`` for a ResNet.

    Raises:
        ValueError: If no layer has ``old_classes`` outputs.

    Example:
        >>> import torchvision
        >>> model = torchvision.models.resnet18()
        >>> replace_classifier(model, 1000, 10), model.fc.out_features
        (['fc'], 10)
    """
    replaced = []
    for fqn, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and module.out_features == old_classes:
            new: nn.Module = nn.Linear(module.in_features, num_classes, bias=module.bias is not None)
        elif isinstance(module, nn.Conv2d) and module.out_channels == old_classes:
            new = nn.Conv2d(
                module.in_channels,
                num_classes,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                module.groups,
                bias=module.bias is not None,
            )
        else:
            continue
        parent_name, _, child = fqn.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new.to(module.weight.device, module.weight.dtype))
        replaced.append(fqn)
    if not replaced:
        raise ValueError(f"no Linear or Conv2d layer with {old_classes} outputs to replace in {type(model).__name__}")
    return replaced
