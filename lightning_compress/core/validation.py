"""Eager argument checks: every problem of a call found at once, each message naming the argument, the bad value and
what is allowed.

One style serves every constructor and function of the library: an :class:`ArgumentErrors` collects the problems
(``"`batch_size` must be an int >= 1, got 0"``, ``"`scope` can be global or layer, got 'net'"``) and
:meth:`~ArgumentErrors.raise_if_any` raises one ``ValueError`` that lists them all, before any work starts.

Example:
    >>> errors = ArgumentErrors()
    >>> errors.int("batch_size", 0)
    False
    >>> errors.one_of("scope", "net", ("global", "layer"))
    False
    >>> errors.raise_if_any()
    Traceback (most recent call last):
    ...
    ValueError: `batch_size` must be an int >= 1, got 0; `scope` can be global or layer, got 'net'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Optional

import torch
from torch import Tensor, nn

__all__ = ["ArgumentErrors", "check_finite", "check_materialized", "is_int", "is_number"]


def is_int(value: Any) -> bool:
    """Whether ``value`` is an ``int`` (a ``bool`` is not).

    Example:
        >>> is_int(3), is_int(True), is_int(3.0)
        (True, False, False)
    """
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number (``int`` or ``float``; a ``bool`` is not).

    Example:
        >>> is_number(0.5), is_number(float("nan")), is_number("1")
        (True, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _choices(allowed: Sequence[Any]) -> str:
    names = [str(a) for a in allowed]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


class ArgumentErrors:
    """The problems found with a call's arguments, in the order they were checked.

    Each check returns whether the value passed, so that dependent checks can be skipped; nothing raises until
    :meth:`raise_if_any`.

    Args:
        prefix: Put before the joined messages when raising (e.g. ``"QuantizationAwareTraining: "``).

    Example:
        >>> errors = ArgumentErrors()
        >>> errors.number("start_epoch", -1, minimum=0)
        False
        >>> list(errors)
        ['`start_epoch` must be a number >= 0, got -1']
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.messages: list[str] = []

    def __iter__(self) -> Iterator[str]:
        return iter(self.messages)

    def __len__(self) -> int:
        return len(self.messages)

    def add(self, message: str) -> None:
        """Record one problem, already phrased."""
        self.messages.append(message)

    def extend(self, messages: Iterable[str]) -> None:
        """Record problems found elsewhere (a shared check that returns messages)."""
        self.messages.extend(messages)

    def require(self, ok: bool, name: str, must: str, value: Any) -> bool:
        """Record ``"`name` must be <must>, got <value>"`` unless ``ok``; return ``ok``."""
        if not ok:
            self.add(f"`{name}` must be {must}, got {value!r}")
        return ok

    def int(self, name: str, value: Any, minimum: int = 1, optional: bool = False) -> bool:
        """An ``int`` (not a ``bool``) of at least ``minimum`` (or None when ``optional``)."""
        if optional and value is None:
            return True
        return self.require(
            is_int(value) and value >= minimum, name, f"an int >= {minimum}" + (" or None" if optional else ""), value
        )

    def number(
        self,
        name: str,
        value: Any,
        minimum: Optional[float] = None,
        above: Optional[float] = None,
        optional: bool = False,
    ) -> bool:
        """A finite real number, ``>= minimum`` or ``> above`` when given (or None when ``optional``)."""
        if optional and value is None:
            return True
        bound = f" >= {minimum}" if minimum is not None else f" > {above}" if above is not None else ""
        ok = is_number(value) and (minimum is None or value >= minimum) and (above is None or value > above)
        return self.require(ok, name, f"a number{bound}" + (" or None" if optional else ""), value)

    def interval(
        self, name: str, value: Any, low: float, high: float, closed: str = "[)", kind: str = "", optional: bool = False
    ) -> bool:
        """A finite real number in the interval ``low``..``high`` (``closed``: ``"[]"``, ``"[)"``, ``"(]"`` or
        ``"()"``).

        ``kind`` is put before the interval in the message (``"a float "`` gives "must be a float in [0, 1)").
        """
        if optional and value is None:
            return True
        left, right = closed[0] == "[", closed[1] == "]"
        ok = is_number(value) and (value >= low if left else value > low) and (value <= high if right else value < high)
        text = f"{kind}in {closed[0]}{low:g}, {high:g}{closed[1]}" + (" or None" if optional else "")
        return self.require(ok, name, text, value)

    def bool(self, name: str, value: Any) -> bool:
        """A ``bool``."""
        return self.require(isinstance(value, bool), name, "a bool", value)

    def bools(self, **values: Any) -> bool:
        """Several ``bool`` arguments, by name."""
        return all([self.bool(name, value) for name, value in values.items()])

    def one_of(self, name: str, value: Any, allowed: Sequence[Any]) -> bool:
        """One of ``allowed``: ``"`scope` can be global or layer, got 'net'"`` otherwise."""
        try:
            ok = value in allowed and not (isinstance(value, bool) and not any(a is value for a in allowed))
        except TypeError:  # an unhashable value asked of a set or dict
            ok = False
        if not ok:
            self.add(f"`{name}` can be {_choices(list(allowed))}, got {value!r}")
        return ok

    def callable(self, name: str, value: Any, signature: str, optional: bool = True) -> bool:
        """A callable (or None when ``optional``); ``signature`` shows how it is called, e.g. ``"(module, fqn) ->
        bool"``."""
        if optional and value is None:
            return True
        return self.require(callable(value), name, f"a callable{signature}" + (" or None" if optional else ""), value)

    def verbose(self, value: Any, levels: Sequence[int] = (0, 1, 2)) -> bool:
        """A verbosity level."""
        return self.one_of("verbose", value, levels)

    def raise_if_any(self) -> None:
        """Raise one ``ValueError`` listing every recorded problem (``"; "``-separated), if there is any.

        Raises:
            ValueError: If a problem was recorded.
        """
        if self.messages:
            raise ValueError(self.prefix + "; ".join(self.messages))


