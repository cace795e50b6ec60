"""Which layers a technique touches: by default the Linear and Conv layers, with the first convolution or the
classifier left out on request, or whatever a ``filter_fn(module, fqn) -> bool`` chooses.

Every technique selects through :func:`select_layers` (pruning, N:M, one-shot methods, quantization), so
``filter_fn``, ``skip_first_conv`` and ``skip_classifier`` mean the same everywhere.

Example:
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> list(prunable_weights(net))
    ['0.weight', '2.weight']
    >>> list(prunable_weights(net, skip_classifier=True))
    ['0.weight']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch  # noqa: F401 - the doctests use it
from torch import nn

from lightning_compress.core.validation import ArgumentErrors

__all__ = ["CONV_TYPES", "FilterFn", "classifier_layer", "first_conv_layer", "prunable_weights", "select_layers"]

FilterFn = Callable[[nn.Module, str], bool]
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_DEFAULT_TYPES = (nn.Linear, *CONV_TYPES)


def first_conv_layer(model: nn.Module) -> Optional[nn.Module]:
    """The first ``nn.Conv1d/2d/3d`` in module order (the input layer of a CNN), or None."""
    return next((m for m in model.modules() if isinstance(m, CONV_TYPES)), None)


def classifier_layer(model: nn.Module) -> Optional[nn.Module]:
    """The last ``nn.Linear`` in module order (the classifier), or None."""
    return next((m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)), None)


def _check_arguments(
    name: str, model: object, filter_fn: object, skip_first_conv: object, skip_classifier: object
) -> None:
    """One ``ValueError`` naming every bad argument of a selection (a string where a callable or a bool belongs)."""
    errors = ArgumentErrors()
    if not isinstance(model, nn.Module):
        errors.add(f"`{name}` must be an nn.Module, got a {type(model).__name__} ({str(model)[:60]!r})")
    errors.callable("filter_fn", filter_fn, " (module, fqn) -> bool")
    errors.bools(skip_first_conv=skip_first_conv, skip_classifier=skip_classifier)
    errors.raise_if_any()


def select_layers(
    model: nn.Module,
    filter_fn: Optional[FilterFn] = None,
    skip_first_conv: bool = False,
    skip_classifier: bool = False,
) -> dict[str, nn.Module]:
    """The submodules that own a ``weight`` parameter and are chosen, by qualified name, in module order.

    Args:
        model: The model (or the part of it to compress); names are relative to it (``""`` for ``model`` itself).
        filter_fn: ``filter_fn(submodule, fqn) -> bool``, called for every submodule that owns a ``weight`` parameter;
            replaces the default choice (``nn.Linear`` and ``nn.Conv1d/2d/3d``).
        skip_first_conv: Leave out :func:`first_conv_layer` (the input layer of a CNN is small and sensitive).
        skip_classifier: Leave out :func:`classifier_layer`.

    Returns:
        ``{fqn: submodule}``; a weight shared by several submodules is selected once, under its first owner.

    Raises:
        ValueError: If ``model`` is not an ``nn.Module``, ``filter_fn`` is not callable (or None), or a ``skip_*``
            argument is not a bool (``"false"`` is a string, and would be true).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
        >>> list(select_layers(net, skip_classifier=True)), list(select_layers(net, lambda m, fqn: fqn == "1"))
        (['0'], ['1'])
    """
    _check_arguments("model", model, filter_fn, skip_first_conv, skip_classifier)
    first_conv = first_conv_layer(model) if skip_first_conv else None
    classifier = classifier_layer(model) if skip_classifier else None
    selected: dict[str, nn.Module] = {}
    seen: set[int] = set()
    for fqn, sub in model.named_modules():
        weight = sub._parameters.get("weight")
        if not isinstance(weight, nn.Parameter) or id(weight) in seen or sub is first_conv or sub is classifier:
            continue
        if filter_fn(sub, fqn) if filter_fn is not None else isinstance(sub, _DEFAULT_TYPES):
            seen.add(id(weight))
            selected[fqn] = sub
    return selected


def prunable_weights(
    module: nn.Module,
    filter_fn: Optional[FilterFn] = None,
    skip_first_conv: bool = False,
    skip_classifier: bool = False,
) -> dict[str, nn.Parameter]:
    """The ``weight`` parameters of :func:`select_layers`, by fully qualified parameter name.

    Args:
        module: The model (or the part of it to compress).
        filter_fn: As for :func:`select_layers`.
        skip_first_conv: As for :func:`select_layers`.
        skip_classifier: As for :func:`select_layers`.

    Returns:
        An ordered dict ``{"<module fqn>.weight": parameter}``, in module order.

    Raises:
        ValueError: If nothing is selected, or an argument is of the wrong type (as for :func:`select_layers`).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
        >>> list(prunable_weights(net, filter_fn=lambda m, fqn: fqn == "1"))
        ['1.weight']
    """
    _check_arguments("module", module, filter_fn, skip_first_conv, skip_classifier)
    layers = select_layers(module, filter_fn, skip_first_conv, skip_classifier)
    if not layers:
        what = "`filter_fn`" if filter_fn is not None else "the default filter (nn.Linear, nn.Conv1d/2d/3d)"
        raise ValueError(
            f"{what} selected no parameter of {type(module).__name__}"
            f" (skip_first_conv={skip_first_conv}, skip_classifier={skip_classifier});"
            " pass a `filter_fn(module, fqn) -> bool` that returns True for the layers to prune"
        )
    return {f"{fqn}.weight" if fqn else "weight": sub.weight for fqn, sub in layers.items()}
