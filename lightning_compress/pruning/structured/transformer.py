"""Structured pruning of BERT-family transformers: attention heads and FFN neurons are removed by slicing the weights,
so the result is a smaller dense model.

Importance is ``|dL/dgate|`` of a gate of 1.0 per head (on the head's slice of the attention output projection's input)
or per FFN neuron (on the FFN output layer's input), summed over calibration batches
(:mod:`~lightning_compress.pruning.structured.unit_gates`).
Each layer loses ``floor(fraction * units)`` units of lowest importance.

Slicing a head removes its rows of the query, key and value projections and its columns of the attention output
projection; slicing a neuron removes its row of ``intermediate.dense`` and its column of ``output.dense``. The pruned
model computes exactly what the original computes with those heads / neurons gated to 0.

Saving and loading (no pickle, no remote code):
:func:`~lightning_compress.pruning.structured.serialization.save_pruned` writes a folder (``config.json`` with
``attention_heads_per_layer`` and ``intermediate_size``, checksummed ``model.safetensors``, ``structure.json``) that
:func:`~lightning_compress.pruning.structured.serialization.load_pruned` rebuilds.

* FFN neurons: ``config.intermediate_size`` is updated (the same count in every layer), so that folder (or a plain
  ``save_pretrained``) also reloads with a plain ``from_pretrained`` of the original class.
* Heads: transformers 5 has no head pruning (no ``pruned_heads``, no ``prune_heads``, no ``head_mask``: the config key
  is ignored), and its ``BertSelfAttention`` sets the head size to ``hidden_size / num_attention_heads``, so no plain
  ``BertConfig`` describes a BERT with fewer heads of the same size; plain ``from_pretrained`` of such a folder fails
  with a size mismatch. A head-pruned ``BertModel`` / ``BertFor{SequenceClassification,TokenClassification,
  MaskedLM}`` is returned as the matching class of :mod:`~lightning_compress.pruning.structured.pruned_bert` (a
  subclass, with ``config.attention_heads_per_layer``); other BERT-family classes (RoBERTa, ELECTRA, ...) are sliced
  in place of their own class, and ``load_pruned`` narrows a freshly built model of that class.

Example:
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                     intermediate_size=64)
    >>> model = BertForSequenceClassification(config)
    >>> batches = [{"input_ids": torch.randint(0, 100, (4, 8)), "labels": torch.tensor([0, 1, 0, 1])}]
    >>> small, report = prune_heads(model, 0.5, batches)
    >>> small.config.attention_heads_per_layer
    [2, 2]
    >>> smaller, report = prune_ffn_neurons(small, 0.25, batches)
    >>> smaller.config.intermediate_size
    48
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

import torch
from torch import Tensor, nn

from lightning_compress.pruning.structured.report import (
    BatchCounter,
    StructuredPruningReport,
    check_max_batches,
    check_prune_fraction,
    num_parameters,
)
from lightning_compress.pruning.structured.unit_gates import LossFn, UnitGate, gate_importance, units_to_keep

__all__ = [
    "head_gates",
    "neuron_gates",
    "prune_ffn_neurons",
    "prune_heads",
    "remove_ffn_neurons",
    "remove_heads",
    "transformer_layers",
]

_LAYER_PARTS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                "intermediate.dense", "output.dense")  # fmt: skip


def _is_layer(module: nn.Module) -> bool:
    try:
        return all(isinstance(module.get_submodule(part), nn.Linear) for part in _LAYER_PARTS) and hasattr(
            module.get_submodule("attention.self"), "attention_head_size"
        )
    except AttributeError:
        return False


def transformer_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The encoder layers of a BERT-family model, by qualified name.

    A layer is a module with ``attention.self.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense``
    and ``output.dense`` linear layers (BERT, RoBERTa, XLM-R, ELECTRA, MiniLM, ...).

    Raises:
        ValueError: If ``model`` has no such layer.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> list(transformer_layers(BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        ...                                                intermediate_size=64, vocab_size=100))))
        ['encoder.layer.0', 'encoder.layer.1']
    """
    layers = {name: m for name, m in model.named_modules() if _is_layer(m)}
    if not layers:
        raise ValueError(
            f"`model` must be a BERT-family Hugging Face model (encoder layers with attention.self.query/key/value, "
            f"attention.output.dense, intermediate.dense and output.dense Linear layers), got {type(model).__name__}"
        )
    return layers


