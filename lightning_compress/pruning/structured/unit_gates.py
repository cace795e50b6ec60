"""Multiplicative gates on groups of a layer's inputs (attention heads, FFN neurons, conv channels), and the importance
of each group: the gradient of the loss with respect to its gate, accumulated over calibration batches.

A gate of 1.0 per unit leaves the model unchanged; a gate of 0.0 removes the unit exactly as slicing it out would
(the consumer layer never sees it). ``|dL/dgate|`` is the first-order Taylor estimate of the loss change when the
unit is removed (Michel et al., 2019, "Are Sixteen Heads Really Better than One?"; Molchanov et al., 2019), and for
one neuron it equals ``|sum over positions of activation * dL/dactivation|``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    >>> gates = {"hidden": UnitGate(model[2], units=6)}
    >>> batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    >>> gate_importance(model, gates, batches)["hidden"].shape
    torch.Size([6])
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Optional

import torch
import torch.nn.functional as F
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import Tensor, nn

from lightning_compress.core.validation import ArgumentErrors, is_int
from lightning_compress.pruning.structured.report import check_max_batches

__all__ = ["LossFn", "UnitGate", "default_loss", "gate_importance", "gated", "units_to_keep"]

LossFn = Callable[[nn.Module, Any], Tensor]


class UnitGate:
    """A gate per unit of a layer's input, applied by a forward pre-hook on that (consumer) layer.

    The consumer's input of shape ``(..., units * group, ...)`` (the unit axis at ``dim``) is multiplied by the gate
    value of each unit, repeated ``group`` times: an attention head is ``group = head_size`` consecutive features of
    the attention output projection's input, an FFN neuron one feature of the FFN output layer's input, a conv channel
    one channel (``dim=1``) of the next conv's input.

    Args:
        consumer: The layer whose input is gated.
        units: Number of units.
        group: Consecutive features per unit along ``dim``.
        dim: The axis of the consumer's input holding the units.

    Attributes:
        values: The gate values, shape ``(units,)``, ones at first; set entries to 0 to remove units.

    Raises:
        ValueError: If ``consumer`` is not an ``nn.Module``, ``units`` or ``group`` is not an int >= 1, or ``dim`` is
            not an int.
    """

    def __init__(self, consumer: nn.Module, units: int, group: int = 1, dim: int = -1) -> None:
        errors = ArgumentErrors()
        if not isinstance(consumer, nn.Module):
            errors.add(
                f"`consumer` must be an nn.Module (the layer whose input is gated), got a {type(consumer).__name__}"
            )
        errors.int("units", units)
        errors.int("group", group)
        errors.require(is_int(dim), "dim", "an int", dim)
        errors.raise_if_any()
        self.consumer = consumer
        self.units = units
        self.group = group
        self.dim = dim
        param = next(consumer.parameters(), None)
        self.values = torch.ones(units, device=param.device if param is not None else None)
        self._handle: Optional[torch.utils.hooks.RemovableHandle] = None

    def attach(self) -> UnitGate:
        """Registers the forward pre-hook (once)."""
        if self._handle is None:
            self._handle = self.consumer.register_forward_pre_hook(self._hook)
        return self

    def detach(self) -> None:
        """Removes the hook; the consumer computes as before."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        dim = self.dim % x.dim()
        if x.shape[dim] != self.units * self.group:
            raise ValueError(
                f"{type(module).__name__} input has {x.shape[dim]} features on dim {dim}, expected "
                f"units * group = {self.units} * {self.group}"
            )
        shape = [1] * x.dim()
        shape[dim] = self.units * self.group
        gate = self.values.to(x.dtype).repeat_interleave(self.group).view(shape)
        return (x * gate, *args[1:])


@contextlib.contextmanager
def gated(gates: Iterable[UnitGate]) -> Iterator[list[UnitGate]]:
    """Attaches gates for the duration of a ``with`` block, and detaches them after it.

    Example:
        >>> layer = nn.Linear(4, 2)
        >>> gate = UnitGate(layer, units=4)
        >>> gate.values[0] = 0.0
        >>> with gated([gate]):
        ...     y = layer(torch.ones(1, 4))  # the first input is gated to 0
    """
    gates = list(gates)
    try:
        for gate in gates:
            gate.attach()
        yield gates
    finally:
        for gate in gates:
            gate.detach()


