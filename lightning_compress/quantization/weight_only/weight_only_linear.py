"""Linear layers whose weights are stored as integers and multiplied by real weight-only kernels: INT4 (2-4-bit
grids, in groups) through ``torch.ops.aten._weight_int4pack_mm_for_cpu`` on CPU (``_weight_int4pack_mm``, the kernel
of torchao's INT4 weight-only tensor-core layout, on CUDA), and INT8 (5-8-bit symmetric grids, one scale per output
channel) through ``torch.ops.aten._weight_int8pack_mm``. Activations stay in float (bf16 or fp32).

:func:`to_weight_only_` swaps the layers that :func:`~lightning_compress.quantization.weight_only.quantize.
one_shot_quantize` rounded for these modules. Their ``state_dict`` holds portable tensors (``qweight``: two 4-bit
codes per byte, ``scale`` and ``zero`` per group; INT8: ``weight_int8`` and ``scale``), so a saved model loads on any
device (:mod:`~lightning_compress.quantization.weight_only.weight_only_file`); in memory only the kernel's own layout
is kept. A layer the kernel cannot take (``out`` not a multiple of 16, a group size that is no multiple of 32) keeps
its de-quantized weight and runs ``F.linear`` (``kernel == "dequantized"``), with the same state dict.

Example:
    >>> lin = torch.nn.Linear(64, 32, bias=False)
    >>> codes = torch.randint(0, 16, (32, 64), dtype=torch.uint8)
    >>> scale, zero = torch.rand(32, 2) / 10, torch.full((32, 2), 8.0)
    >>> int4 = Int4WeightOnlyLinear.from_codes(codes, scale, zero, group_size=32, dtype=torch.float32)
    >>> x = torch.randn(3, 64)
    >>> torch.allclose(int4(x), x @ int4.dequantized_weight().T, atol=1e-4), int4.kernel
    (True, 'cpu_int4pack')
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_compress.quantization.weight_only.grid import QuantizedWeight, dequantize
from lightning_compress.quantization.weight_only.packing import (
    int4_scales_and_zeros,
    kernel_group_size,
    pack_int4,
    unpack_int4,
)

__all__ = ["Int4WeightOnlyLinear", "Int8WeightOnlyLinear", "to_weight_only_"]


def _replace(model: nn.Module, fqn: str, new: nn.Module) -> None:
    parent_name, _, child = fqn.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


class _WeightOnly(nn.Module):
    """What the two modules share: the input scale (AWQ), the bias, and the state-dict plumbing."""

    in_features: int
    out_features: int

    def _init_common(self, in_features: int, out_features: int, bias: Optional[Tensor],
                     input_scale: Optional[Tensor], dtype: torch.dtype, device: Any) -> None:  # fmt: skip
        self.in_features, self.out_features = in_features, out_features
        b = None if bias is None else bias.detach().to(device=device, dtype=dtype).clone()
        self.register_buffer("bias", b)
        inv = None if input_scale is None else (1.0 / input_scale.detach().float()).to(device=device, dtype=dtype)
        self.register_buffer("input_scale_inv", inv)

    def _input(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        x = x.reshape(-1, self.in_features).to(dtype)
        if self.input_scale_inv is not None:
            x = x * self.input_scale_inv.to(dtype)
        return x

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for name in ("input_scale_inv", "bias"):  # optional buffers: made when the file has them
            if self._buffers.get(name) is None and prefix + name in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name])
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _output(self, y: Tensor, x: Tensor) -> Tensor:
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)


class Int4WeightOnlyLinear(_WeightOnly):
    """A Linear layer with 2-4-bit weights in groups, run by the INT4 weight-only kernel.

    Build it with :meth:`from_codes` or :meth:`from_quantized` (or empty, then ``load_state_dict``).

    Args:
        in_features: Inputs (even).
        out_features: Outputs.
        group_size: Inputs per grid group, or None (one per row).
        bias: Whether the layer has a bias.
        bits: The grid's bits (2-4; the codes are stored in 4-bit containers).
        dtype: Compute dtype of the kernel (activations, scales): ``torch.bfloat16`` (the default) or float32.
        device: ``"cpu"`` or a CUDA device (CUDA: bf16 only).

    Attributes:
        kernel: ``"cpu_int4pack"``, ``"cuda_int4pack"`` or ``"dequantized"`` (the shape does not suit the kernel).

    Example:
        >>> layer = Int4WeightOnlyLinear(64, 16, group_size=32)
        >>> layer.kernel, layer.state_dict()["qweight"].shape
        ('cpu_int4pack', torch.Size([16, 32]))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        group_size: Optional[int] = 128,
        bias: bool = False,
        bits: int = 4,
        dtype: torch.dtype = torch.bfloat16,
        device: Any = "cpu",
    ) -> None:
        super().__init__()
        width = in_features if group_size is None else group_size
        if in_features % width or in_features % 2 or not 2 <= bits <= 4:
            raise ValueError(f"Int4WeightOnlyLinear needs an even in_features that group_size divides and bits 2..4,"
                             f" got in_features={in_features}, group_size={group_size}, bits={bits}")  # fmt: skip
        groups = in_features // width
        self.group_size, self.bits, self.dtype = group_size, bits, dtype
        device = torch.device(device)
        b = torch.zeros(out_features, device=device) if bias else None
        self._init_common(in_features, out_features, b, None, dtype, device)
        self.register_buffer("scale", torch.ones(out_features, groups, device=device), persistent=False)
        self.register_buffer("zero", torch.full((out_features, groups), 8.0, device=device), persistent=False)
        self._set_codes(torch.full((out_features, in_features), 8, dtype=torch.uint8, device=device))

    # ----------------------------------------------------------------------------------------------- construction
    @classmethod
    def from_codes(
        cls,
        codes: Tensor,
        scale: Tensor,
        zero: Tensor,
        group_size: Optional[int],
        bias: Optional[Tensor] = None,
        bits: int = 4,
        input_scale: Optional[Tensor] = None,
        dtype: torch.dtype = torch.bfloat16,
    ) -> Int4WeightOnlyLinear:
        """From integer codes ``(out, in)`` (0..2^bits - 1) and the grid ``scale``, ``zero`` ``(out, groups)``."""
        out_features, in_features = codes.shape
        layer = cls(in_features, out_features, group_size, bias is not None, bits, dtype, codes.device)
        layer._init_common(in_features, out_features, bias, input_scale, dtype, codes.device)
        layer.scale, layer.zero = scale.detach().float().clone(), zero.detach().float().clone()
        layer._set_codes(codes)
        return layer

    @classmethod
    def from_quantized(cls, linear: nn.Linear, q: QuantizedWeight, dtype: torch.dtype = torch.bfloat16):
        """From a Linear layer and its :class:`QuantizedWeight` (from ``one_shot_quantize``)."""
        return cls.from_codes(q.codes(), q.scale, q.zero, q.grid.group_size, linear.bias, q.grid.bits,
                              q.input_scale, dtype)  # fmt: skip

    def _set_codes(self, codes: Tensor) -> None:
        device = codes.device
        kgroup = kernel_group_size(self.in_features, self.out_features, self.group_size)
        if device.type == "cuda" and self.dtype != torch.bfloat16:
            kgroup = None
        self._kernel_group = kgroup
        if kgroup is None:
            self.kernel = "dequantized"
            w = dequantize(codes, self.scale.to(device), self.zero.to(device)).to(self.dtype)
            self.register_buffer("packed", w, persistent=False)
            self.register_buffer("scales_and_zeros", None, persistent=False)
            return
        width = self.in_features if self.group_size is None else self.group_size
        sz = int4_scales_and_zeros(self.scale, self.zero, width // kgroup, self.dtype).to(device)
        if device.type == "cuda":
            self.kernel = "cuda_int4pack"
            c = codes.to(torch.uint8)
            packed = torch.ops.aten._convert_weight_to_int4pack((c[:, ::2] << 4) | c[:, 1::2], 8)
        else:
            self.kernel = "cpu_int4pack"
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("scales_and_zeros", sz, persistent=False)

    # ------------------------------------------------------------------------------------------------ computation
    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(..., in)`` -> ``(..., out)``, in ``x``'s dtype (computed in the module's dtype)."""
        dtype = self.dtype if self.kernel != "dequantized" else self.packed.dtype
        h = self._input(x, dtype)
        if self.kernel == "cpu_int4pack":
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(h, self.packed, self._kernel_group, self.scales_and_zeros)
        elif self.kernel == "cuda_int4pack":
            y = torch.ops.aten._weight_int4pack_mm(h, self.packed, self._kernel_group, self.scales_and_zeros)
        else:
            y = F.linear(h, self.packed)
        return self._output(y, x)

    def codes(self) -> Tensor:
        """The integer codes ``(out, in)`` uint8, read back from the kernel's layout (exact)."""
        if self.kernel == "dequantized":
            w = self.packed.float()
            rows = w.shape[0]
            g = w.reshape(rows, self.scale.shape[1], -1) / self.scale.unsqueeze(-1) + self.zero.unsqueeze(-1)
            return torch.round(g).clamp_(0, 15).to(torch.uint8).reshape(rows, -1)
        # the kernel with unit scales and zero offsets applied to the identity gives (q - 8) exactly
        groups = self.scales_and_zeros.shape[0]
        unit = torch.zeros_like(self.scales_and_zeros)
        unit[..., 0] = 1.0
        eye = torch.eye(self.in_features, dtype=self.scales_and_zeros.dtype, device=self.packed.device)
        op = torch.ops.aten._weight_int4pack_mm_for_cpu if self.kernel == "cpu_int4pack" else None
        op = op or torch.ops.aten._weight_int4pack_mm
        w = op(eye, self.packed, self.in_features // groups, unit)  # (in, out)
        return (w.float().T + 8).round_().to(torch.uint8)

    def dequantized_weight(self) -> Tensor:
        """The float32 weight ``(out, in)`` the module computes with (input scale applied)."""
        w = dequantize(self.codes(), self.scale.to(self.packed.device), self.zero.to(self.packed.device))
        if self.input_scale_inv is not None:
            w = w * self.input_scale_inv.float().unsqueeze(0)
        return w

    # ------------------------------------------------------------------------------------------------ state dict
    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "qweight"] = pack_int4(self.codes())
        destination[prefix + "scale"] = self.scale.clone()
        destination[prefix + "zero"] = self.zero.to(torch.uint8)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        local = {k: state_dict.pop(prefix + k) for k in ("qweight", "scale", "zero") if prefix + k in state_dict}
        super()._load_from_state_dict(state_dict, prefix, *args)
        missing = args[2] if len(args) > 2 else None
        if len(local) < 3:
            if isinstance(missing, list):
                missing.extend(prefix + k for k in ("qweight", "scale", "zero") if k not in local)
            return
        self.scale, self.zero = local["scale"].float(), local["zero"].float()
        self._set_codes(unpack_int4(local["qweight"]).to(self.scale.device))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits},"
                f" group_size={self.group_size}, kernel={self.kernel}, dtype={self.dtype}")  # fmt: skip


