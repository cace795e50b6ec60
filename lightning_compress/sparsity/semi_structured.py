"""Export a trained 2:4 model to PyTorch's semi-structured sparse weights, which run on sparse tensor cores.

``torch.sparse.to_sparse_semi_structured`` compresses a 2:4 weight (two non-zeros in every four consecutive input
weights) to half its values plus metadata; ``F.linear`` on such a weight calls cuSPARSELt (or CUTLASS). The kernels need
a CUDA GPU of compute capability 8.0 (Ampere) or newer, float16 / bfloat16 (int8 and float8 only with quantised
activations), and weight shapes that are multiples of a per-dtype block (``_DTYPE_SHAPE_CONSTRAINTS`` of the backend
class in ``torch/sparse/semi_structured.py``). The compression does not check the 2:4 pattern itself, so a weight that
is not 2:4 would silently lose values: everything is checked here first, by :func:`semi_structured_problems`, a pure
function that also runs on CPU tensors.

Example:
    >>> from lightning_compress.sparsity.nm_masks import nm_mask
    >>> w = torch.randn(64, 64) * nm_mask(torch.randn(64, 64))  # a 2:4 weight
    >>> semi_structured_problems(w, torch.float16)
    []
    >>> semi_structured_problems(w[:8], torch.float16, backend="cusparselt")
    ['8 rows: cuSPARSELt needs a multiple of 16 (>= 16) for torch.float16']
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn
from torch.sparse import (
    SparseSemiStructuredTensor,
    SparseSemiStructuredTensorCUSPARSELT,
    SparseSemiStructuredTensorCUTLASS,
    to_sparse_semi_structured,
)

from lightning_compress.core.selection import FilterFn
from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.sparsity.nm_masks import is_nm_sparse

__all__ = ["SemiStructuredSwap", "semi_structured_problems", "to_semi_structured", "to_semi_structured_"]

_BACKENDS: dict[str, type[SparseSemiStructuredTensor]] = {
    "cusparselt": SparseSemiStructuredTensorCUSPARSELT,
    "cutlass": SparseSemiStructuredTensorCUTLASS,
}
_BACKEND_NAMES = {"cusparselt": "cuSPARSELt", "cutlass": "CUTLASS"}
_SWAP_DTYPES = (torch.float16, torch.bfloat16)


def _resolve_backend(backend: Optional[str]) -> str:
    """The backend ``to_sparse_semi_structured`` uses: CUTLASS when ``SparseSemiStructuredTensor._FORCE_CUTLASS``."""
    if backend is None:
        return "cutlass" if SparseSemiStructuredTensor._FORCE_CUTLASS else "cusparselt"
    if backend not in _BACKENDS:
        raise ValueError(f"`backend` can be cusparselt, cutlass or None, got {backend!r}")
    return backend


def semi_structured_problems(
    weight: Tensor, dtype: torch.dtype = torch.bfloat16, backend: Optional[str] = None
) -> list[str]:
    """Why ``weight`` cannot become a semi-structured (2:4) weight of ``dtype``; an empty list when it can.

    Checks the 2:4 pattern along the input dimension, the dtype against the backend's table, and the shape against
    the backend's minimum block (``_DTYPE_SHAPE_CONSTRAINTS``: rows and columns multiples of, and at least, the block).
    The device is not checked, so that this runs on CPU tensors.

    Args:
        weight: A Linear weight ``(out_features, in_features)``.
        dtype: The dtype the weight would be stored in.
        backend: ``"cusparselt"``, ``"cutlass"`` or ``None`` (the one ``to_sparse_semi_structured`` picks:
            CUTLASS if ``SparseSemiStructuredTensor._FORCE_CUTLASS`` is set, else cuSPARSELt).

    Returns:
        Human-readable problems, e.g. ``"not 2:4 sparse"``; empty if the weight can be converted.

    Raises:
        ValueError: If ``backend`` is not one of the names.

    Example:
        >>> semi_structured_problems(torch.ones(32, 64), torch.bfloat16)
        ['not 2:4 sparse (a group of 4 consecutive input weights has more than 2 non-zeros)']
    """
    name = _resolve_backend(backend)
    cls = _BACKENDS[name]
    if weight.dim() != 2:
        return [f"{weight.dim()}-D weight of shape {tuple(weight.shape)}: only 2-D (Linear) weights are supported"]
    rows, cols = weight.shape
    problems = []
    if cols % 4:
        problems.append(f"{cols} input features: not a multiple of 4, so it cannot be 2:4")
    elif not is_nm_sparse(weight, 2, 4):
        problems.append("not 2:4 sparse (a group of 4 consecutive input weights has more than 2 non-zeros)")
    constraints = cls._DTYPE_SHAPE_CONSTRAINTS.get(dtype)
    if constraints is None:
        allowed = ", ".join(str(d) for d in cls._DTYPE_SHAPE_CONSTRAINTS)
        problems.append(f"dtype {dtype} is not supported by {_BACKEND_NAMES[name]} (it takes {allowed})")
        return problems
    blocks = (("rows", rows, constraints.sparse_min_rows), ("columns", cols, constraints.sparse_min_cols))
    for what, size, block in blocks:
        if size < block or size % block:
            backend_name = _BACKEND_NAMES[name]
            problems.append(f"{size} {what}: {backend_name} needs a multiple of {block} (>= {block}) for {dtype}")
    return problems


@dataclass(frozen=True)
class SemiStructuredSwap:
    """What :func:`to_semi_structured_` did: the Linear layers it swapped, and those it left dense with the reasons."""

    swapped: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{len(self.swapped)} Linear layer(s) semi-structured (2:4), {len(self.skipped)} left dense"]
        lines += [f"  dense: {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


@torch.no_grad()
def to_semi_structured_(
    model: nn.Module,
    dtype: torch.dtype = torch.bfloat16,
    filter_fn: Optional[FilterFn] = None,
    backend: Optional[str] = None,
) -> SemiStructuredSwap:
    """Swap the weights of the 2:4 ``nn.Linear`` layers of ``model`` for semi-structured sparse weights, in place.

    Each eligible layer's weight becomes ``nn.Parameter(to_sparse_semi_structured(weight.to(dtype)),
    requires_grad=False)`` on its own (CUDA) device, and its bias is cast to ``dtype`` (the kernels take one dtype).
    Layers that fail a check of :func:`semi_structured_problems` stay dense and are listed, with one warning. The
    result is for inference: run the model in ``dtype`` (``model.to(dtype)`` first, or inputs of that dtype).

    Args:
        model: A trained model whose Linear weights are 2:4 (e.g. after :class:`~lightning_compress.NMSparsity`),
            on a CUDA device.
        dtype: ``torch.float16`` or ``torch.bfloat16``. (int8 / float8 kernels exist but need quantised activations
            and scales, which a plain ``nn.Linear`` does not have; they are not offered here.)
        filter_fn: ``filter_fn(module, fqn) -> bool`` narrowing the ``nn.Linear`` layers considered (default: all).
        backend: ``"cusparselt"``, ``"cutlass"`` or ``None`` (whatever ``to_sparse_semi_structured`` picks).

    Returns:
        A :class:`SemiStructuredSwap` naming the swapped and the skipped layers.

    Raises:
        RuntimeError: Without CUDA, with a GPU older than Ampere, with Linear weights not on a CUDA device, or when
            cuSPARSELt is wanted but missing from this PyTorch build.
        ValueError: For a ``dtype`` other than float16 / bfloat16, an unknown ``backend``, a ``model`` that is not an
            ``nn.Module`` or a ``filter_fn`` that is not callable.

    Example:
        >>> model = model.half().cuda()  # doctest: +SKIP
        >>> print(to_semi_structured_(model, dtype=torch.float16))  # doctest: +SKIP
        12 Linear layer(s) semi-structured (2:4), 1 left dense
          dense: classifier: 2 rows: cuSPARSELt needs a multiple of 16 (>= 16) for torch.float16
    """
    errors = ArgumentErrors()
    if not isinstance(model, nn.Module):
        errors.add(f"`model` must be an nn.Module, got a {type(model).__name__}")
    errors.callable("filter_fn", filter_fn, " (module, fqn) -> bool")
    errors.raise_if_any()
    if dtype not in _SWAP_DTYPES:
        raise ValueError(
            f"`dtype` must be torch.float16 or torch.bfloat16, got {dtype}; int8 / float8 2:4 kernels need quantised"
            " activations and scales, which a plain nn.Linear does not have"
        )
    name = _resolve_backend(backend)
    linears = [(fqn, mod) for fqn, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    linears = [(fqn, mod) for fqn, mod in linears if filter_fn is None or filter_fn(mod, fqn)]
    _check_cuda(linears, name)

    swapped: list[str] = []
    skipped: dict[str, str] = {}
    done: dict[int, nn.Parameter] = {}  # a weight shared by several Linears is converted once
    for fqn, mod in linears:
        weight = mod.weight
        if isinstance(weight, SparseSemiStructuredTensor) or isinstance(weight.data, SparseSemiStructuredTensor):
            skipped[fqn] = "already semi-structured"
            continue
        if id(weight) not in done:
            problems = semi_structured_problems(weight, dtype, name)
            if problems:
                skipped[fqn] = "; ".join(problems)
                continue
            dense = weight.detach().to(dtype).contiguous()
            sparse = to_sparse_semi_structured(dense) if backend is None else _BACKENDS[name].from_dense(dense)
            done[id(weight)] = nn.Parameter(sparse, requires_grad=False)
        mod.weight = done[id(weight)]
        if mod.bias is not None and mod.bias.dtype != dtype:
            mod.bias = nn.Parameter(mod.bias.detach().to(dtype), requires_grad=False)
        swapped.append(fqn)
    if skipped:
        listed = ", ".join(f"{fqn} ({why})" for fqn, why in skipped.items())
        warnings.warn(f"to_semi_structured_ left {len(skipped)} Linear layer(s) dense: {listed}", stacklevel=2)
    return SemiStructuredSwap(swapped, skipped)


def _check_cuda(linears: list[tuple[str, nn.Linear]], backend: str) -> None:
    """Raises unless the kernels can run: CUDA, the weights on it, compute capability >= 8.0, the backend built."""
    if not torch.cuda.is_available():
        raise RuntimeError(
            "to_semi_structured_ needs a CUDA GPU: the 2:4 kernels behind torch.sparse.to_sparse_semi_structured"
            " (cuSPARSELt / CUTLASS) run only on NVIDIA GPUs of compute capability 8.0 (Ampere) or newer, and no CUDA"
            " device is available here"
        )
    off_gpu = [fqn for fqn, mod in linears if not mod.weight.is_cuda]
    if off_gpu:
        raise RuntimeError(
            f"to_semi_structured_ needs the Linear weights on a CUDA device (move the model with `model.cuda()`);"
            f" on another device: {', '.join(off_gpu)}"
        )
    old = sorted({tuple(torch.cuda.get_device_capability(mod.weight.device)) for _, mod in linears})
    if old and old[0] < (8, 0):
        raise RuntimeError(
            f"the 2:4 kernels of torch.sparse.to_sparse_semi_structured need a GPU of compute capability 8.0"
            f" (Ampere) or newer; this one is {old[0][0]}.{old[0][1]}"
        )
    if backend == "cusparselt" and not torch.backends.cusparselt.is_available():
        raise RuntimeError(
            "this PyTorch build has no cuSPARSELt; pass backend='cutlass' (or set"
            " torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS = True)"
        )


def to_semi_structured(
    model: nn.Module,
    dtype: torch.dtype = torch.bfloat16,
    filter_fn: Optional[FilterFn] = None,
    backend: Optional[str] = None,
) -> SemiStructuredSwap:
    """Deprecated name of :func:`to_semi_structured_`, which works in place (a trailing ``_``, as in PyTorch)."""
    warnings.warn(
        "`to_semi_structured` is deprecated: it converts the model in place, so it is now `to_semi_structured_`",
        DeprecationWarning,
        stacklevel=2,
    )
    return to_semi_structured_(model, dtype, filter_fn, backend)
