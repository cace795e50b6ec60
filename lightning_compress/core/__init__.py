"""What every technique shares, and nothing else of the project imports into: masks and their callback template,
which weights a technique selects, the network inside a LightningModule, batches, checkpoints, argument checks,
multi-process broadcasts and metric logging.
"""

from lightning_compress.core.batches import call_model, call_on_batch, first_batch, model_inputs, stage_dataloader
from lightning_compress.core.checkpoints import load_network_weights, network_state, read_state_dict
from lightning_compress.core.distributed import broadcast_masks, broadcast_tensors_
from lightning_compress.core.mask_callback import MaskingCallback
from lightning_compress.core.masks import ParameterMasks, pack_mask, unpack_mask
from lightning_compress.core.metric_logging import log_metrics
from lightning_compress.core.selection import FilterFn, prunable_weights, select_layers
from lightning_compress.core.target import compression_target, find_network, schedule_step, steps_per_epoch
from lightning_compress.core.validation import ArgumentErrors

__all__ = [
    "ArgumentErrors",
    "FilterFn",
    "MaskingCallback",
    "ParameterMasks",
    "broadcast_masks",
    "broadcast_tensors_",
    "call_model",
    "call_on_batch",
    "compression_target",
    "find_network",
    "first_batch",
    "load_network_weights",
    "log_metrics",
    "model_inputs",
    "network_state",
    "pack_mask",
    "prunable_weights",
    "read_state_dict",
    "schedule_step",
    "select_layers",
    "stage_dataloader",
    "steps_per_epoch",
    "unpack_mask",
]
