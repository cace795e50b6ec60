"""Linear and Conv2d layers whose weight is a ``torch.sparse`` tensor (CSR, COO, BSR), for measuring sparse inference.

Unstructured sparsity only saves time if a kernel skips the zeros. These layers route the GEMM of a Linear or Conv2d
layer through ``torch.sparse.mm`` with the weight in a sparse layout, which is what PyTorch offers for irregular
sparsity (MKL / oneDNN on CPU, cuSPARSE on CUDA). A convolution becomes ``im2col`` (``F.unfold``) followed by the
sparse GEMM, the way a sparse convolution without a dedicated kernel must run; a 1x1, stride-1, unpadded convolution
skips the unfold. Grouped convolutions stay dense (``torch.sparse`` has no grouped GEMM).

Example:
    >>> lin = torch.nn.Linear(8, 4)
    >>> with torch.no_grad():
    ...     lin.weight[:, ::2] = 0.0
    >>> sparse = SparseLinear.from_dense(lin, "csr")
    >>> x = torch.randn(3, 8)
    >>> torch.allclose(sparse(x), lin(x), atol=1e-6)
    True
"""

from __future__ import annotations

import copy
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_compress.core.validation import ArgumentErrors

__all__ = ["SPARSE_FORMATS", "SparseConv2d", "SparseLinear", "to_sparse_layers", "to_sparse_weight"]

SPARSE_FORMATS = ("csr", "coo", "bsr")


def to_sparse_weight(weight: Tensor, fmt: str, blocksize: int = 16) -> Tensor:
    """A 2-D dense weight ``(out, in)`` in a ``torch.sparse`` layout.

    Args:
        weight: ``(out, in)`` dense tensor.
        fmt: ``"csr"``, ``"coo"`` (coalesced) or ``"bsr"`` (``blocksize x blocksize`` blocks; both sides must divide).
        blocksize: BSR block side.

    Returns:
        The sparse tensor, same values.

    Raises:
        TypeError: If ``weight`` is not a tensor.
        ValueError: For another ``fmt``, a ``blocksize`` that is not an int >= 1, a weight that is not 2-D, or BSR
            blocks that do not tile it.

    Example:
        >>> to_sparse_weight(torch.eye(4), "csr").layout
        torch.sparse_csr
    """
    errors = ArgumentErrors()
    errors.one_of("fmt", fmt, SPARSE_FORMATS)
    errors.int("blocksize", blocksize)
    errors.raise_if_any()
    if not isinstance(weight, Tensor):
        raise TypeError(f"`weight` must be a tensor, got a {type(weight).__name__}")
    if weight.dim() != 2:
        raise ValueError(f"`weight` must be 2-D (out, in), got shape {tuple(weight.shape)}")
    weight = weight.detach().contiguous()
    if fmt == "coo":
        return weight.to_sparse().coalesce()
    if fmt == "bsr" and (weight.shape[0] % blocksize or weight.shape[1] % blocksize):
        raise ValueError(f"BSR blocks of {blocksize}x{blocksize} do not tile a weight of shape {tuple(weight.shape)}")
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state": known, and what we measure
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return weight.to_sparse_csr() if fmt == "csr" else weight.to_sparse_bsr((blocksize, blocksize))


class SparseLinear(nn.Module):
    """``y = x @ W.T + b`` with ``W`` sparse: ``torch.sparse.mm(W, x.T).T``.

    Args:
        weight: Sparse ``(out, in)`` weight (any ``torch.sparse`` layout ``torch.sparse.mm`` takes).
        bias: Optional dense ``(out,)`` bias.

    Shapes:
        Input ``(*, in)``, output ``(*, out)``.
    """

    def __init__(self, weight: Tensor, bias: Optional[Tensor] = None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    @classmethod
    def from_dense(cls, linear: nn.Linear, fmt: str = "csr") -> SparseLinear:
        """The same layer with its weight converted by :func:`to_sparse_weight`."""
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(to_sparse_weight(linear.weight, fmt), bias)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features)
        out = torch.sparse.mm(self.weight, flat.t()).t()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


class SparseConv2d(nn.Module):
    """A Conv2d (``groups == 1``) as ``im2col`` + a sparse GEMM with the weight ``(out, in * kh * kw)``.

    Args:
        conv: The dense convolution to copy (its weight is converted with :func:`to_sparse_weight`).
        fmt: Sparse layout.

    Shapes:
        Input ``(B, in, H, W)``, output ``(B, out, H', W')`` as ``conv``.

    Raises:
        ValueError: For grouped convolutions or a padding mode other than zeros.
    """

    def __init__(self, conv: nn.Conv2d, fmt: str = "csr") -> None:
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("SparseConv2d takes ungrouped, zero-padded convolutions with numeric padding")
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.pointwise = self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)
        self.register_buffer("weight", to_sparse_weight(conv.weight.reshape(conv.out_channels, -1), fmt))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        if self.pointwise:
            out_h, out_w = height, width
            cols = x.reshape(batch, x.shape[1], -1)  # (B, in, H*W)
        else:
            cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (B, in*kh*kw, L)
            out_h = (height + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[
                0
            ] + 1
            out_w = (width + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[
                1
            ] + 1
        cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)  # (in*kh*kw, B*L)
        out = torch.sparse.mm(self.weight, cols)  # (out, B*L)
        out = out.reshape(self.out_channels, batch, out_h, out_w).transpose(0, 1)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


def to_sparse_layers(model: nn.Module, fmt: str = "csr", min_features: int = 1) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` whose ``nn.Linear`` and ungrouped ``nn.Conv2d`` layers run through ``torch.sparse.mm``.

    Args:
        model: The (pruned) float model; not modified.
        fmt: ``"csr"``, ``"coo"`` or ``"bsr"`` (layers BSR blocks do not tile stay dense).
        min_features: Layers with fewer output features stay dense.

    Returns:
        ``(copy, names of the layers left dense)``.

    Raises:
        ValueError: For another ``fmt``, a ``min_features`` that is not an int >= 1, or a ``model`` that is not an
            ``nn.Module`` (checked first: a bad ``fmt`` would otherwise leave every layer dense, silently).

    Example:
        >>> net, dense = to_sparse_layers(torch.nn.Sequential(torch.nn.Linear(4, 4)), "coo")
        >>> type(net[0]).__name__, dense
        ('SparseLinear', [])
    """
    errors = ArgumentErrors()
    if not isinstance(model, nn.Module):
        errors.add(f"`model` must be an nn.Module, got a {type(model).__name__}")
    errors.one_of("fmt", fmt, SPARSE_FORMATS)
    errors.int("min_features", min_features)
    errors.raise_if_any()
    model = copy.deepcopy(model)
    left_dense: list[str] = []
    for fqn, module in list(model.named_modules()):
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        try:
            if module.weight.shape[0] < min_features:
                raise ValueError("too few output features")
            new = SparseLinear.from_dense(module, fmt) if isinstance(module, nn.Linear) else SparseConv2d(module, fmt)
        except (ValueError, RuntimeError):
            left_dense.append(fqn)
            continue
        parent_name, _, name = fqn.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, name, new)
    return model, left_dense
