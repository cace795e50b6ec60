"""What a compression callback works on, and how it counts training time.

* :func:`compression_target`: the module whose parameters a callback selects (a distillation module points at its
  student, so the teacher is never pruned).
* :func:`find_network`: the network inside a LightningModule, for the callbacks and modules that need the network
  itself (QAT exports it, distillation calls it): found with no configuration for the usual layouts.
* :func:`schedule_step` and :func:`steps_per_epoch`: schedules in epochs are counted in optimizer steps.

Example:
    >>> net = torch.nn.Linear(2, 2)
    >>> compression_target(net) is net
    True
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch  # noqa: F401 - the doctests use it
from torch import nn

__all__ = ["compression_target", "find_network", "schedule_step", "steps_per_epoch"]


def compression_target(pl_module: nn.Module) -> nn.Module:
    """The module a compression callback works on: ``pl_module.compression_target`` if it has one, else ``pl_module``.

    A distillation module exposes its student this way, so that the teacher is never pruned. Parameter names used by the
    callbacks are relative to this module.

    Raises:
        TypeError: If ``compression_target`` is not an ``nn.Module``.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> compression_target(net) is net
        True
    """
    target = getattr(pl_module, "compression_target", pl_module)
    if not isinstance(target, nn.Module):
        raise TypeError(f"`compression_target` must be an nn.Module, got {type(target).__name__}")
    return target


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def find_network(module: nn.Module, attribute: Optional[str] = None, strict: bool = True) -> tuple[nn.Module, str]:
    """The network inside ``module`` and its qualified name relative to ``module`` (``""`` for ``module`` itself).

    Found, in this order: ``module.get_submodule(attribute)`` when ``attribute`` is given; else, following
    :func:`compression_target` (a distillation module's student) and then, while the module at hand is a
    LightningModule, its single child that holds parameters (a ``ClassificationModule``'s ``model``, or the ``net`` of
    a LightningModule written elsewhere; metrics and parameter-free losses are not candidates). A plain
    ``nn.Module`` is its own network.

    Args:
        module: A LightningModule (or any module).
        attribute: The qualified name of the network, when it cannot be found unambiguously.
        strict: Raise when a LightningModule holds several children with parameters; with False, that LightningModule
            is the network (for modules that are only called, such as a teacher).

    Returns:
        ``(network, qualified name)``.

    Raises:
        TypeError: If ``module`` is not an ``nn.Module``.
        ValueError: If ``attribute`` names no submodule, if ``compression_target`` is not a submodule, or if a
            LightningModule holds several children with parameters (the message lists them and the call to make).

    Example:
        >>> import lightning.pytorch as pl
        >>> class Module(pl.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.net, self.loss = torch.nn.Linear(2, 2), torch.nn.CrossEntropyLoss()
        >>> network, name = find_network(Module())
        >>> name, type(network).__name__
        ('net', 'Linear')
    """
    import lightning.pytorch as pl

    if not isinstance(module, nn.Module):
        raise TypeError(
            f"`module` must be an nn.Module (a LightningModule or a network), got a {type(module).__name__}"
            f" ({str(module)[:60]!r})"
        )
    if attribute is not None:
        try:
            return module.get_submodule(attribute), attribute
        except AttributeError as err:
            raise ValueError(
                f"`attribute` must name a submodule of {type(module).__name__}, got {attribute!r}: {err}"
            ) from err
    current, path = module, ""
    while True:
        target = compression_target(current)
        if target is not current:
            name = next((n for n, m in current.named_modules() if m is target), None)
            if name is None:
                raise ValueError(
                    f"`compression_target` of {type(current).__name__} ({type(target).__name__}) is not one of its"
                    " submodules"
                )
            current, path = target, f"{path}.{name}" if path else name
            continue
        if not isinstance(current, pl.LightningModule):
            return current, path
        candidates = [(n, child) for n, child in current.named_children() if _has_parameters(child)]
        if len(candidates) != 1 and not strict:
            return current, path
        if len(candidates) != 1:
            listed = ", ".join(f"{n} ({type(c).__name__})" for n, c in candidates) or "none"
            where = f"{path}." if path else ""
            raise ValueError(
                f"cannot tell which submodule of {type(current).__name__} is the network: its children with parameters"
                f' are {listed}; pass `attribute="{where}<name>"`, or give {type(current).__name__} a'
                " `compression_target` property"
            )
        name, current = candidates[0]
        path = f"{path}.{name}" if path else name


def schedule_step(trainer: Any, pl_module: nn.Module) -> int:
    """The step that compression schedules count: optimizer steps done (``trainer.global_step``) under automatic
    optimisation, so gradient accumulation stays right; batches done under manual optimisation, where several
    optimizers may each step once per batch.

    Example:
        >>> # in a callback hook: step = schedule_step(trainer, pl_module)
    """
    if getattr(pl_module, "automatic_optimization", True):
        return trainer.global_step
    return trainer.fit_loop.total_batch_idx


def steps_per_epoch(trainer: Any, pl_module: nn.Module, needed_by: tuple[str, ...] = ()) -> int:
    """Optimizer steps per epoch: ``ceil(num_training_batches / accumulate_grad_batches)``, with
    ``limit_train_batches`` applied (batches, under manual optimisation); 0 when the train dataloader has no length.

    Args:
        trainer: The Trainer, from ``on_train_start`` on (when ``num_training_batches`` is known).
        pl_module: The LightningModule (for its optimisation mode).
        needed_by: The arguments (``"start_epoch"``, ...) whose values need the epoch length; when the dataloader has
            none, their names go into the error.

    Raises:
        ValueError: If ``needed_by`` is not empty and the train dataloader has no length.

    Example:
        >>> # in on_train_start: steps = steps_per_epoch(trainer, pl_module, ("start_epoch",))
    """
    batches = trainer.num_training_batches
    if math.isinf(batches):
        if needed_by:
            names = " and ".join(f"`{n}`" for n in needed_by)
            raise ValueError(
                f"{names} need{'s' if len(needed_by) == 1 else ''} a train dataloader with a length; this one has none"
                " (an iterable dataset?); give it a `__len__`"
            )
        return 0
    accumulate = trainer.accumulate_grad_batches if getattr(pl_module, "automatic_optimization", True) else 1
    return math.ceil(batches / accumulate)
