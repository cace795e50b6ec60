"""Example inputs for ``torch.export``: one batch of a model's inputs (a tensor, a tuple of positional inputs or a
dict of keyword inputs), its dynamic dimensions, and the capture itself with an error that names the failing op.

Example:
    >>> args, kwargs = as_args_kwargs({"input_ids": torch.ones(4, 7, dtype=torch.long)})
    >>> args, dynamic_shapes(args, kwargs)
    ((), {'input_ids': {0: Dim.AUTO, 1: Dim.AUTO}})
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lightning_compress.core.batches import ExampleInputs

__all__ = ["ExampleInputs", "as_args_kwargs", "dynamic_shapes", "export_error_summary", "export_model", "shrink_inputs"]


def as_args_kwargs(example_inputs: ExampleInputs) -> tuple[tuple, dict[str, Any]]:
    """``(args, kwargs)`` for ``torch.export``: a tensor -> ``((x,), {})``, a dict -> ``((), d)``, a tuple -> itself."""
    if isinstance(example_inputs, Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    raise TypeError(
        "`example_inputs` must be a tensor, a tuple of positional inputs or a dict of keyword inputs,"
        f" got {type(example_inputs).__name__}"
    )


def _batch_dim_spec(value: Any) -> Any:
    """Dimension 0 dynamic; for ``(B, L)`` integer tensors (token ids, attention masks) dimension 1 too."""
    if not isinstance(value, Tensor) or value.dim() == 0:
        return None
    if value.dim() == 2 and not value.is_floating_point() and not value.is_complex():
        return {0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO}
    return {0: torch.export.Dim.AUTO}


def dynamic_shapes(args: tuple, kwargs: dict[str, Any]) -> Any:
    if kwargs and not args:
        return {k: _batch_dim_spec(v) for k, v in kwargs.items()}
    if args and not kwargs:
        return tuple(_batch_dim_spec(a) for a in args)
    return None  # mixed positional and keyword inputs: static shapes


def shrink_inputs(value: Any, n: int = 2) -> Any:
    """The first ``n`` examples of every tensor (repeated when the batch is smaller: a batch of 1 would specialise)."""
    if isinstance(value, Tensor):
        if value.dim() == 0:
            return value
        value = value[:n]
        return value.repeat(math.ceil(n / value.shape[0]), *([1] * (value.dim() - 1)))[:n].clone()
    if isinstance(value, Mapping):
        return {k: shrink_inputs(v, n) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(shrink_inputs(v, n) for v in value)
    return value


def export_model(model: nn.Module, args: tuple, kwargs: dict[str, Any]) -> torch.export.ExportedProgram:
    try:
        return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes(args, kwargs))
    except Exception as err:  # torch.export raises many types; all mean "this model cannot be captured"
        raise RuntimeError(
            f"QuantizationAwareTraining needs a model that `torch.export.export` can capture, and"
            f" {type(model).__name__} failed: {export_error_summary(err)}\n"
            "Hint: data-dependent Python control flow (`if x.sum() > 0`), `.item()`/`.tolist()` on tensors and"
            " unsupported custom ops cannot be exported; rewrite that part with torch.where / torch.cond, or keep it"
            " out of the quantized module. The full torch.export error is chained above."
        ) from err


def export_error_summary(err: BaseException) -> str:
    """``"<type>: <first message line> (op aten.item at File "m.py", line 7, in forward)"``: what failed, and where."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    first = next((line for line in lines if not line.startswith(("def ", "#", "sum_")) and ":" not in line[:3]), "")
    message = next(
        (line for line in lines if "Could not" in line or "Unsupported" in line), first or type(err).__name__
    )
    ops = re.findall(r"torch\.ops\.(\w+\.\w+)", str(err))
    files = re.findall(r"# File: (.+)", str(err))
    where = files[-1] if files else None
    where = where or next((lines[i + 1] for i, line in enumerate(lines[:-1]) if "following call raised" in line), None)
    details = ", ".join(x for x in (f"op {ops[-1]}" if ops else "", f"at {where}" if where else "") if x)
    return f"{type(err).__name__}: {message}" + (f" ({details})" if details else "")


# ----------------------------------------------------------------------------------------- conv-BN pattern cache
