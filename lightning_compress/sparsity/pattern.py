"""Sparsity patterns: an unstructured sparsity, or N:M (``n`` kept in every ``m`` consecutive weights of a GEMM row),
their argument checks, and which weights can take an N:M pattern at all.

Example:
    >>> import torch
    >>> check_sparsity_pattern(0.5, None, None), check_sparsity_pattern(None, 2, 4)
    ([], [])
    >>> pattern_name(None, 2, 4), pattern_name(0.5, None, None)
    ('2:4', '50%')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

from torch import Tensor, nn

from lightning_compress.core.validation import is_int

__all__ = ["check_nm", "check_sparsity_pattern", "nm_eligibility", "nm_ineligibility", "nm_problems", "pattern_name"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def check_sparsity_pattern(sparsity: Any, n: Any, m: Any) -> list[str]:
    """Every problem with a pattern: either ``sparsity`` in [0, 1), or ``n`` and ``m`` with ``0 < n < m`` (not both).

    Args:
        sparsity: Fraction of the weights to prune, or None for N:M.
        n: Weights kept per group of ``m``, or None for unstructured.
        m: Group size, or None for unstructured.

    Returns:
        Messages naming the argument, its value and what is allowed; empty when the pattern is valid.

    Example:
        >>> check_sparsity_pattern(1.0, None, None)
        ['`sparsity` must be a float in [0, 1), got 1.0']
    """
    nm_given = n is not None or m is not None
    if sparsity is None and not nm_given:
        return ["give either `sparsity` (a float in [0, 1)) or `n` and `m` (N:M, e.g. n=2, m=4), got neither"]
    if sparsity is not None and nm_given:
        return [
            f"give either `sparsity` or `n` and `m`, not both: got sparsity={sparsity!r}, n={n!r}, m={m!r}"
            " (N:M fixes the sparsity at 1 - n/m; pass sparsity=None)"
        ]
    if sparsity is not None:
        if (
            isinstance(sparsity, bool)
            or not isinstance(sparsity, (int, float))
            or not (math.isfinite(sparsity) and 0.0 <= sparsity < 1.0)
        ):
            return [f"`sparsity` must be a float in [0, 1), got {sparsity!r}"]
        return []
    return nm_problems(n, m)


def nm_problems(n: Any, m: Any) -> list[str]:
    """Every problem with an N:M pattern: ``m`` an int >= 2 and ``n`` an int with ``0 < n < m``.

    Returns:
        Messages naming the argument, its value and what is allowed; empty when the pattern is valid.

    Example:
        >>> nm_problems(4, 4)
        ['`n` must be an int with 0 < n < m (m=4), got 4']
    """
    errors = []
    if not is_int(m) or m < 2:
        errors.append(f"`m` must be an int >= 2, got {m!r}")
    if not is_int(n):
        errors.append(f"`n` must be an int with 0 < n < m, got {n!r}")
    elif n <= 0 or (is_int(m) and n >= m):
        errors.append(f"`n` must be an int with 0 < n < m (m={m!r}), got {n!r}")
    return errors


def check_nm(n: Any, m: Any) -> None:
    """Raise if ``n`` and ``m`` are not ints with ``0 < n < m`` (:func:`nm_problems`).

    Raises:
        ValueError: Naming the argument, its value and what is allowed.

    Example:
        >>> check_nm(2, 4)
    """
    errors = nm_problems(n, m)
    if errors:
        raise ValueError("; ".join(errors))


def nm_ineligibility(weight: Tensor, m: int, owner: Optional[nn.Module] = None) -> Optional[str]:
    """Why ``weight`` cannot be made N:M with groups of ``m`` (None when it can).

    N:M groups run along the reduction dimension of the layer's GEMM (``weight.numel() / out``); it must be a multiple
    of ``m``. 1-D weights have none, and depthwise convolutions (``groups == in_channels > 1``) have no GEMM that the
    N:M kernels take.

    Args:
        weight: The weight, ``(out, ...)``.
        m: The group size.
        owner: The layer that owns the weight, when known (to recognise a depthwise convolution).

    Example:
        >>> nm_ineligibility(torch.ones(4, 6), 4)
        'reduction dim 6 is not a multiple of m=4'
    """
    if isinstance(owner, _CONV) and owner.groups > 1 and owner.groups == owner.in_channels:
        return f"depthwise conv (groups = in_channels = {owner.groups})"
    if weight.dim() < 2:
        return f"{weight.dim()}-D weight"
    reduction = weight.numel() // weight.shape[0] if weight.shape[0] else 0
    if reduction == 0 or reduction % m:
        return f"reduction dim {reduction} is not a multiple of m={m}"
    return None


def nm_eligibility(module: nn.Module, params: Mapping[str, Tensor], m: int) -> tuple[list[str], dict[str, str]]:
    """Split selected weights into those that can be made N:M and those that cannot (:func:`nm_ineligibility`).

    Args:
        module: The module the names are relative to.
        params: ``{"<module fqn>.weight": parameter}``, as :func:`~lightning_compress.core.selection.prunable_weights`
            returns.
        m: The N:M group size.

    Returns:
        The eligible names (in order) and ``{skipped name: reason}``.

    Example:
        >>> net = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 2))
        >>> nm_eligibility(net, {"0.weight": net[0].weight, "1.weight": net[1].weight}, 4)
        (['1.weight'], {'0.weight': 'reduction dim 6 is not a multiple of m=4'})
    """
    eligible: list[str] = []
    skipped: dict[str, str] = {}
    for name, weight in params.items():
        fqn = name[: -len(".weight")] if name.endswith(".weight") else ""
        try:
            owner: Optional[nn.Module] = module.get_submodule(fqn)
        except AttributeError:
            owner = None
        reason = nm_ineligibility(weight, m, owner)
        if reason is None:
            eligible.append(name)
        else:
            skipped[name] = reason
    return eligible, skipped


def pattern_name(sparsity: Optional[float], n: Optional[int], m: Optional[int]) -> str:
    """A short name for logs and tables: ``"50%"`` or ``"2:4"``.

    Example:
        >>> pattern_name(0.125, None, None)
        '12.5%'
    """
    if sparsity is None:
        return f"{n}:{m}"
    return f"{100 * sparsity:g}%"
