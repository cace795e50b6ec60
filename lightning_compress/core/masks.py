"""The masking core: explicit boolean masks applied in place to weights and their gradients.

A :class:`ParameterMasks` holds one bool mask (True = kept) per parameter, 1 byte per weight and no copy of any weight.
Gradients of pruned weights are zeroed before each optimizer step (a callback's ``on_before_optimizer_step``, which
Lightning calls before gradient clipping) and the weights re-zeroed right after it (an optimizer step post-hook, which
fires once per real step of every optimizer, in automatic and manual optimisation), so momentum, weight decay and Adam
state never bring a pruned weight back. Several ``ParameterMasks`` on one weight apply one after the other: a logical
AND.

The re-zeroing pass costs as much memory traffic as the gradient pass (``experiments/gmp_vs_modelpruning/README.md``
gives the cost on an MLP step). For the element-wise optimizers of ``torch.optim`` (SGD, Adam, AdamW, ...; exact types,
not subclasses) it is provably redundant once the optimizer state of the pruned positions is zero: with a zero weight, a
zero gradient and zero state their update is exactly zero (weight decay included). So, for those, the post-step hook
re-zeroes the weights *and* zeroes the per-element optimizer state of the pruned positions only on the first step after
:meth:`attach` and after each mask change, and does nothing on the other steps; every other optimizer (and
``attach(..., always=True)``) gets the full re-zeroing after every step.

On CPU, ``weight.mul_(bool_mask)`` would allocate a float copy of the mask on every call (TensorIterator casts CPU
inputs through temporaries), and the bool -> float cast itself is several times slower than a uint8 -> float cast (the
measurements are in ``experiments/gmp_vs_modelpruning/README.md``); the masks are therefore applied in chunks: each
chunk of the mask, read as uint8, is cast into a small scratch buffer (at most 2 MiB, allocated per call) and multiplied
in. On other devices the kernels cast on the fly and one ``torch._foreach_mul_`` does it all.

Example:
    >>> lin = torch.nn.Linear(4, 2)
    >>> masks = ParameterMasks({"weight": lin.weight})
    >>> masks.set_masks({"weight": lin.weight.abs() > 0.2})
    >>> masks.apply_to_weights()
    >>> bool((lin.weight[~masks["weight"]] == 0).all())
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

__all__ = ["ParameterMasks", "pack_mask", "torch_optimizer", "unpack_mask"]

_CHUNK = 1 << 19  # elements per CPU chunk: a 2 MiB fp32 scratch buffer (see experiments/gmp_vs_modelpruning)
_SHIFTS = tuple(range(8))


def pack_mask(mask: Tensor) -> Tensor:
    """Pack a bool mask into bits, 8 per byte, little-endian within a byte (like ``numpy.packbits(bitorder="little")``).

    Args:
        mask: A bool tensor of any shape, ``numel`` elements.

    Returns:
        A uint8 tensor of shape ``(ceil(numel / 8),)`` on ``mask``'s device.

    Raises:
        TypeError: If ``mask`` is not a bool tensor.

    Example:
        >>> pack_mask(torch.tensor([True, False, True, True, False, False, False, False, True]))
        tensor([13,  1], dtype=torch.uint8)
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"`mask` must be a bool tensor, got a {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"`mask` must be a bool tensor, got {mask.dtype}")
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    bits = flat.view(-1, 8)
    packed = bits[:, 0].clone()
    for i in _SHIFTS[1:]:
        packed |= bits[:, i] << i
    return packed


def unpack_mask(packed: Tensor, shape: Union[torch.Size, Sequence[int]]) -> Tensor:
    """Inverse of :func:`pack_mask`.

    Args:
        packed: uint8 tensor of shape ``(ceil(numel / 8),)``.
        shape: The shape of the mask, ``numel`` elements.

    Returns:
        A bool tensor of ``shape`` on ``packed``'s device.

    Raises:
        ValueError: If ``packed`` is not uint8 or its size does not fit ``shape``.

    Example:
        >>> unpack_mask(torch.tensor([13, 1], dtype=torch.uint8), (9,)).int().tolist()
        [1, 0, 1, 1, 0, 0, 0, 0, 1]
    """
    shape = torch.Size(shape)
    numel = shape.numel()
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (numel + 7) // 8:
        raise ValueError(
            f"`packed` must be a 1-D uint8 tensor of {(numel + 7) // 8} bytes for shape {tuple(shape)},"
            f" got {packed.dtype} of shape {tuple(packed.shape)}"
        )
    shifts = torch.tensor(_SHIFTS, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(1) >> shifts) & 1
    return bits.reshape(-1)[:numel].to(torch.bool).view(shape)


