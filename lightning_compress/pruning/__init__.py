"""Pruning: magnitude masks and sparsity schedules, gradual magnitude pruning during training, one-shot methods from
calibration data (``pruning.one_shot``) and structured pruning to a smaller dense model (``pruning.structured``).
"""

from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning
from lightning_compress.pruning.magnitude import global_magnitude_masks, magnitude_mask, num_to_prune
from lightning_compress.pruning.schedule import constant_schedule, cubic_schedule, linear_schedule, sparsity_at_step

__all__ = [
    "GradualMagnitudePruning",
    "constant_schedule",
    "cubic_schedule",
    "global_magnitude_masks",
    "linear_schedule",
    "magnitude_mask",
    "num_to_prune",
    "sparsity_at_step",
]