class Int8WeightOnlyLinear(_WeightOnly):
    """A Linear layer with int8 weights and one scale per output channel, run by ``_weight_int8pack_mm``.

    Args:
        in_features: Inputs.
        out_features: Outputs.
        bias: Whether the layer has a bias.
        dtype: Compute dtype (activations, scales).
        device: Device.

    Example:
        >>> layer = Int8WeightOnlyLinear.from_codes(torch.ones(4, 8, dtype=torch.int8), torch.full((4,), 0.5),
        ...                                         dtype=torch.float32)
        >>> layer(torch.ones(1, 8)).tolist()
        [[4.0, 4.0, 4.0, 4.0]]
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, dtype: torch.dtype = torch.bfloat16,
                 device: Any = "cpu") -> None:  # fmt: skip
        super().__init__()
        self.dtype = dtype
        self._init_common(in_features, out_features, torch.zeros(out_features) if bias else None, None, dtype, device)
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scale", torch.ones(out_features, dtype=dtype, device=device))

    @classmethod
    def from_codes(
        cls,
        weight_int8: Tensor,
        scale: Tensor,
        bias: Optional[Tensor] = None,
        input_scale: Optional[Tensor] = None,
        dtype: torch.dtype = torch.bfloat16,
    ) -> Int8WeightOnlyLinear:
        """From int8 codes ``(out, in)`` and per-channel scales ``(out,)``: ``w = q * scale``."""
        out_features, in_features = weight_int8.shape
        layer = cls(in_features, out_features, bias is not None, dtype, weight_int8.device)
        layer._init_common(in_features, out_features, bias, input_scale, dtype, weight_int8.device)
        layer.weight_int8 = weight_int8.to(torch.int8).contiguous()
        layer.scale = scale.detach().reshape(-1).to(dtype)
        return layer

    @classmethod
    def from_quantized(cls, linear: nn.Linear, q: QuantizedWeight, dtype: torch.dtype = torch.bfloat16):
        """From a Linear layer and its per-channel symmetric :class:`QuantizedWeight`."""
        if q.grid.group_size is not None or not q.grid.symmetric:
            raise ValueError("Int8WeightOnlyLinear takes per-channel symmetric grids (group_size=None, symmetric=True)")
        codes = q.codes().to(torch.int16) - q.zero.to(torch.int16)  # z = 2^(bits - 1): codes -2^(b-1)..2^(b-1)-1
        return cls.from_codes(codes.to(torch.int8), q.scale[:, 0], linear.bias, q.input_scale, dtype)

    @property
    def kernel(self) -> str:
        return "int8pack" if self.weight_int8.device.type == "cpu" else "dequantized"

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(..., in)`` -> ``(..., out)``."""
        h = self._input(x, self.scale.dtype)
        if self.kernel == "int8pack":
            y = torch.ops.aten._weight_int8pack_mm(h, self.weight_int8, self.scale)
        else:
            y = F.linear(h, self.weight_int8.to(h.dtype) * self.scale.unsqueeze(1))
        return self._output(y, x)

    def dequantized_weight(self) -> Tensor:
        """The float32 weight ``(out, in)``."""
        w = self.weight_int8.float() * self.scale.float().unsqueeze(1)
        if self.input_scale_inv is not None:
            w = w * self.input_scale_inv.float().unsqueeze(0)
        return w

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"


