"""Sparsity schedules: how far from the initial to the final sparsity a pruning run is at a given step.

A schedule is a function of progress ``p`` in [0, 1] that returns the fraction of the way from the initial to the final
sparsity, in [0, 1]. The cubic schedule of Zhu & Gupta (2017, "To prune, or not to prune") prunes fast while the network
has many redundant weights and slowly near the end.

Example:
    >>> round(sparsity_at_step(50, start_step=0, end_step=100, initial=0.0, final=0.8, schedule="cubic"), 4)
    0.7
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Union

from lightning_compress.core.validation import ArgumentErrors, is_int

__all__ = [
    "ScheduleFn",
    "ScheduleLike",
    "constant_schedule",
    "cubic_schedule",
    "linear_schedule",
    "resolve_schedule",
    "schedule_problems",
    "sparsity_at_step",
]

ScheduleFn = Callable[[float], float]
ScheduleLike = Union[Literal["cubic", "linear", "constant"], ScheduleFn]


def cubic_schedule(progress: float) -> float:
    """Zhu & Gupta's cubic schedule, ``1 - (1 - p)**3``: fast at first, flat at the end.

    Example:
        >>> cubic_schedule(0.5)
        0.875
    """
    return 1.0 - (1.0 - progress) ** 3


def linear_schedule(progress: float) -> float:
    """The same number of weights pruned at every update, ``p``.

    Example:
        >>> linear_schedule(0.25)
        0.25
    """
    return progress


def constant_schedule(progress: float) -> float:
    """The final sparsity from the first update on (one-shot pruning at the start step), ``1``.

    Example:
        >>> constant_schedule(0.0)
        1.0
    """
    return 1.0


_SCHEDULES: dict[str, ScheduleFn] = {
    "cubic": cubic_schedule,
    "linear": linear_schedule,
    "constant": constant_schedule,
}


def resolve_schedule(schedule: ScheduleLike) -> ScheduleFn:
    """Turn a schedule name or callable into a callable.

    Raises:
        ValueError: If ``schedule`` is neither one of the names nor callable.

    Example:
        >>> resolve_schedule("linear")(0.3)
        0.3
    """
    if callable(schedule):
        return schedule
    if isinstance(schedule, str) and schedule in _SCHEDULES:
        return _SCHEDULES[schedule]
    raise ValueError(
        f"`schedule` must be one of {sorted(_SCHEDULES)} or a callable(progress) -> [0, 1], got {schedule!r}"
    )


def schedule_problems(schedule: object) -> list[str]:
    """Every problem with a schedule argument: a name of :func:`resolve_schedule`, or a callable that can be called at
    progress 0 and 1 and returns values in [0, 1] there.

    Example:
        >>> schedule_problems(lambda p: 2 * p)
        ['`schedule` must return values in [0, 1], got schedule(1.0) = 2.0']
    """
    if not callable(schedule):
        if schedule in _SCHEDULES:
            return []
        return [f"`schedule` can be cubic, linear, constant or a callable(progress) -> [0, 1], got {schedule!r}"]
    for progress in (0.0, 1.0):
        try:
            value = float(schedule(progress))
        except Exception as err:  # a schedule that cannot be called at progress 0 or 1 is reported, not raised
            return [f"`schedule` must be callable as schedule(progress) -> [0, 1]; schedule({progress}) raised {err!r}"]
        if not 0.0 <= value <= 1.0:
            return [f"`schedule` must return values in [0, 1], got schedule({progress}) = {value}"]
    return []


def sparsity_at_step(
    step: int,
    start_step: int,
    end_step: int,
    initial: float,
    final: float,
    schedule: ScheduleLike = "cubic",
) -> float:
    """Target sparsity at an optimizer step.

    ``initial`` before ``start_step``, ``final`` at and after ``end_step``, and in between
    ``initial + (final - initial) * schedule((step - start_step) / (end_step - start_step))``.

    Args:
        step: The optimizer step (``trainer.global_step``).
        start_step: The first step of the schedule.
        end_step: The step at which ``final`` is reached; ``end_step >= start_step``.
        initial: Sparsity at ``start_step``, in [0, 1).
        final: Sparsity from ``end_step`` on, in [initial, 1).
        schedule: ``"cubic"``, ``"linear"``, ``"constant"`` or a callable(progress) -> [0, 1].

    Returns:
        The target sparsity, a fraction in [0, 1).

    Raises:
        ValueError: If a step is not an int (``start_step``: >= 0), ``end_step < start_step``, ``initial`` is not in
            [0, 1), ``final`` is not in [initial, 1), or the schedule returns a value outside [0, 1].

    Example:
        >>> sparsity_at_step(25, start_step=0, end_step=100, initial=0.2, final=0.6, schedule="linear")
        0.3
    """
    errors = ArgumentErrors()
    errors.require(is_int(step), "step", "an int (an optimizer step)", step)
    ok = errors.int("start_step", start_step, minimum=0)
    if errors.require(is_int(end_step), "end_step", "an int", end_step) and ok and end_step < start_step:
        errors.add(f"`end_step` must be >= `start_step` ({start_step}), got {end_step}")
    if errors.interval("initial", initial, 0, 1, "[)", kind="a number "):
        errors.interval("final", final, initial, 1, "[)", kind="a number ")
    errors.raise_if_any()
    if step < start_step:
        return initial
    if step >= end_step:
        return final
    fn = resolve_schedule(schedule)
    progress = (step - start_step) / (end_step - start_step)
    fraction = float(fn(progress))
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"`schedule` must return a value in [0, 1], got {fraction} at progress {progress}")
    return initial + (final - initial) * fraction
