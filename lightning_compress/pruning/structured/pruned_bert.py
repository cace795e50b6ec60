"""BERT models with fewer attention heads in some layers: the architecture a head-pruned BERT is saved as.

Transformers 5 has no head pruning: ``BertSelfAttention`` derives its head count from ``config.num_attention_heads``
and its head size from ``hidden_size / num_attention_heads``, the same in every layer, and ``pruned_heads`` in a
config is ignored. A head-pruned BERT keeps ``num_attention_heads`` (so the head size is unchanged) and lists the
heads each layer keeps in ``config.attention_heads_per_layer``; the classes here build the attention of layer ``i``
with that many heads.

Save and reload such a model with :func:`~lightning_compress.pruning.structured.serialization.save_pruned` /
:func:`~lightning_compress.pruning.structured.serialization.load_pruned` (a ``config.json`` plus checksummed
safetensors, rebuilt with these classes: no pickle, no remote code). The classes are not registered for transformers'
auto classes, so ``save_pretrained`` no longer copies this file next to the weights nor writes an ``auto_map``: such a
folder (and one written by older versions, with the copied file) reloads with ``load_pruned``, which never runs a
folder's ``.py`` file. Plain transformers refuses it (a size mismatch on the narrower layers), and loading it with
``trust_remote_code=True`` would run whatever code the folder holds.

    >>> model = load_pruned(folder)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import (
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    PreTrainedModel,
)

__all__ = [
    "PrunedBertForMaskedLM",
    "PrunedBertForSequenceClassification",
    "PrunedBertForTokenClassification",
    "PrunedBertModel",
    "shrink_attention",
]


def shrink_attention(model: PreTrainedModel, heads_per_layer: list[int]) -> None:
    """Rebuilds, in place, the self-attention of encoder layer ``i`` with ``heads_per_layer[i]`` heads.

    The query, key and value projections get ``heads * head_size`` outputs and the attention output projection as many
    inputs; the new layers are uninitialised (their weights are loaded next).

    Args:
        model: A BERT model (the base model or one with a head), built from its config.
        heads_per_layer: Heads kept in each encoder layer, one entry per layer.

    Raises:
        ValueError: If ``heads_per_layer`` does not have one entry in ``[1, num_attention_heads]`` per layer.
    """
    layers = model.base_model.encoder.layer
    config = model.config
    if len(heads_per_layer) != len(layers) or not all(1 <= h <= config.num_attention_heads for h in heads_per_layer):
        raise ValueError(
            f"`attention_heads_per_layer` must hold {len(layers)} ints in [1, {config.num_attention_heads}], "
            f"got {heads_per_layer!r}"
        )
    for layer, heads in zip(layers, heads_per_layer):
        attention = layer.attention.self
        if heads == attention.num_attention_heads:
            continue
        width = heads * attention.attention_head_size
        kwargs: dict[str, Any] = {"device": attention.query.weight.device, "dtype": attention.query.weight.dtype}
        for name in ("query", "key", "value"):
            setattr(attention, name, nn.Linear(config.hidden_size, width, **kwargs))
        layer.attention.output.dense = nn.Linear(width, config.hidden_size, **kwargs)
        attention.num_attention_heads = heads
        attention.all_head_size = width


def _heads(config: Any) -> list[int]:
    heads = getattr(config, "attention_heads_per_layer", None)
    return list(heads) if heads is not None else [config.num_attention_heads] * config.num_hidden_layers


class PrunedBertModel(BertModel):
    """``BertModel`` whose layer ``i`` has ``config.attention_heads_per_layer[i]`` attention heads."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        shrink_attention(self, _heads(config))


class PrunedBertForSequenceClassification(BertForSequenceClassification):
    """``BertForSequenceClassification`` whose layer ``i`` has ``config.attention_heads_per_layer[i]`` heads."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        shrink_attention(self, _heads(config))


class PrunedBertForTokenClassification(BertForTokenClassification):
    """``BertForTokenClassification`` whose layer ``i`` has ``config.attention_heads_per_layer[i]`` heads."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        shrink_attention(self, _heads(config))


class PrunedBertForMaskedLM(BertForMaskedLM):
    """``BertForMaskedLM`` whose layer ``i`` has ``config.attention_heads_per_layer[i]`` heads."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        shrink_attention(self, _heads(config))
