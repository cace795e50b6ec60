"""One-shot pruning of a trained model from a few calibration batches (magnitude, Wanda, SparseGPT): the layer-wise
methods, the block-after-block calibration they share, ``one_shot_prune`` and the ``OneShotPruning`` callback.
"""

from lightning_compress.pruning.one_shot.calibration import InputStatistics
from lightning_compress.pruning.one_shot.one_shot_pruning import OneShotPruning
from lightning_compress.pruning.one_shot.prune import OneShotResult, one_shot_prune
from lightning_compress.pruning.one_shot.sequential_calibration import find_repeated_blocks
from lightning_compress.pruning.one_shot.sparsegpt import sparsegpt_prune
from lightning_compress.pruning.one_shot.wanda import wanda_mask

__all__ = [
    "InputStatistics",
    "OneShotPruning",
    "OneShotResult",
    "find_repeated_blocks",
    "one_shot_prune",
    "sparsegpt_prune",
    "wanda_mask",
]
