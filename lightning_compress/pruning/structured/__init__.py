"""Structured pruning to a smaller dense model: attention heads and FFN neurons of transformers, inner channels of
CNNs, scored by the gradient of a gate per unit and removed by slicing the weights.
"""

from lightning_compress.pruning.structured.channels import prune_channels, remove_channels
from lightning_compress.pruning.structured.report import StructuredPruningReport
from lightning_compress.pruning.structured.serialization import load_pruned, save_pruned
from lightning_compress.pruning.structured.transformer import (
    prune_ffn_neurons,
    prune_heads,
    remove_ffn_neurons,
    remove_heads,
)

__all__ = [
    "StructuredPruningReport",
    "load_pruned",
    "prune_channels",
    "prune_ffn_neurons",
    "prune_heads",
    "remove_channels",
    "remove_ffn_neurons",
    "remove_heads",
    "save_pruned",
]