def head_gates(model: nn.Module) -> dict[str, UnitGate]:
    """A gate per attention head of every layer, on the attention output projection's input (``(B, S, heads *
    head_size)``): gating a head to 0 removes its context vectors, as slicing it out does."""
    gates = {}
    for name, layer in transformer_layers(model).items():
        attention = layer.attention.self
        gates[name] = UnitGate(
            layer.attention.output.dense, attention.num_attention_heads, attention.attention_head_size
        )
    return gates


def neuron_gates(model: nn.Module) -> dict[str, UnitGate]:
    """A gate per FFN neuron of every layer, on the FFN output layer's input (``(B, S, intermediate_size)``)."""
    return {
        name: UnitGate(layer.output.dense, layer.intermediate.dense.out_features)
        for name, layer in transformer_layers(model).items()
    }


def _slice_linear(linear: nn.Linear, index: Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping ``index`` of its outputs (``dim=0``) or inputs (``dim=1``)."""
    weight = linear.weight.detach().index_select(dim, index.to(linear.weight.device))
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None, device=weight.device,
                    dtype=weight.dtype)  # fmt: skip
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            bias = linear.bias.detach()
            new.bias.copy_(bias.index_select(0, index.to(bias.device)) if dim == 0 else bias)
    new.train(linear.training)
    return new


def _check_keep(keep: Mapping[str, Sequence[int]], layers: Mapping[str, nn.Module], units: Mapping[str, int],
                what: str) -> dict[str, Tensor]:  # fmt: skip
    unknown = sorted(set(keep) - set(layers))
    if unknown:
        raise ValueError(f"`keep` names layers that do not exist: {unknown}; the layers are {sorted(layers)}")
    result = {}
    for name, indices in keep.items():
        index = torch.as_tensor(list(indices), dtype=torch.long)
        n = units[name]
        if index.numel() == 0 or index.unique().numel() != index.numel() or index.min() < 0 or index.max() >= n:
            raise ValueError(
                f"`keep[{name!r}]` must be distinct {what} indices in [0, {n - 1}], at least one, got {list(indices)!r}"
            )
        result[name] = index.sort().values
    return result


def _pruned_bert_class(model: nn.Module) -> Optional[type]:
    """The :mod:`~lightning_compress.pruning.structured.pruned_bert` class for a BERT class (``None`` for other
    models)."""
    try:
        from lightning_compress.pruning.structured import pruned_bert
    except ImportError:  # pragma: no cover - transformers missing
        return None
    import transformers

    pairs = {
        transformers.BertModel: pruned_bert.PrunedBertModel,
        transformers.BertForSequenceClassification: pruned_bert.PrunedBertForSequenceClassification,
        transformers.BertForTokenClassification: pruned_bert.PrunedBertForTokenClassification,
        transformers.BertForMaskedLM: pruned_bert.PrunedBertForMaskedLM,
    }
    if type(model) in pairs.values():
        return type(model)
    return pairs.get(type(model))


def _as_pruned_bert(model: nn.Module, heads_per_layer: list[int]) -> nn.Module:
    """Rebuilds a head-sliced BERT as the matching ``PrunedBert*`` class, weights copied (other models: unchanged)."""
    cls = _pruned_bert_class(model)
    model.config.attention_heads_per_layer = heads_per_layer
    if cls is None or type(model) is cls:
        return model
    new = cls(model.config).to(device=next(model.parameters()).device, dtype=model.dtype)
    new.load_state_dict(model.state_dict(), strict=True)
    return new.train(model.training)


def remove_heads(model: nn.Module, keep: Mapping[str, Sequence[int]]) -> nn.Module:
    """A copy of ``model`` keeping only the given attention heads; ``model`` is not modified.

    Args:
        model: A BERT-family model (see :func:`transformer_layers`).
        keep: Layer name -> indices of the heads to keep (at least one); layers not named keep all their heads.

    Returns:
        The smaller model: query/key/value have ``kept * head_size`` outputs, the attention output projection as many
        inputs, and ``config.attention_heads_per_layer`` lists the heads of each layer. BERT classes come back as
        their :mod:`~lightning_compress.pruning.structured.pruned_bert` subclass (see the module docstring). Every
        parameter requires
        grad (a student to fine-tune, even when ``model`` is a frozen teacher).

    Raises:
        ValueError: If a layer name is unknown or an index list is empty, repeated or out of range.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        ...                              intermediate_size=64, vocab_size=100))
        >>> remove_heads(model, {"encoder.layer.0": [1, 3]}).config.attention_heads_per_layer
        [2, 4]
    """
    pruned = copy.deepcopy(model).requires_grad_(True)  # a student, even when `model` is a frozen teacher
    layers = transformer_layers(pruned)
    units = {name: layer.attention.self.num_attention_heads for name, layer in layers.items()}
    for name, heads in _check_keep(keep, layers, units, "head").items():
        attention, output = layers[name].attention.self, layers[name].attention.output
        size = attention.attention_head_size
        index = (heads[:, None] * size + torch.arange(size)).flatten()
        for part in ("query", "key", "value"):
            setattr(attention, part, _slice_linear(getattr(attention, part), index, 0))
        output.dense = _slice_linear(output.dense, index, 1)
        attention.num_attention_heads = len(heads)
        attention.all_head_size = len(heads) * size
    heads_per_layer = [layer.attention.self.num_attention_heads for layer in layers.values()]
    return _as_pruned_bert(pruned, heads_per_layer)


def remove_ffn_neurons(model: nn.Module, keep: Mapping[str, Sequence[int]]) -> nn.Module:
    """A copy of ``model`` keeping only the given FFN neurons; ``model`` is not modified.

    Args:
        model: A BERT-family model (see :func:`transformer_layers`).
        keep: Layer name -> indices of the neurons to keep; every layer must end with the same count, which becomes
            ``config.intermediate_size``.

    Returns:
        The smaller model, of the same class: ``intermediate.dense`` has ``kept`` outputs, ``output.dense`` as many
        inputs. Every parameter requires grad.

    Raises:
        ValueError: If a layer name is unknown, an index list is empty, repeated or out of range, or the layers end
            with different neuron counts.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        ...                              intermediate_size=64, vocab_size=100))
        >>> remove_ffn_neurons(model, {"encoder.layer.0": range(0, 64, 2)}).config.intermediate_size
        32
    """
    pruned = copy.deepcopy(model).requires_grad_(True)  # a student, even when `model` is a frozen teacher
    layers = transformer_layers(pruned)
    units = {name: layer.intermediate.dense.out_features for name, layer in layers.items()}
    checked = _check_keep(keep, layers, units, "neuron")
    counts = {name: len(checked[name]) if name in checked else n for name, n in units.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(
            "`keep` must leave the same number of FFN neurons in every layer (config.intermediate_size is one number), "
            f"got {counts}"
        )
    for name, index in checked.items():
        layer = layers[name]
        layer.intermediate.dense = _slice_linear(layer.intermediate.dense, index, 0)
        layer.output.dense = _slice_linear(layer.output.dense, index, 1)
    config = getattr(pruned, "config", None)
    if config is not None:
        config.intermediate_size = next(iter(counts.values()))
    return pruned


def _prune(
    kind: str,
    model: nn.Module,
    fraction: float,
    dataloader: Iterable[Any],
    loss_fn: Optional[LossFn],
    max_batches: Optional[int],
) -> tuple[nn.Module, StructuredPruningReport]:
    fraction = check_prune_fraction(fraction)
    check_max_batches(max_batches)
    gates = head_gates(model) if kind == "heads" else neuron_gates(model)  # raises for unsupported models
    batches = BatchCounter(dataloader)
    scores = gate_importance(model, gates, batches, loss_fn, max_batches)
    keep = {name: units_to_keep(score, fraction) for name, score in scores.items()}
    pruned = remove_heads(model, keep) if kind == "heads" else remove_ffn_neurons(model, keep)
    kept = {name: index.tolist() for name, index in keep.items()}
    removed = {name: sorted(set(range(gates[name].units)) - set(kept[name])) for name in kept}
    report = StructuredPruningReport(kind, fraction, kept, removed, num_parameters(model), num_parameters(pruned),
                                     batches.count, scores)  # fmt: skip
    return pruned, report


def prune_heads(
    model: nn.Module,
    fraction: float,
    dataloader: Iterable[Any],
    loss_fn: Optional[LossFn] = None,
    max_batches: Optional[int] = None,
) -> tuple[nn.Module, StructuredPruningReport]:
    """Removes ``floor(fraction * heads)`` attention heads of lowest importance from every layer.

    Importance: ``|dL/dgate|`` of a gate of 1.0 per head, summed over calibration batches.

    Args:
        model: A BERT-family Hugging Face model (see :func:`transformer_layers`); not modified, so it can serve as the
            teacher of a :class:`~lightning_compress.distillation.distillation_module.DistillationModule` fine-tune of
            the result.
        fraction: Share of each layer's heads to remove, in [0, 1); ``0`` returns an unpruned copy.
        dataloader: Calibration batches: mappings with ``labels`` (``model(**batch)``, e.g. a
            :class:`~lightning_compress.data.GLUEDataModule` loader) or ``(inputs, labels)`` pairs; or anything
            ``loss_fn`` takes.
        loss_fn: ``(model, batch) -> scalar loss``; cross-entropy on the labels when omitted
            (:func:`~lightning_compress.pruning.structured.unit_gates.default_loss`).
        max_batches: Use at most this many batches (all when ``None``).

    Returns:
        ``(pruned_model, report)``. The model is in the original's mode, dtype and device, every parameter
        requiring grad (ready to fine-tune, e.g. with the original as teacher); BERT classes come back as
        their :mod:`~lightning_compress.pruning.structured.pruned_bert` subclass; save it with
        :func:`~lightning_compress.pruning.structured.serialization.save_pruned` and reload it with ``load_pruned``.

    Raises:
        ValueError: If ``fraction`` is outside [0, 1), ``dataloader`` yields no batches, ``max_batches`` is not a
            positive int, or ``model`` is not a BERT-family model.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
        ...                                                  num_attention_heads=4, intermediate_size=64))
        >>> batches = [{"input_ids": torch.randint(0, 100, (4, 8)), "labels": torch.tensor([0, 1, 0, 1])}]
        >>> small, report = prune_heads(model, 0.25, batches)
        >>> [len(k) for k in report.kept.values()]
        [3, 3]
    """
    return _prune("heads", model, fraction, dataloader, loss_fn, max_batches)


def prune_ffn_neurons(
    model: nn.Module,
    fraction: float,
    dataloader: Iterable[Any],
    loss_fn: Optional[LossFn] = None,
    max_batches: Optional[int] = None,
) -> tuple[nn.Module, StructuredPruningReport]:
    """Removes ``floor(fraction * intermediate_size)`` FFN neurons of lowest importance from every layer.

    Importance: ``|dL/dgate|`` of a gate of 1.0 per neuron (= ``|sum over tokens of activation * gradient|``), summed
    over calibration batches. Every layer keeps the same count, which becomes ``config.intermediate_size``: the result
    saves with ``save_pretrained`` and reloads with a plain ``from_pretrained`` of its class.

    Args:
        model: A BERT-family Hugging Face model; not modified.
        fraction: Share of each layer's neurons to remove, in [0, 1).
        dataloader: Calibration batches (see :func:`prune_heads`).
        loss_fn: ``(model, batch) -> scalar loss``; cross-entropy on the labels when omitted.
        max_batches: Use at most this many batches (all when ``None``).

    Returns:
        ``(pruned_model, report)``, the model of the original's class, mode, dtype and device, every parameter
        requiring grad.

    Raises:
        ValueError: If ``fraction`` is outside [0, 1), ``dataloader`` yields no batches, ``max_batches`` is not a
            positive int, or ``model`` is not a BERT-family model.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
        ...                                                  num_attention_heads=4, intermediate_size=64))
        >>> batches = [{"input_ids": torch.randint(0, 100, (4, 8)), "labels": torch.tensor([0, 1, 0, 1])}]
        >>> prune_ffn_neurons(model, 0.5, batches)[0].config.intermediate_size
        32
    """
    return _prune("ffn_neurons", model, fraction, dataloader, loss_fn, max_batches)
