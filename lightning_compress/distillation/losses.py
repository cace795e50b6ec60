"""The maths of knowledge distillation, as pure functions on tensors: the logit (KD) loss, the feature loss, and the
temperature schedule.

Example:
    >>> student, teacher = torch.randn(8, 10), torch.randn(8, 10)
    >>> float(kd_loss(teacher, teacher, temperature=4.0))
    0.0
    >>> kd_loss(student, teacher, temperature=4.0).shape
    torch.Size([])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Literal, Union

import torch.nn.functional as F
from torch import Tensor

__all__ = ["FEATURE_LOSSES", "TemperatureLike", "feature_loss", "kd_loss", "temperature_at"]

FEATURE_LOSSES = ("mse", "cosine")
TemperatureLike = Union[float, Callable[[float], float]]


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    r"""Hinton's distillation loss ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over examples.

    The ``T^2`` factor keeps the gradient's scale independent of ``T``, so that the loss mixes with cross-entropy
    at a fixed ``alpha``. Computed in float32 whatever the input dtypes.

    Args:
        student_logits: ``(B, C)`` (or ``(..., C)``, flattened to ``(N, C)``); gradients flow into it.
        teacher_logits: The same shape; treated as a constant target.
        temperature: ``T > 0``; higher values soften both distributions.

    Returns:
        A scalar: the KL divergence summed over classes and averaged over the ``N`` examples, times ``T^2``.

    Raises:
        TypeError: If the logits are not tensors.
        ValueError: If the shapes differ or ``temperature`` is not a number > 0.

    Example:
        >>> kd_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0]]), 2.0)
        tensor(0.)
    """
    _check_tensors(student_logits=student_logits, teacher_logits=teacher_logits)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape, got {tuple(student_logits.shape)} and "
            f"{tuple(teacher_logits.shape)}"
        )
    number = isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
    if not ((number or (isinstance(temperature, Tensor) and temperature.numel() == 1)) and temperature > 0):
        raise ValueError(f"`temperature` must be a number > 0, got {temperature!r}")
    classes = student_logits.shape[-1]
    log_p_student = F.log_softmax(student_logits.float().reshape(-1, classes) / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float().reshape(-1, classes).detach() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def feature_loss(student: Tensor, teacher: Tensor, kind: Literal["mse", "cosine"] = "mse", dim: int = -1) -> Tensor:
    """The distance between a (projected) student feature and the teacher's feature of the same shape.

    Args:
        student: Any shape, e.g. ``(B, L, D)`` hidden states or ``(B, C, H, W)`` feature maps; gradients flow into it.
        teacher: The same shape; treated as a constant target.
        kind: ``"mse"``: mean squared error over all elements; ``"cosine"``: ``1 - cos`` between the two vectors along
            ``dim`` at each position, averaged over positions.
        dim: The width dimension for ``"cosine"`` (``-1`` for hidden states, ``1`` for conv feature maps).

    Returns:
        A scalar, computed in float32.

    Raises:
        TypeError: If a feature is not a tensor.
        ValueError: If the shapes differ or ``kind`` is unknown.

    Example:
        >>> x = torch.randn(2, 5, 8)
        >>> float(feature_loss(x, 3 * x, "cosine")) < 1e-6
        True
    """
    _check_tensors(student=student, teacher=teacher)
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher features must have the same shape, got {tuple(student.shape)} and "
            f"{tuple(teacher.shape)}"
        )
    student, teacher = student.float(), teacher.float().detach()
    if kind == "mse":
        return F.mse_loss(student, teacher)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student, teacher, dim=dim)).mean()
    raise ValueError(f"`kind` can be {' or '.join(FEATURE_LOSSES)}, got {kind!r}")


def _check_tensors(**values: object) -> None:
    for name, value in values.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"`{name}` must be a tensor, got a {type(value).__name__}")


def temperature_at(temperature: TemperatureLike, progress: float) -> float:
    """The temperature at a point of training.

    Args:
        temperature: A constant ``T > 0``, or a callable ``progress -> T`` (e.g. an annealing from 8 to 1).
        progress: Fraction of the training's optimizer steps done, in [0, 1].

    Returns:
        ``T`` as a float.

    Raises:
        ValueError: If the value is not a finite number > 0.

    Example:
        >>> temperature_at(lambda p: 8.0 - 7.0 * p, 0.5)
        4.5
    """
    value = temperature(progress) if callable(temperature) else temperature
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`temperature` must be > 0, got {value!r} at training progress {progress:.3f}")
    return value


def _check_temperature(temperature: object) -> str | None:
    """The problem with a ``temperature`` argument (constant or schedule), or None."""
    if callable(temperature):
        for progress in (0.0, 0.5, 1.0):
            try:
                value = float(temperature(progress))
            except Exception as err:  # reported, not raised: the constructor lists every problem at once
                return (
                    "`temperature` must be > 0 or a callable(progress in [0, 1]) -> T > 0;"
                    f" temperature({progress}) raised {err!r}"
                )
            if not (math.isfinite(value) and value > 0):
                return f"`temperature` schedules must return values > 0, got temperature({progress}) = {value}"
        return None
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        return f"`temperature` must be a number > 0 or a callable(progress in [0, 1]) -> T > 0, got {temperature!r}"
    if not (math.isfinite(temperature) and temperature > 0):
        return f"`temperature` must be > 0, got {temperature!r}"
    return None
