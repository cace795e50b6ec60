"""Eager argument checks whose messages name the argument, the bad value and what is allowed.

Private: used by the constructors of the data modules and model builders so that a bad config fails before training,
with a message such as ``"`batch_size` must be an int >= 1, got 0"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def check_int(name: str, value: Any, minimum: int = 1) -> None:
    """Checks that ``value`` is an ``int`` (not a ``bool``) and at least ``minimum``.

    Args:
        name: The argument's name, as the user spells it.
        value: The value passed.
        minimum: The smallest allowed value.

    Raises:
        ValueError: If ``value`` is not an int or is below ``minimum``.

    Example:
        >>> check_int("batch_size", 32)
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}")


def check_fraction(name: str, value: Any) -> None:
    """Checks that ``value`` is a real number strictly between 0 and 1.

    Args:
        name: The argument's name.
        value: The value passed.

    Raises:
        ValueError: If ``value`` is not a number in the open interval (0, 1).

    Example:
        >>> check_fraction("val_fraction", 0.1)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"`{name}` must be a float in (0, 1), got {value!r}")


def check_one_of(name: str, value: Any, allowed: Iterable[str]) -> None:
    """Checks that ``value`` is one of ``allowed``.

    Args:
        name: The argument's name.
        value: The value passed.
        allowed: The valid values; the message lists them sorted.

    Raises:
        ValueError: If ``value`` is not in ``allowed``.

    Example:
        >>> check_one_of("task", "sst2", ["sst2", "cola"])
    """
    allowed = sorted(allowed)
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {', '.join(allowed)}, got {value!r}")