class ParameterMasks:
    """Bool masks for named parameters, applied in place to the weights and their gradients.

    Args:
        params: Named parameters to mask, in a fixed order (the order of the foreach lists and of tie-breaking).
        masks: Optional initial masks by name (bool, same shapes); all True when left out.

    Raises:
        TypeError: If ``params`` is not a mapping of names to tensors (a list of parameters has no names).
        ValueError: If ``params`` is empty, a parameter is on the ``meta`` device, or a mask does not match its
            parameter.

    Example:
        >>> net = torch.nn.Linear(3, 1, bias=False)
        >>> masks = ParameterMasks({"weight": net.weight})
        >>> handles = masks.attach([torch.optim.SGD(net.parameters(), lr=0.1)])
        >>> masks.sparsity()
        0.0
        >>> masks.detach()
    """

    def __init__(self, params: Mapping[str, nn.Parameter], masks: Optional[Mapping[str, Tensor]] = None) -> None:
        if not isinstance(params, Mapping):
            raise TypeError(
                f"`params` must map names to parameters (e.g. dict(model.named_parameters()) or"
                f" prunable_weights(model)), got a {type(params).__name__}"
            )
        if len(params) == 0:
            raise ValueError("`params` must hold at least one parameter, got none")
        odd = [f"{n!r} ({type(p).__name__})" for n, p in params.items() if not isinstance(p, Tensor)]
        if odd:
            raise TypeError(f"`params` must map names to parameters; these are not tensors: {', '.join(odd)}")
        meta = [n for n, p in params.items() if p.device.type == "meta"]
        if meta:
            raise ValueError(
                f"`params` holds parameters on the meta device (shapes without values): {', '.join(meta)}; load the"
                " model's weights first (e.g. `model.to_empty(device='cpu')` then `load_state_dict`)"
            )
        self._names: list[str] = list(params)
        self._params: list[nn.Parameter] = [params[n] for n in self._names]
        self._masks: list[Tensor] = [torch.ones(p.shape, dtype=torch.bool, device=p.device) for p in self._params]
        self._flat: list[Tensor] = [m.view(-1).view(torch.uint8) for m in self._masks]  # views, for the CPU path
        self._handles: list[RemovableHandle] = []
        self._subsets: dict[int, tuple[tuple[int, ...], list[int]]] = {}
        self._has_pruned: list[bool] = [False] * len(self._params)
        self._always: set[int] = set()  # ids of optimizers re-zeroed after every step
        self._dirty: set[int] = set()  # ids of optimizers to re-zero (and clear state for) after their next step
        if masks is not None:
            self.set_masks(masks)

    # ----------------------------------------------------------------------------------------------- container
    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __getitem__(self, name: str) -> Tensor:
        """The bool mask (True = kept) of parameter ``name``: the live tensor; change it only with :meth:`set_masks`."""
        return self._masks[self._names.index(name)]

    @property
    def names(self) -> list[str]:
        """Parameter names, in order."""
        return list(self._names)

    @property
    def params(self) -> list[nn.Parameter]:
        """The masked parameters, in order."""
        return list(self._params)

    @property
    def masks(self) -> list[Tensor]:
        """The bool masks, in order (the live tensors)."""
        return list(self._masks)

    def set_masks(self, masks: Union[Mapping[str, Tensor], Sequence[Tensor]]) -> None:
        """Overwrite masks in place (by name, or a sequence in order); weights are not touched until the next apply.

        Raises:
            KeyError: If a name is not masked here.
            ValueError: If a mask is not a bool tensor of its parameter's shape.
        """
        items = masks.items() if isinstance(masks, Mapping) else zip(self._names, masks)
        for name, mask in items:
            if name not in self._names:
                raise KeyError(f"`masks` names a parameter that is not masked here: {name!r}; masked: {self._names}")
            target = self._masks[self._names.index(name)]
            if not isinstance(mask, Tensor):
                raise ValueError(f"mask for {name!r} must be a bool tensor, got a {type(mask).__name__}")
            if mask.dtype != torch.bool or mask.shape != target.shape:
                raise ValueError(
                    f"mask for {name!r} must be a bool tensor of shape {tuple(target.shape)},"
                    f" got {mask.dtype} {tuple(mask.shape)}"
                )
            target.copy_(mask)
        self._mark_dirty()

    # --------------------------------------------------------------------------------------------------- apply
    @torch.no_grad()
    def apply_to_weights(self, optimizer: Optional[Optimizer] = None) -> None:
        """Zero the pruned weights in place (of ``optimizer``'s parameters only, when given)."""
        params, masks, flat = self._select(optimizer)
        _masked_mul_(params, masks, flat)

    @torch.no_grad()
    def apply_to_grads(self, optimizer: Optional[Optimizer] = None) -> None:
        """Zero the gradients of pruned weights in place (of ``optimizer``'s parameters only, when given)."""
        params, masks, flat = self._select(optimizer)
        if all(p.grad is not None for p in params):
            _masked_mul_([p.grad for p in params], masks, flat)  # type: ignore[misc]
            return
        keep = [i for i, p in enumerate(params) if p.grad is not None]
        grads = [params[i].grad for i in keep]
        _masked_mul_(grads, [masks[i] for i in keep], [flat[i] for i in keep])  # type: ignore[arg-type]

    # --------------------------------------------------------------------------------------------------- hooks
    def attach(self, optimizers: Iterable[Optimizer], always: bool = False) -> list[RemovableHandle]:
        """Keep pruned weights at zero across the steps of each optimizer (a ``register_step_post_hook``).

        Args:
            optimizers: Torch optimizers (or Lightning's wrappers of them).
            always: Re-zero after every step even for the element-wise ``torch.optim`` optimizers, for which it is
                redundant (see the module docstring); use it when something other than the optimizer writes weights.

        Returns:
            The hook handles (also kept; :meth:`detach` removes them).
        """
        handles = []
        for optimizer in optimizers:
            optimizer = torch_optimizer(optimizer)
            self._subset(optimizer)
            if always or type(optimizer) not in _ELEMENTWISE_OPTIMIZERS:
                self._always.add(id(optimizer))
            self._dirty.add(id(optimizer))
            handles.append(optimizer.register_step_post_hook(self._post_step_hook))
        self._handles.extend(handles)
        return handles

    def detach(self) -> None:
        """Remove every optimizer hook added by :meth:`attach`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._subsets.clear()
        self._always.clear()
        self._dirty.clear()

    @torch.no_grad()
    def zero_optimizer_state(self, optimizer: Optimizer) -> None:
        """Zero the per-element optimizer state (momentum, Adam moments, ...) of the pruned positions.

        Every state tensor of a masked parameter's shape is multiplied by the mask; scalars (``step``) are left alone.
        """
        optimizer = torch_optimizer(optimizer)
        params, masks, flat = self._select(optimizer)
        triples = [
            (value, m, f)
            for p, m, f in zip(params, masks, flat)
            for value in optimizer.state.get(p, {}).values()
            if isinstance(value, Tensor) and value.shape == m.shape and value.is_floating_point()
        ]
        _masked_mul_([v for v, _, _ in triples], [m for _, m, _ in triples], [f for _, _, f in triples])

    def _post_step_hook(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        key = id(optimizer)
        if key in self._always:
            self.apply_to_weights(optimizer)
        elif key in self._dirty:
            self.apply_to_weights(optimizer)
            self.zero_optimizer_state(optimizer)
            self._dirty.discard(key)

    def _mark_dirty(self) -> None:
        """Masks changed: note which have a pruned position, and re-zero (and clear state) after the next steps."""
        self._has_pruned = [not bool(m.all()) for m in self._masks]
        self._dirty.update(self._subsets)

    def _select(self, optimizer: Optional[Optimizer]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """The parameter, mask and flat-mask lists to work on: ``optimizer``'s parameters (all when None) that have a
        pruned position; an all-True mask changes nothing and is skipped."""
        indices = range(len(self._params)) if optimizer is None else self._subset(torch_optimizer(optimizer))[1]
        active = [i for i in indices if self._has_pruned[i]]
        return [self._params[i] for i in active], [self._masks[i] for i in active], [self._flat[i] for i in active]

    def _subset(self, optimizer: Optimizer) -> tuple[tuple[int, ...], list[int]]:
        """Indices of the masked parameters that ``optimizer`` updates, cached until its parameter groups change."""
        signature = tuple(len(g["params"]) for g in optimizer.param_groups)
        cached = self._subsets.get(id(optimizer))
        if cached is None or cached[0] != signature:
            ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
            cached = (signature, [i for i, p in enumerate(self._params) if id(p) in ids])
            self._subsets[id(optimizer)] = cached
        return cached

    # ------------------------------------------------------------------------------------------------ sparsity
    def num_pruned(self) -> dict[str, int]:
        """Pruned (False) positions per parameter name."""
        return {n: int(m.numel() - m.count_nonzero()) for n, m in zip(self._names, self._masks)}

    def sparsity(self) -> float:
        """Fraction of all masked weights that are pruned."""
        total = sum(m.numel() for m in self._masks)
        return sum(self.num_pruned().values()) / total

    def layer_sparsity(self) -> dict[str, float]:
        """Fraction pruned, per parameter name."""
        return {n: c / m.numel() for (n, c), m in zip(self.num_pruned().items(), self._masks)}

    # ---------------------------------------------------------------------------------------------- state dict
    def state_dict(self) -> dict[str, Any]:
        """Packed masks (1 bit per weight) and their shapes, by name."""
        return {
            "masks": {n: pack_mask(m).cpu() for n, m in zip(self._names, self._masks)},
            "shapes": {n: list(m.shape) for n, m in zip(self._names, self._masks)},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Restore masks saved by :meth:`state_dict`.

        Raises:
            KeyError: If ``strict`` and the saved names differ from the masked ones.
            ValueError: If a saved shape differs from its parameter's.
        """
        packed, shapes = state_dict.get("masks", {}), state_dict.get("shapes", {})
        if strict and set(packed) != set(self._names):
            raise KeyError(f"saved masks are for {sorted(packed)}, but this ParameterMasks masks {sorted(self._names)}")
        for name, mask in zip(self._names, self._masks):
            if name not in packed:
                continue
            shape = torch.Size(shapes.get(name, mask.shape))
            if shape != mask.shape:
                raise ValueError(f"saved mask for {name!r} has shape {tuple(shape)}, the parameter {tuple(mask.shape)}")
            mask.copy_(unpack_mask(packed[name].to(mask.device), shape))
        self._mark_dirty()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} parameters, sparsity={self.sparsity():.4f})"


