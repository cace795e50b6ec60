"""N:M (2:4) structured sparsity: the pattern and its masks, the ``NMSparsity`` callback, and the sparse layouts a
pruned model runs on (2:4 semi-structured on Ampere+ GPUs, ``torch.sparse`` layers for measuring unstructured sparsity).
"""

from lightning_compress.sparsity.nm_masks import is_nm_sparse, nm_mask, partial_nm_mask
from lightning_compress.sparsity.nm_sparsity import NMSparsity
from lightning_compress.sparsity.pattern import check_nm, check_sparsity_pattern, nm_eligibility, nm_problems
from lightning_compress.sparsity.semi_structured import (
    SemiStructuredSwap,
    semi_structured_problems,
    to_semi_structured_,
)
from lightning_compress.sparsity.sparse_layers import SparseConv2d, SparseLinear, to_sparse_layers, to_sparse_weight

__all__ = [
    "NMSparsity",
    "SemiStructuredSwap",
    "SparseConv2d",
    "SparseLinear",
    "check_nm",
    "check_sparsity_pattern",
    "is_nm_sparse",
    "nm_eligibility",
    "nm_mask",
    "nm_problems",
    "partial_nm_mask",
    "semi_structured_problems",
    "to_semi_structured_",
    "to_sparse_layers",
    "to_sparse_weight",
]
