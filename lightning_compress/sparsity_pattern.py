"""The target of a one-shot pruning method: an unstructured sparsity, or N:M (``n`` kept in every ``m``).

Example:
    >>> check_sparsity_pattern(0.5, None, None), check_sparsity_pattern(None, 2, 4)
    ([], [])
    >>> pattern_name(None, 2, 4), pattern_name(0.5, None, None)
    ('2:4', '50%')
"""

from __future__ import annotations

import math
from typing import Any, Optional

__all__ = ["check_nm", "check_sparsity_pattern", "pattern_name"]


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
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not (
            math.isfinite(sparsity) and 0.0 <= sparsity < 1.0
        ):
            return [f"`sparsity` must be a float in [0, 1), got {sparsity!r}"]
        return []
    return check_nm(n, m)


def check_nm(n: Any, m: Any) -> list[str]:
    """Every problem with an N:M pattern: ``m`` an int >= 2 and ``n`` an int with ``0 < n < m``.

    Returns:
        Messages naming the argument, its value and what is allowed; empty when the pattern is valid.

    Example:
        >>> check_nm(4, 4)
        ['`n` must be an int with 0 < n < m (m=4), got 4']
    """
    errors = []
    if not _is_int(m) or m < 2:
        errors.append(f"`m` must be an int >= 2, got {m!r}")
    if not _is_int(n):
        errors.append(f"`n` must be an int with 0 < n < m, got {n!r}")
    elif n <= 0 or (_is_int(m) and n >= m):
        errors.append(f"`n` must be an int with 0 < n < m (m={m!r}), got {n!r}")
    return errors


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def pattern_name(sparsity: Optional[float], n: Optional[int], m: Optional[int]) -> str:
    """A short name for logs and tables: ``"50%"`` or ``"2:4"``.

    Example:
        >>> pattern_name(0.125, None, None)
        '12.5%'
    """
    if sparsity is None:
        return f"{n}:{m}"
    return f"{100 * sparsity:g}%"