def default_loss(model: nn.Module, batch: Any) -> Tensor:
    """The calibration loss: cross-entropy of the model's logits against the batch's labels.

    Batches are ``(inputs, labels)`` pairs (``model(inputs)``) or mappings with a ``labels`` entry (``model(**batch)``,
    the batches of :class:`~lightning_compress.data.GLUEDataModule`); outputs are logit tensors ``(B, C)`` or
    objects with a ``logits`` attribute (Hugging Face). One-output models (regression) use the mean squared error.

    Raises:
        ValueError: If the batch has no labels.
    """
    if isinstance(batch, Mapping):
        if "labels" not in batch:
            raise ValueError("a calibration batch given as a mapping needs a `labels` entry (or pass `loss_fn`)")
        labels = batch["labels"]
        output = model(**{k: v for k, v in batch.items() if k != "labels"})
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        inputs, labels = batch
        output = model(inputs)
    else:
        raise ValueError(
            "a calibration batch must be an (inputs, labels) pair or a mapping with `labels`,"
            f" got {type(batch).__name__}"
            " (or pass `loss_fn`)"
        )
    logits = output.logits if hasattr(output, "logits") else output
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


def gate_importance(
    model: nn.Module,
    gates: Mapping[str, UnitGate],
    dataloader: Iterable[Any],
    loss_fn: Optional[LossFn] = None,
    max_batches: Optional[int] = None,
) -> dict[str, Tensor]:
    """Accumulates ``|dL/dgate|`` of every unit over calibration batches, gates at 1.

    The model runs in eval mode (no dropout, batch-norm running statistics) with its parameters' ``requires_grad``
    switched off (no weight gradients are computed); both are restored afterwards. Batches are moved to the model's
    device.

    Args:
        model: The model to score; not modified.
        gates: Name -> gate; see :class:`UnitGate`.
        dataloader: Calibration batches (any iterable).
        loss_fn: ``(model, batch) -> scalar loss``; :func:`default_loss` when omitted.
        max_batches: Use at most this many batches (all when ``None``).

    Returns:
        Name -> importance, a float32 tensor of shape ``(units,)`` on the CPU (summed over batches).

    Raises:
        ValueError: If ``dataloader`` yields no batches, ``max_batches`` is not a positive int, ``gates`` is not a
            mapping of names to :class:`UnitGate`, ``loss_fn`` is not callable, or the loss is not finite.
    """
    check_max_batches(max_batches)
    errors = ArgumentErrors()
    if not isinstance(gates, Mapping) or not all(isinstance(g, UnitGate) for g in gates.values()):
        errors.add(f"`gates` must map names to UnitGate objects, got {type(gates).__name__}")
    errors.callable("loss_fn", loss_fn, " (model, batch) -> scalar loss")
    errors.raise_if_any()
    loss_fn = loss_fn or default_loss
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    scores = {name: torch.zeros(gate.units) for name, gate in gates.items()}
    was_training = model.training
    requires_grad = {p: p.requires_grad for p in model.parameters()}
    batches = 0
    model.eval()
    try:
        for p in requires_grad:
            p.requires_grad_(False)
        with torch.enable_grad(), gated(gates.values()):
            for batch in itertools.islice(dataloader, max_batches):
                values = [gate.values.requires_grad_(True) for gate in gates.values()]
                loss = loss_fn(model, move_data_to_device(batch, device))
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise ValueError(
                        f"the calibration loss of batch {batches} is {value}; check the model and the data"
                    )
                grads = torch.autograd.grad(loss, values, allow_unused=True)
                for name, grad in zip(gates, grads):
                    if grad is not None:
                        scores[name] += grad.detach().abs().float().cpu()
                batches += 1
    finally:
        for gate in gates.values():
            gate.values = gate.values.detach()
        for p, flag in requires_grad.items():
            p.requires_grad_(flag)
        model.train(was_training)
    if batches == 0:
        raise ValueError("`dataloader` yielded no batches: structured pruning needs at least one calibration batch")
    return scores


def units_to_keep(scores: Tensor, fraction: float) -> Tensor:
    """The units kept when removing ``floor(fraction * units)`` of lowest score (ties: the lower index is kept).

    At least one unit is always kept, since ``fraction < 1``.

    Args:
        scores: Importance, shape ``(units,)``.
        fraction: Share of units to remove, in [0, 1).

    Returns:
        The kept indices, increasing, a long tensor of shape ``(units - floor(fraction * units),)``.

    Raises:
        ValueError: If ``fraction`` is not a number in [0, 1), or ``scores`` is not a non-empty 1-D tensor.

    Example:
        >>> units_to_keep(torch.tensor([0.3, 0.1, 0.5, 0.2]), 0.5)
        tensor([0, 2])
    """
    errors = ArgumentErrors()
    errors.interval("fraction", fraction, 0, 1, "[)", kind="a number ")
    if not (isinstance(scores, Tensor) and scores.dim() == 1 and scores.numel() > 0):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        errors.add(f"`scores` must be a non-empty 1-D tensor (one score per unit), got {shape}")
    errors.raise_if_any()
    units = scores.numel()
    keep = max(1, units - int(math.floor(fraction * units + 1e-9)))
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    return order[:keep].sort().values