@torch.no_grad()
def to_weight_only_(model: nn.Module, result: Any, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Swap every layer that ``one_shot_quantize`` rounded for an INT4 (2-4 bits) or INT8 (5-8 bits) weight-only
    module, in place.

    A layer whose weight was tied to another (an output head tied to the embedding) is untied: the embedding keeps its
    float weight.

    Args:
        model: The model given to ``one_shot_quantize``.
        result: Its :class:`~lightning_compress.quantization.weight_only.quantize.QuantizationResult`.
        dtype: Compute dtype of the kernels: ``torch.bfloat16`` (the default; what the CPU INT4 kernel is fastest in)
            or ``torch.float32``.

    Returns:
        ``model``.

    Raises:
        ValueError: If a layer of ``result`` is no longer an ``nn.Linear`` of the recorded shape.

    Example:
        >>> model, result = one_shot_quantize(model, windows, bits=4, group_size=64)  # doctest: +SKIP
        >>> to_weight_only_(model, result)  # doctest: +SKIP
    """
    for fqn, q in result.layers.items():
        layer = model.get_submodule(fqn)
        if not isinstance(layer, nn.Linear) or tuple(layer.weight.shape) != tuple(q.weight.shape):
            raise ValueError(f"`{fqn}` is no longer the nn.Linear of shape {tuple(q.weight.shape)} that was quantized,"
                             f" got {type(layer).__name__}")  # fmt: skip
        kind = Int4WeightOnlyLinear if q.grid.bits <= 4 else Int8WeightOnlyLinear
        _replace(model, fqn, kind.from_quantized(layer, q, dtype))
    return model
