"""Calibration data for post-training quantization: the model inputs of the first N batches of whatever a user hands
in, and the evaluation of a (quantized) model on labelled batches.

``calibration_data`` may be a ``DataLoader`` or any iterable of batches in the forms the library's batch caller takes
(``(inputs, labels)`` tuples, dicts of tokenised text with or without ``labels``, bare input tensors), a single dict
batch, or a tensor of inputs ``(N, ...)``, which is split into batches of ``batch_size`` along dimension 0.

Example:
    >>> [x.shape for x in calibration_inputs(torch.randn(10, 3), num_batches=2, batch_size=4)]
    [torch.Size([4, 3]), torch.Size([4, 3])]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from lightning_compress.core.batches import call_model, model_inputs, move_data_to_device

__all__ = ["METRICS", "Metric", "calibration_inputs", "eval_batches", "evaluate", "logits_of", "split_labels"]

Metric = Union[str, Callable[[Tensor, Tensor], Any]]
METRICS = ("accuracy", "agreement")


def _batches(data: Any, batch_size: int) -> Iterable[Any]:
    if isinstance(data, Tensor):
        if data.dim() == 0:
            raise ValueError("`calibration_data` is a 0-d tensor; pass a batch of inputs (N, ...) or a DataLoader")
        return (data[i : i + batch_size] for i in range(0, data.shape[0], batch_size))
    if isinstance(data, Mapping):
        return [data]
    if isinstance(data, Iterable):
        return data
    raise TypeError(
        "`calibration_data` must be a DataLoader, an iterable of batches, a dict batch or a tensor of inputs,"
        f" got {type(data).__name__}"
    )


def calibration_inputs(data: Any, num_batches: Optional[int] = None, batch_size: int = 32, what: str = "") -> list:
    """The model inputs (labels removed, on the CPU) of the first ``num_batches`` batches of ``data``.

    Args:
        data: See the module docstring.
        num_batches: How many batches to take; None: all of them.
        batch_size: Rows per batch when ``data`` is a tensor.
        what: The argument's name for the messages (default ``calibration_data``).

    Returns:
        A list of inputs (tensor, tuple or dict each), at most ``num_batches`` long.

    Raises:
        TypeError: If ``data`` is none of the accepted forms.
        ValueError: If it yields no batch.

    Example:
        >>> calibration_inputs([(torch.ones(2, 3), torch.zeros(2))])[0].shape
        torch.Size([2, 3])
    """
    name = what or "calibration_data"
    out: list = []
    for batch in _batches(data, batch_size):
        if num_batches is not None and len(out) >= num_batches:
            break
        out.append(move_data_to_device(model_inputs(batch), torch.device("cpu")))
    if not out:
        raise ValueError(
            f"`{name}` yielded no batch: post-training quantization needs at least one batch of model inputs to"
            " calibrate the activation ranges (a non-empty DataLoader, list of batches or tensor)"
        )
    return out


def eval_batches(data: Any, what: str = "eval_data") -> list:
    """The batches of ``data`` (labels kept) on the CPU, as a list to iterate several times.

    Raises:
        ValueError: If ``data`` yields no batch.
    """
    out = [move_data_to_device(batch, torch.device("cpu")) for batch in _batches(data, 32)]
    if not out:
        raise ValueError(f"`{what}` yielded no batch")
    return out


def logits_of(output: Any) -> Tensor:
    """The logits of a model's output: ``.logits`` of a Hugging Face output, the first item of a tuple, or itself."""
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        return output[0]
    return output


def split_labels(batch: Any) -> tuple[Any, Optional[Tensor]]:
    """``(inputs, labels)`` of a batch: a dict's ``labels``, a tuple's second item; None for bare inputs."""
    if isinstance(batch, Mapping):
        return model_inputs(batch), batch.get("labels")
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[1], Tensor):
        return batch[0], batch[1]
    return model_inputs(batch), None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    eval_data: Iterable[Any],
    metric: Metric = "accuracy",
    reference: Optional[list[Tensor]] = None,
) -> float:
    """The mean of ``metric`` over ``eval_data``, weighted by batch size (higher is better).

    Args:
        model: Called on each batch's inputs (:func:`~lightning_compress.core.batches.call_model`).
        eval_data: Labelled batches (a list, so that it can be iterated again).
        metric: ``"accuracy"`` (top-1 against the batch's labels), ``"agreement"`` (top-1 against ``reference``,
            the float model's logits per batch: no labels needed), or ``metric(logits, labels) -> float or 0-d
            tensor``, the mean over a batch.
        reference: For ``"agreement"``: the float model's logits, one ``(B, classes)`` tensor per batch.

    Returns:
        The metric, a float.

    Raises:
        ValueError: If ``metric="accuracy"`` and a batch has no labels, or ``"agreement"`` without ``reference``.

    Example:
        >>> evaluate(torch.nn.Identity(), [(torch.tensor([[0.0, 1.0]]), torch.tensor([1]))])
        1.0
    """
    total, count = 0.0, 0
    for i, batch in enumerate(eval_data):
        inputs, labels = split_labels(batch)
        logits = logits_of(call_model(model, inputs)).float()
        n = logits.shape[0] if logits.dim() else 1
        if metric == "accuracy":
            if labels is None:
                raise ValueError('`metric="accuracy"` needs labelled batches; use metric="agreement" or a callable')
            value = float((logits.argmax(-1) == labels).float().mean())
        elif metric == "agreement":
            if reference is None:
                raise ValueError('`metric="agreement"` compares with the float model: pass its logits as `reference`')
            value = float((logits.argmax(-1) == reference[i].argmax(-1)).float().mean())
        else:
            value = float(metric(logits, labels))
        total, count = total + value * n, count + n
    if count == 0:
        raise ValueError("`eval_data` yielded no batch")
    return total / count
