"""What a structured pruning did: the report returned with the smaller model, and the argument checks shared by
:func:`~lightning_compress.pruning.structured.transformer.prune_heads`,
:func:`~lightning_compress.pruning.structured.transformer.prune_ffn_neurons`
and :func:`~lightning_compress.pruning.structured.channels.prune_channels`.

Example:
    >>> report = StructuredPruningReport("heads", 0.5, {"layer.0": [0, 3]}, {"layer.0": [1, 2]}, 1000, 800, 4)
    >>> print(report)
    Pruned 2/4 heads (fraction 0.5) from 4 calibration batches; parameters: 1,000 -> 800 (-20.00%)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

from torch import Tensor, nn

__all__ = ["BatchCounter", "StructuredPruningReport", "check_max_batches", "check_prune_fraction", "num_parameters"]


@dataclass
class StructuredPruningReport:
    """The units removed by a structured pruning and the size change.

    Attributes:
        kind: ``"heads"``, ``"ffn_neurons"`` or ``"channels"``.
        fraction: The share of units removed in each layer (rounded down per layer).
        kept: Layer name -> indices (in the original layer) of the units kept, increasing.
        removed: Layer name -> indices of the units removed.
        params_before: Parameter count of the original model.
        params_after: Parameter count of the pruned model.
        batches: Calibration batches used for the importance scores.
        scores: Layer name -> importance of every original unit (``|dL/dgate|`` summed over batches), shape
        ``(units,)``.
    """

    kind: str
    fraction: float
    kept: dict[str, list[int]]
    removed: dict[str, list[int]]
    params_before: int
    params_after: int
    batches: int
    scores: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def units_before(self) -> int:
        """Units over all pruned layers before pruning."""
        return sum(len(k) + len(r) for k, r in zip(self.kept.values(), self.removed.values()))

    @property
    def units_removed(self) -> int:
        """Units removed over all pruned layers."""
        return sum(len(r) for r in self.removed.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (without the scores)."""
        return {
            "kind": self.kind,
            "fraction": self.fraction,
            "units_removed": self.units_removed,
            "units_before": self.units_before,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "batches": self.batches,
            "kept": self.kept,
        }

    def __str__(self) -> str:
        change = 100.0 * (self.params_after - self.params_before) / max(self.params_before, 1)
        return (
            f"Pruned {self.units_removed}/{self.units_before} {self.kind.replace('_', ' ')}"
            f" (fraction {self.fraction:g}) "
            f"from {self.batches} calibration batches; parameters: {self.params_before:,} -> {self.params_after:,} "
            f"({change:+.2f}%)"
        )


def num_parameters(model: nn.Module) -> int:
    """The number of parameters of ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def check_prune_fraction(fraction: Any, name: str = "fraction") -> float:
    """Checks a share of units to remove: a real number in [0, 1).

    Raises:
        ValueError: If ``fraction`` is not a number in [0, 1).

    Example:
        >>> check_prune_fraction(0.25)
        0.25
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
        raise ValueError(
            f"`{name}` must be a float in [0, 1) (the share of units removed in each layer; 1 would remove them all), "
            f"got {fraction!r}"
        )
    return float(fraction)


def check_max_batches(max_batches: Optional[int]) -> None:
    """Checks ``max_batches``: ``None`` or a positive int.

    Raises:
        ValueError: Otherwise.
    """
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
    ):
        raise ValueError(f"`max_batches` must be None (all batches) or an int >= 1, got {max_batches!r}")


class BatchCounter:
    """Wraps an iterable of batches and counts the batches taken from it (``count``).

    Example:
        >>> batches = BatchCounter([1, 2, 3])
        >>> next(iter(batches)), batches.count
        (1, 1)
    """

    def __init__(self, batches: Iterable[Any]) -> None:
        self.batches = batches
        self.count = 0

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches:
            self.count += 1
            yield batch
