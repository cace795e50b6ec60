"""An embedding stored as int8 rows with one float32 scale per row (symmetric, ``w[v] = q[v] * scale[v]``), and the
swap of a causal LM's embedding (and the output head tied to it) for it.

The lookup gathers the int8 rows of the given ids and scales them: only the looked-up rows are de-quantized. An
output head tied to the embedding becomes an :class:`~lightning_compress.quantization.weight_only.weight_only_linear.
Int8WeightOnlyLinear` holding the *same* int8 tensor (``weight_int8`` is one storage), so a state dict, the planner's
weight bytes and ``save_weight_only`` count the codes once; the head keeps its own per-row scales in its compute
dtype (what ``_weight_int8pack_mm`` takes), ``V`` values more.

Example:
    >>> emb = Int8Embedding.from_float(torch.nn.Embedding(10, 4).weight)
    >>> emb(torch.tensor([[1, 2]])).shape, emb.weight_int8.dtype
    (torch.Size([1, 2, 4]), torch.int8)
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from lightning_compress.quantization.weight_only.weight_only_linear import Int8WeightOnlyLinear

__all__ = ["Int8Embedding", "int8_embedding_"]


class Int8Embedding(nn.Module):
    """An ``nn.Embedding`` replacement with int8 rows ``(V, D)`` and float32 per-row scales ``(V,)``.

    Args:
        num_embeddings: Rows ``V``.
        embedding_dim: Width ``D``.
        dtype: Dtype of the looked-up vectors (the model's compute dtype).
        device: Device.

    Example:
        >>> emb = Int8Embedding.from_codes(torch.tensor([[1, -2], [3, 4]], dtype=torch.int8), torch.tensor([0.5, 2.0]),
        ...                                dtype=torch.float32)
        >>> emb(torch.tensor([1, 0])).tolist()
        [[6.0, 8.0], [0.5, -1.0]]
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: torch.dtype = torch.bfloat16,
                 device: Any = "cpu") -> None:  # fmt: skip
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.dtype = num_embeddings, embedding_dim, dtype
        self.register_buffer("weight_int8", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8, device=device))
        self.register_buffer("scale", torch.ones(num_embeddings, dtype=torch.float32, device=device))

    @classmethod
    def from_codes(cls, weight_int8: Tensor, scale: Tensor, dtype: torch.dtype = torch.bfloat16) -> Int8Embedding:
        """From int8 codes ``(V, D)`` and per-row scales ``(V,)``.

        Raises:
            ValueError: If the codes are not a 2-D int8 tensor or the scales not ``(V,)``.
        """
        if not isinstance(weight_int8, Tensor) or weight_int8.dim() != 2 or weight_int8.dtype != torch.int8:
            raise ValueError(f"`weight_int8` must be an int8 tensor (V, D), got {getattr(weight_int8, 'dtype', None)}"
                             f" {tuple(getattr(weight_int8, 'shape', ()))}")  # fmt: skip
        if not isinstance(scale, Tensor) or scale.numel() != weight_int8.shape[0]:
            raise ValueError(f"`scale` must hold one value per row ({weight_int8.shape[0]}), got"
                             f" {tuple(getattr(scale, 'shape', ()))}")  # fmt: skip
        emb = cls(weight_int8.shape[0], weight_int8.shape[1], dtype, weight_int8.device)
        emb.weight_int8 = weight_int8.contiguous()
        emb.scale = scale.detach().reshape(-1).float().to(weight_int8.device)
        return emb

    @classmethod
    @torch.no_grad()
    def from_float(cls, weight: Tensor, dtype: Optional[torch.dtype] = None) -> Int8Embedding:
        """Round a float embedding table ``(V, D)`` to int8, symmetric per row (``scale = max|w[v]| / 127``).

        Raises:
            ValueError: If ``weight`` is not a 2-D floating tensor, or holds NaN / Inf.
        """
        if not isinstance(weight, Tensor) or weight.dim() != 2 or not weight.is_floating_point():
            raise ValueError(f"`weight` must be a floating tensor (V, D), got {getattr(weight, 'dtype', type(weight))}"
                             f" {tuple(getattr(weight, 'shape', ()))}")  # fmt: skip
        w = weight.detach().float()
        if not torch.isfinite(w).all():
            raise ValueError("`weight` holds NaN or Inf values: refusing to round it to int8")
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        codes = torch.round(w / scale.unsqueeze(1)).clamp_(-127, 127).to(torch.int8)
        return cls.from_codes(codes, scale, weight.dtype if dtype is None else dtype)

    def forward(self, ids: Tensor) -> Tensor:
        """``ids`` ``(...)`` long -> ``(..., D)`` in ``self.dtype``: the gathered int8 rows times their scales."""
        rows = self.weight_int8[ids].float() * self.scale[ids].unsqueeze(-1)
        return rows.to(self.dtype)

    def dequantized_weight(self) -> Tensor:
        """The float32 table ``(V, D)``."""
        return self.weight_int8.float() * self.scale.unsqueeze(1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 per row, dtype={self.dtype}"


@torch.no_grad()
def int8_embedding_(
    model: nn.Module, dtype: torch.dtype = torch.bfloat16, source: Optional[Tensor] = None
) -> dict[str, Any]:
    """Swap a causal LM's input embedding (``get_input_embeddings()``) for an :class:`Int8Embedding`, in place; an
    output head tied to it (``get_output_embeddings()`` holding the same weight) becomes an ``Int8WeightOnlyLinear``
    that shares the int8 codes.

    Call it after any ``model.to(dtype)``: a later cast would turn the float32 scales into ``dtype``.

    Args:
        model: A Hugging Face model with ``get_input_embeddings`` (an ``nn.Embedding``).
        dtype: Compute dtype of the looked-up vectors and of the tied head.
        source: The float table ``(V, D)`` to round (default: the embedding's own weight), e.g. the float32 weights
            kept from before a bf16 cast.

    Returns:
        ``{"embedding": its module name, "tied_head": the head's module name or None}``.

    Raises:
        ValueError: If the model has no ``nn.Embedding`` input embedding, or ``source`` is not of its shape.
    """
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if not isinstance(emb, nn.Embedding):
        raise ValueError(f"int8_embedding_: {type(model).__name__} has no nn.Embedding input embedding"
                         f" (get_input_embeddings() is {type(emb).__name__})")  # fmt: skip
    names = {id(m): n for n, m in model.named_modules()}
    head_get = getattr(model, "get_output_embeddings", None)
    head = head_get() if callable(head_get) else None
    tied = isinstance(head, nn.Linear) and head.weight is emb.weight and head.bias is None
    if source is not None and tuple(getattr(source, "shape", ())) != tuple(emb.weight.shape):
        raise ValueError(f"int8_embedding_: `source` must be the embedding's shape {tuple(emb.weight.shape)}, got"
                         f" {tuple(getattr(source, 'shape', ()))}")  # fmt: skip
    new = Int8Embedding.from_float(emb.weight if source is None else source, dtype)
    emb_name = names[id(emb)]
    _set(model, emb_name, new)
    head_name = None
    if tied:
        head_name = names[id(head)]
        linear = Int8WeightOnlyLinear.from_codes(new.weight_int8, new.scale, dtype=dtype)
        linear.weight_int8 = new.weight_int8  # one storage: the codes are counted and saved once
        _set(model, head_name, linear)
    return {"embedding": emb_name, "tied_head": head_name}


def _set(model: nn.Module, fqn: str, new: nn.Module) -> None:
    parent_name, _, child = fqn.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
