"""Which weights a pruning method touches: by default those of Linear and Conv layers.

Example:
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> list(prunable_weights(net))
    ['0.weight', '2.weight']
    >>> list(prunable_weights(net, skip_classifier=True))
    ['0.weight']
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn

__all__ = ["FilterFn", "prunable_weights"]

FilterFn = Callable[[nn.Module, str], bool]
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _default_filter(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, (nn.Linear, *_CONV))


def prunable_weights(
    module: nn.Module,
    filter_fn: Optional[FilterFn] = None,
    skip_first_conv: bool = False,
    skip_classifier: bool = False,
) -> dict[str, nn.Parameter]:
    """Select the ``weight`` parameters to prune, by fully qualified name relative to ``module``.

    Args:
        module: The model (or the part of it to compress).
        filter_fn: ``filter_fn(submodule, fqn) -> bool``, called for every submodule that has a ``weight`` parameter,
            with the submodule's qualified name; replaces the default choice (``nn.Linear`` and ``nn.Conv1d/2d/3d``).
        skip_first_conv: Leave out the first convolution in module order (the input layer of a CNN is small and
            sensitive).
        skip_classifier: Leave out the last ``nn.Linear`` in module order (the classifier).

    Returns:
        An ordered dict ``{"<module fqn>.weight": parameter}``, in module order; a weight shared by several modules
        appears once, under its first name.

    Raises:
        ValueError: If nothing is selected.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
        >>> list(prunable_weights(net, filter_fn=lambda m, fqn: fqn == "1"))
        ['1.weight']
    """
    chosen = filter_fn if filter_fn is not None else _default_filter
    modules = list(module.named_modules())
    first_conv = next((m for _, m in modules if isinstance(m, _CONV)), None)
    classifier = next((m for _, m in reversed(modules) if isinstance(m, nn.Linear)), None)

    selected: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for fqn, sub in modules:
        weight = sub._parameters.get("weight")
        if not isinstance(weight, nn.Parameter) or id(weight) in seen:
            continue
        if (skip_first_conv and sub is first_conv) or (skip_classifier and sub is classifier):
            continue
        if chosen(sub, fqn):
            seen.add(id(weight))
            selected[f"{fqn}.weight" if fqn else "weight"] = weight
    if not selected:
        what = "`filter_fn`" if filter_fn is not None else "the default filter (nn.Linear, nn.Conv1d/2d/3d)"
        raise ValueError(
            f"{what} selected no parameter of {type(module).__name__}"
            f" (skip_first_conv={skip_first_conv}, skip_classifier={skip_classifier});"
            " pass a `filter_fn(module, fqn) -> bool` that returns True for the layers to prune"
        )
    return selected
