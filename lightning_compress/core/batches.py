"""Batches: what a model is called with, how, and where the first batch of a loop comes from.

The library takes the batch forms of Lightning and Hugging Face alike: ``(inputs, labels)`` tuples (or lists), dicts
holding ``labels`` (a tokenised text batch), or bare inputs. Moving a batch to a device is Lightning's own
``move_data_to_device`` (re-exported here).

Example:
    >>> model_inputs((torch.ones(2, 3), torch.zeros(2)))
    tensor([[1., 1., 1.],
            [1., 1., 1.]])
    >>> call_on_batch(torch.nn.Identity(), {"input": torch.ones(1), "labels": torch.zeros(1)})
    tensor([1.])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Union

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import Tensor, nn

__all__ = [
    "ExampleInputs",
    "batch_size_of",
    "call_model",
    "call_on_batch",
    "first_batch",
    "model_inputs",
    "move_data_to_device",
    "stage_dataloader",
]

LABEL_KEYS = ("labels",)
ExampleInputs = Union[Tensor, tuple, Mapping[str, Any]]  # one batch of a model's inputs: positional or keyword


def model_inputs(batch: Any) -> Any:
    """The part of a batch a model is called with: a dict without its ``labels``, the first item of a tuple or list
    (``(inputs, labels)``), or the batch itself.

    Example:
        >>> sorted(model_inputs({"input_ids": torch.ones(1), "labels": torch.zeros(1)}))
        ['input_ids']
    """
    if isinstance(batch, Mapping):
        return {k: v for k, v in batch.items() if k not in LABEL_KEYS}
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` on inputs: a tensor as one argument, a dict as keyword arguments, a tuple (or list) as positional
    ones: the forms of :data:`~lightning_compress.quantization.export_inputs.ExampleInputs`.

    Example:
        >>> call_model(torch.nn.Bilinear(2, 2, 1), (torch.ones(3, 2), torch.ones(3, 2))).shape
        torch.Size([3, 1])
    """
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def call_on_batch(model: nn.Module, batch: Any, whole_inputs: bool = False) -> Any:
    """Call ``model`` on a batch without its labels (:func:`model_inputs`): a dict as keyword arguments, else as one
    argument; with ``whole_inputs``, the inputs always as one argument (the ``forward(inputs)`` of a LightningModule
    such as :class:`~lightning_compress.ClassificationModule`, which takes a dict whole).

    Example:
        >>> call_on_batch(torch.nn.Identity(), (torch.ones(2), torch.zeros(2)))
        tensor([1., 1.])
    """
    inputs = model_inputs(batch)
    if isinstance(inputs, Mapping) and not whole_inputs:
        return model(**inputs)
    return model(inputs)


def batch_size_of(inputs: Any) -> int:
    """Dimension 0 of the first tensor of ``inputs`` (a tensor, a tuple or a dict), 1 if there is none.

    Example:
        >>> batch_size_of({"input_ids": torch.ones(4, 7)})
        4
    """
    if isinstance(inputs, Tensor):
        tensors: Iterable[Any] = [inputs]
    elif isinstance(inputs, Mapping):
        tensors = inputs.values()
    elif isinstance(inputs, (tuple, list)):
        tensors = inputs
    else:
        tensors = []
    first = next((t for t in tensors if isinstance(t, Tensor) and t.dim() > 0), None)
    return int(first.shape[0]) if first is not None else 1


_LOOPS = {"fit": "fit_loop", "validate": "validate_loop", "test": "test_loop", "predict": "predict_loop"}


def stage_dataloader(trainer: Any, stage: str) -> Iterable[Any]:
    """The dataloader the Trainer was given for ``stage`` (``"fit"``: the train loader), before its loop sets it up.

    The datamodule's, the LightningModule's hook or the argument of ``fit`` / ``validate`` / ``test`` / ``predict``,
    whichever the Trainer uses; with several dataloaders, the first. Lightning has no public accessor for this before
    the loop starts, so it reads the loop's data source (``trainer.<loop>._data_source``), the one private attribute
    the library relies on.

    Raises:
        ValueError: If ``stage`` is unknown or the Trainer has no dataloader for it.
    """
    if stage not in _LOOPS:
        raise ValueError(f"`stage` can be {', '.join(_LOOPS)}, got {stage!r}")
    source = getattr(getattr(trainer, _LOOPS[stage]), "_data_source", None)
    if source is None or not source.is_defined():
        raise ValueError(f"the Trainer was given no {stage} dataloader")
    loader = source.dataloader()
    while isinstance(loader, (list, tuple, Mapping)) and loader:
        loader = loader[0] if isinstance(loader, (list, tuple)) else next(iter(loader.values()))
    return loader


def first_batch(trainer: Any, stage: str) -> Any:
    """The first batch of :func:`stage_dataloader`, drawn without touching the global random state (a shuffled
    loader without its own generator would otherwise advance it, and change the run).

    Raises:
        ValueError: If the Trainer has no dataloader for ``stage``, or it yields no batch.
    """
    loader = stage_dataloader(trainer, stage)
    with torch.random.fork_rng(devices=[]):
        batch = next(iter(loader), None)
    if batch is None:
        size = getattr(getattr(loader, "dataset", None), "__len__", None)
        rows = f" (its dataset holds {size()} rows)" if callable(size) else ""
        raise ValueError(
            f"the {stage} dataloader ({type(loader).__name__}) yielded no batch{rows}: it needs at least one batch;"
            " check that its dataset is not empty (and `drop_last` with fewer rows than `batch_size`)"
        )
    return batch
