"""How sparse a model is, layer by layer: shapes, non-zeros and sparsity, printable as a table.

Example:
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 2, bias=False))
    >>> with torch.no_grad():
    ...     net[0].weight[0] = 0.0
    >>> print(sparsity_report(net))  # doctest: +NORMALIZE_WHITESPACE
    name      shape   numel  nonzeros  sparsity
    0.weight  (2, 4)      8         4    50.00%
    total                 8         4    50.00%
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from lightning_compress.prunable_weights import FilterFn, prunable_weights

__all__ = ["SparsityReport", "SparsityRow", "sparsity_report"]


@dataclass(frozen=True)
class SparsityRow:
    """One weight: its name, shape, element count, non-zero count and fraction of zeros."""

    name: str
    shape: tuple[int, ...]
    numel: int
    nonzeros: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Per-weight rows and their totals; ``str(report)`` is an aligned table."""

    rows: list[SparsityRow] = field(default_factory=list)

    @property
    def numel(self) -> int:
        return sum(r.numel for r in self.rows)

    @property
    def nonzeros(self) -> int:
        return sum(r.nonzeros for r in self.rows)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.numel if self.numel else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``{"rows": [{name, shape, numel, nonzeros, sparsity}], "numel", "nonzeros", "sparsity"}``."""
        return {
            "rows": [{**asdict(r), "shape": list(r.shape), "sparsity": r.sparsity} for r in self.rows],
            "numel": self.numel,
            "nonzeros": self.nonzeros,
            "sparsity": self.sparsity,
        }

    def __str__(self) -> str:
        header = ("name", "shape", "numel", "nonzeros", "sparsity")
        lines = [(r.name, str(r.shape), str(r.numel), str(r.nonzeros), f"{r.sparsity:.2%}") for r in self.rows]
        lines.append(("total", "", str(self.numel), str(self.nonzeros), f"{self.sparsity:.2%}"))
        widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]
        left = (True, True, False, False, False)
        out = []
        for line in [header, *lines]:
            cells = [c.ljust(w) if lj else c.rjust(w) for c, w, lj in zip(line, widths, left)]
            out.append("  ".join(cells).rstrip())
        return "\n".join(out)


@torch.no_grad()
def sparsity_report(model: nn.Module, filter_fn: Optional[FilterFn] = None) -> SparsityReport:
    """Count the zeros of the weights a pruning callback would select (by default those of Linear and Conv layers).

    Args:
        model: The model.
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing the modules whose ``weight`` is reported, as in
            :func:`~lightning_compress.prunable_weights.prunable_weights`.

    Returns:
        A :class:`SparsityReport`.

    Raises:
        ValueError: If no weight is selected.

    Example:
        >>> report = sparsity_report(torch.nn.Linear(3, 3))
        >>> report.sparsity
        0.0
    """
    rows = [
        SparsityRow(name, tuple(w.shape), w.numel(), int(torch.count_nonzero(w)))
        for name, w in prunable_weights(model, filter_fn).items()
    ]
    return SparsityReport(rows)