def check_finite(tensors: Mapping[str, Tensor], before: str) -> None:
    """Refuse NaN or Inf values: a pruning or quantization step given them would spread them (a mask applied by
    multiplication turns every pruned weight of a NaN layer into NaN) or rank them arbitrarily.

    Args:
        tensors: ``{name: tensor}``, e.g. the weights a technique is about to touch.
        before: What was about to happen, for the message (``"magnitude pruning"``).

    Raises:
        ValueError: Naming every tensor that holds a NaN or an Inf, with the counts (or every tensor on the ``meta``
            device, which has no values to check).

    Example:
        >>> check_finite({"0.weight": torch.ones(2)}, "pruning")
    """
    bad, meta = [], []
    for name, tensor in tensors.items():
        if tensor.device.type == "meta":
            meta.append(name)
            continue
        if not tensor.is_floating_point():
            continue
        finite = torch.isfinite(tensor.detach())
        if not bool(finite.all()):
            nan = int(torch.isnan(tensor.detach()).sum())
            bad.append(f"{name} ({nan} NaN, {int((~finite).sum()) - nan} Inf of {tensor.numel()})")
    if meta:
        raise ValueError(
            f"refusing {before}: these weights are on the meta device (shapes without values): {', '.join(meta)};"
            " load their weights first (e.g. `model.to_empty(device='cpu')` then `load_state_dict`)"
        )
    if bad:
        raise ValueError(
            f"refusing {before}: these weights hold NaN or Inf values: {', '.join(bad)}. The model diverged or was"
            " loaded from a damaged file; fix the weights (or leave those layers out with `filter_fn`) first"
        )


def check_materialized(model: nn.Module, what: str = "`model`") -> None:
    """Refuse a model whose parameters or buffers are on the ``meta`` device (shapes without values).

    Raises:
        ValueError: Naming the first such tensors and what to do.

    Example:
        >>> check_materialized(torch.nn.Linear(2, 2))
    """
    meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.device.type == "meta"]
    if meta:
        listed = ", ".join(meta[:5]) + (f" and {len(meta) - 5} more" if len(meta) > 5 else "")
        raise ValueError(
            f"{what} holds tensors on the meta device (shapes without values): {listed}; load its weights first"
            " (e.g. `model.to_empty(device='cpu')` then `load_state_dict`, or `from_pretrained(..., device_map=None)`)"
        )