# torch.optim optimizers whose update of one element depends only on that element's weight, gradient and state, and is
# exactly zero when all three are zero.
_ELEMENTWISE_OPTIMIZERS = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.Adagrad,
    torch.optim.RMSprop,
)


def torch_optimizer(optimizer: Any) -> Optimizer:
    """The torch optimizer inside a ``LightningOptimizer`` (or the optimizer itself)."""
    return getattr(optimizer, "_optimizer", optimizer)


def _masked_mul_(
    tensors: Sequence[Tensor], masks: Sequence[Tensor], flat_masks: Optional[Sequence[Tensor]] = None
) -> None:
    """``t *= mask`` for every pair, in place, without allocating a float copy of any mask.

    Args:
        tensors: Weights, gradients or optimizer state, one device.
        masks: Bool masks of the same shapes, contiguous.
        flat_masks: Optional 1-D uint8 views of ``masks`` (saves two view calls per tensor on every step).
    """
    if not tensors:
        return
    if tensors[0].device.type != "cpu":
        torch._foreach_mul_(list(tensors), list(masks))  # device kernels cast the bool operand on the fly
        return
    if flat_masks is None:
        flat_masks = [m.view(-1).view(torch.uint8) for m in masks]  # uint8 -> float casts fast; bool -> float does not
    size = min(max(t.numel() for t in tensors), _CHUNK)
    scratch: dict[torch.dtype, Tensor] = {}
    for t, m, mflat in zip(tensors, masks, flat_masks):
        if not t.is_contiguous():
            t.mul_(m)
            continue
        buf = scratch.get(t.dtype)
        if buf is None:
            buf = scratch[t.dtype] = torch.empty(size, dtype=t.dtype)
        n = t.numel()
        if n <= size:  # one chunk: the common case, four dispatcher calls
            chunk = buf if n == size else buf[:n]
            chunk.copy_(mflat)
            t.view(-1).mul_(chunk)
            continue
        flat = t.view(-1)
        for start in range(0, n, size):
            stop = min(n, start + size)
            chunk = buf[: stop - start]
            chunk.copy_(mflat[start:stop])
            flat[start:stop].mul_(chunk)
