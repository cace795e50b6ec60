"""The masking core: explicit boolean masks applied in place to weights and their gradients.

A :class:`ParameterMasks` holds one bool mask (True = kept) per parameter, 1 byte per weight and no copy of any weight:
all masks on one device are views of one flat buffer, so that a mask update (a global magnitude threshold, say) can
write every mask with one operation. Gradients of pruned weights are zeroed before each optimizer step (a callback's
``on_before_optimizer_step``, which Lightning calls before gradient clipping) and the weights re-zeroed right after it
(an optimizer step post-hook, which fires once per real step of every optimizer, in automatic and manual
optimisation), so momentum, weight decay and Adam state never bring a pruned weight back. Several ``ParameterMasks``
on one weight apply one after the other: a logical AND.

The re-zeroing pass costs as much memory traffic as the gradient pass (``experiments/gmp_vs_modelpruning/README.md``
gives the cost on an MLP step). For the element-wise optimizers of ``torch.optim`` (SGD, Adam, AdamW, ...; exact types,
not subclasses) it is provably redundant once the optimizer state of the pruned positions is zero: with a zero weight, a
zero gradient and zero state their update is exactly zero (weight decay included). So, for those, the post-step hook
re-zeroes the weights *and* zeroes the per-element optimizer state of the pruned positions only on the first step after
:meth:`attach`, and does nothing on the other steps. After a mask change it is cheaper still: when the writer re-zeroes
the weights itself (:meth:`apply_to_weights` after :meth:`set_masks` / :meth:`mark_changed`, as every callback does
so that the step's forward pass sees them), that pass also zeroes the attached element-wise optimizers' state of the
pruned positions (each mask chunk cast once for the weight and its state tensors), and their next step keeps all of
it at zero: no post-step pass. Without that :meth:`apply_to_weights` the post-step hook does both after the next step.
Every other optimizer (and ``attach(..., always=True)``) gets the full re-zeroing after every step.

On CPU, ``weight.mul_(bool_mask)`` would allocate a float copy of the mask on every call (TensorIterator casts CPU
inputs through temporaries), and the bool -> float cast itself is several times slower than a uint8 -> float cast (the
measurements are in ``experiments/gmp_vs_modelpruning/README.md``); the masks are therefore applied in chunks: each
chunk of the mask, read as uint8, is cast into a scratch buffer (at most 2 MiB per dtype, kept between calls, so the
steps allocate nothing) and multiplied in. On other devices the kernels cast on the fly and one ``torch._foreach_mul_``
does it all.

Weights sharded across ranks (FSDP2 ``DTensor`` s, :mod:`~lightning_compress.core.sharding`) get one mask per local
shard (``masks`` have the local shapes), applied to the local shards of the weights, gradients and optimizer state in
the same passes; nothing whole is ever materialised. Counts (:meth:`ParameterMasks.num_pruned`, :meth:`sparsity`) are
of the whole tensors: they are summed over the shards when the masks change, so that :meth:`set_masks`,
:meth:`mark_changed`, :meth:`state_dict` and :meth:`load_state_dict` are collectives there (every rank calls them). A
state dict holds the whole masks, packed, on the first rank of the shards' group (the one Lightning saves), so it loads
into any sharding, or none.

Example:
    >>> lin = torch.nn.Linear(4, 2)
    >>> masks = ParameterMasks({"weight": lin.weight})
    >>> masks.set_masks({"weight": lin.weight.abs() > 0.2})
    >>> masks.apply_to_weights()
    >>> bool((lin.weight[~masks["weight"]] == 0).all())
    True
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from lightning_compress.core.bit_packing import pack_mask, unpack_mask, unpack_mask_range
from lightning_compress.core.distributed import gather_packed_masks
from lightning_compress.core.sharding import ShardLayout, all_reduce_, common_group, local_tensor, shard_layouts

__all__ = ["ParameterMasks", "masked_mul_", "pack_mask", "torch_optimizer", "unpack_mask"]

_CHUNK = 1 << 19  # elements per CPU chunk: a 2 MiB fp32 scratch buffer (experiments/gmp_vs_modelpruning/mask_cost.py)


class ParameterMasks:
    """Bool masks for named parameters, applied in place to the weights and their gradients.

    Args:
        params: Named parameters to mask, in a fixed order (the order of the foreach lists and of tie-breaking);
            plain tensors, or FSDP2 ``DTensor`` shards (see the module docstring).
        masks: Optional initial masks by name (bool, the local shapes); all True when left out.
        who: What holds the masks (a callback's name), for the messages about sharded weights.

    Raises:
        TypeError: If ``params`` is not a mapping of names to tensors (a list of parameters has no names).
        ValueError: If ``params`` is empty, a parameter is on the ``meta`` device or sharded in a way masks cannot
            follow (:func:`~lightning_compress.core.sharding.shard_layouts`), or a mask does not match its parameter.

    Example:
        >>> net = torch.nn.Linear(3, 1, bias=False)
        >>> masks = ParameterMasks({"weight": net.weight})
        >>> handles = masks.attach([torch.optim.SGD(net.parameters(), lr=0.1)])
        >>> masks.sparsity()
        0.0
        >>> masks.detach()
    """

    def __init__(
        self, params: Mapping[str, nn.Parameter], masks: Optional[Mapping[str, Tensor]] = None, who: str = "masking"
    ) -> None:
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
        self._layouts: list[ShardLayout] = shard_layouts(params, who)
        self.group: Any = common_group(self._layouts, who)  # the shards' process group; None when not sharded
        locals_ = [local_tensor(p) for p in self._params]
        self._buffers: dict[torch.device, Tensor] = {}
        self._offsets: list[int] = []
        sizes: dict[torch.device, int] = {}
        for t in locals_:
            self._offsets.append(sizes.get(t.device, 0))
            sizes[t.device] = self._offsets[-1] + t.numel()
        for device, size in sizes.items():
            self._buffers[device] = torch.ones(size, dtype=torch.bool, device=device)
        self._masks: list[Tensor] = [
            self._buffers[t.device].narrow(0, off, t.numel()).view(t.shape) for t, off in zip(locals_, self._offsets)
        ]
        self._flat: list[Tensor] = [m.view(-1).view(torch.uint8) for m in self._masks]  # views, for the CPU path
        self._scratch: dict[torch.dtype, Tensor] = {}  # CPU chunk buffers, kept between calls
        self._handles: list[RemovableHandle] = []
        self._subsets: dict[int, tuple[tuple[int, ...], list[int]]] = {}
        self._has_pruned: list[bool] = [False] * len(self._params)  # of the local shard
        self._pruned: list[int] = [0] * len(self._params)  # pruned positions of the whole tensor
        self._always: set[int] = set()  # ids of optimizers re-zeroed after every step
        self._dirty: set[int] = set()  # ids of optimizers to re-zero (and clear state for) after their next step
        self._changed: set[int] = set()  # the same, after a mask change: until the weights are re-zeroed
        self._elementwise: dict[int, weakref.ref] = {}  # the attached element-wise optimizers, by id
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
        """The masked parameters, in order (``DTensor`` s when sharded)."""
        return list(self._params)

    @property
    def local_params(self) -> list[Tensor]:
        """The parts of the parameters this rank holds, in order: the parameters themselves unless sharded, else their
        local shards (no copies; in-place changes reach the parameters)."""
        if self.group is None:
            return list(self._params)
        return [local_tensor(p) for p in self._params]

    @property
    def masks(self) -> list[Tensor]:
        """The bool masks, in order (the live tensors, of the local shapes)."""
        return list(self._masks)

    @property
    def layouts(self) -> list[ShardLayout]:
        """Where each local shard sits in its whole parameter."""
        return list(self._layouts)

    def flat_buffer(self) -> Optional[tuple[Tensor, list[int]]]:
        """The one flat bool buffer every mask is a view of, and each mask's offset in it, when all are on one device
        (None otherwise). Writing into it changes the masks; call :meth:`mark_changed` afterwards."""
        if len(self._buffers) != 1:
            return None
        return next(iter(self._buffers.values())), list(self._offsets)

    def set_masks(self, masks: Union[Mapping[str, Tensor], Sequence[Tensor]]) -> None:
        """Overwrite masks in place (by name, or a sequence in order); weights are not touched until the next apply.
        A collective when the parameters are sharded.

        Raises:
            KeyError: If a name is not masked here.
            ValueError: If a mask is not a bool tensor of its parameter's (local) shape.
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

    def mark_changed(self, counts: Optional[Sequence[int]] = None) -> None:
        """After the masks were written in place (through :meth:`flat_buffer`): recount them and re-zero the weights'
        optimizer state after the next steps. A collective when the parameters are sharded.

        Args:
            counts: The local pruned count of each mask, when the writer knows them (saves a pass).
        """
        self._mark_dirty(counts)

    # --------------------------------------------------------------------------------------------------- apply
    @torch.no_grad()
    def apply_to_weights(self, optimizer: Optional[Optimizer] = None) -> None:
        """Zero the pruned weights in place (of ``optimizer``'s parameters only, when given)."""
        active = self._active(optimizer)
        # Re-zeroing after a mask change: the element-wise optimizers' state of the pruned positions is cleared in the
        # same pass (each mask chunk cast once for the weight and its state), so that their next step keeps all of
        # it at zero and needs no post-step pass
        done = self._changed if optimizer is None else self._changed & {id(torch_optimizer(optimizer))}
        state: dict[int, list[Tensor]] = {}
        for key in done:
            ref = self._elementwise.get(key)
            opt = ref() if ref is not None else None
            if opt is not None:
                for i, tensors in self._state_tensors(opt).items():
                    state.setdefault(i, []).extend(tensors)
        self._changed.difference_update(done)
        if not active:
            return
        params = self._params if self.group is None else self.local_params
        tensors, masks, flats = [], [], []
        for i in active:
            for t in (params[i], *state.get(i, ())):
                tensors.append(t)
                masks.append(self._masks[i])
                flats.append(self._flat[i])
        masked_mul_(tensors, masks, flats, self._scratch)

    @torch.no_grad()
    def apply_to_grads(self, optimizer: Optional[Optimizer] = None) -> None:
        """Zero the gradients of pruned weights in place (of ``optimizer``'s parameters only, when given)."""
        active = self._active(optimizer)
        params = self._params
        keep = [i for i in active if params[i].grad is not None]
        if not keep:
            return
        if self.group is None:
            grads = [params[i].grad for i in keep]
        else:
            grads = [local_tensor(params[i].grad) for i in keep]  # type: ignore[arg-type]
        masked_mul_(grads, [self._masks[i] for i in keep], [self._flat[i] for i in keep], self._scratch)  # type: ignore[arg-type]

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
            else:
                self._elementwise[id(optimizer)] = weakref.ref(optimizer)
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
        self._changed.clear()
        self._elementwise.clear()

    @torch.no_grad()
    def zero_optimizer_state(self, optimizer: Optimizer) -> None:
        """Zero the per-element optimizer state (momentum, Adam moments, ...) of the pruned positions.

        Every state tensor of a masked parameter's shape is multiplied by the mask (its local shard when sharded);
        scalars (``step``) are left alone.
        """
        tensors, masks, flats = [], [], []
        for i, values in self._state_tensors(torch_optimizer(optimizer)).items():
            for value in values:
                tensors.append(value)
                masks.append(self._masks[i])
                flats.append(self._flat[i])
        masked_mul_(tensors, masks, flats, self._scratch)

    def _state_tensors(self, optimizer: Optimizer) -> dict[int, list[Tensor]]:
        """The floating state tensors of the mask's (local) shape, of each masked parameter ``optimizer`` updates."""
        out: dict[int, list[Tensor]] = {}
        for i in self._active(optimizer):
            p, m = self._params[i], self._masks[i]
            for value in optimizer.state.get(p, {}).values():
                if not isinstance(value, Tensor) or value.shape != p.shape:
                    continue
                value = local_tensor(value)
                if value.shape == m.shape and value.is_floating_point():
                    out.setdefault(i, []).append(value)
        return out

    def _post_step_hook(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        key = id(optimizer)
        if key in self._always:
            self.apply_to_weights(optimizer)
        elif key in self._dirty or key in self._changed:
            self._dirty.discard(key)
            self._changed.discard(key)
            self.apply_to_weights(optimizer)
            self.zero_optimizer_state(optimizer)

    def _mark_dirty(self, counts: Optional[Sequence[int]] = None) -> None:
        """Masks changed: count their pruned positions (summed over the shards), note which local masks have one, and
        re-zero (and clear state) after the next steps."""
        if counts is None:
            counts = [int(m.numel() - m.count_nonzero()) for m in self._masks]
        self._has_pruned = [c > 0 for c in counts]
        if self.group is not None:
            device = self._masks[0].device
            counts = all_reduce_(torch.tensor(list(counts), dtype=torch.int64, device=device), self.group).tolist()
        self._pruned = list(counts)
        self._changed.update(self._subsets)

    def _active(self, optimizer: Optional[Optimizer]) -> list[int]:
        """Indices of ``optimizer``'s parameters (all when None) whose local mask prunes something; an all-True mask
        changes nothing and is skipped."""
        indices = range(len(self._params)) if optimizer is None else self._subset(torch_optimizer(optimizer))[1]
        has = self._has_pruned
        return [i for i in indices if has[i]]

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
        """Pruned (False) positions per parameter name, of the whole tensors (all shards)."""
        return dict(zip(self._names, self._pruned))

    def sparsity(self) -> float:
        """Fraction of all masked weights that are pruned."""
        total = sum(layout.global_numel for layout in self._layouts)
        return sum(self._pruned) / total if total else 0.0

    def layer_sparsity(self) -> dict[str, float]:
        """Fraction pruned, per parameter name."""
        return {
            n: c / layout.global_numel if layout.global_numel else 0.0
            for n, c, layout in zip(self._names, self._pruned, self._layouts)
        }

    # ---------------------------------------------------------------------------------------------- state dict
    def state_dict(self) -> dict[str, Any]:
        """Packed masks (1 bit per weight) and their shapes, by name: the whole masks (a collective when sharded:
        gathered to the first rank of the shards' group; the other ranks get no ``masks``)."""
        shapes = {n: list(layout.global_shape) for n, layout in zip(self._names, self._layouts)}
        if self.group is None:
            return {"masks": {n: pack_mask(m).cpu() for n, m in zip(self._names, self._masks)}, "shapes": shapes}
        packed = gather_packed_masks(self._masks, self._layouts, self.group)
        return {"masks": dict(zip(self._names, packed)) if packed is not None else {}, "shapes": shapes}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Restore masks saved by :meth:`state_dict` (each shard takes its rows of the whole masks; a collective when
        sharded).

        Raises:
            KeyError: If ``strict`` and the saved names differ from the masked ones.
            ValueError: If a saved shape differs from its parameter's, or a packed mask has another size.
        """
        packed, shapes = state_dict.get("masks", {}), state_dict.get("shapes", {})
        if strict and set(packed) != set(self._names):
            raise KeyError(f"saved masks are for {sorted(packed)}, but this ParameterMasks masks {sorted(self._names)}")
        for name, mask, layout in zip(self._names, self._masks, self._layouts):
            if name not in packed:
                continue
            shape = torch.Size(shapes.get(name, layout.global_shape))
            if shape != layout.global_shape:
                raise ValueError(
                    f"saved mask for {name!r} has shape {tuple(shape)}, the parameter {tuple(layout.global_shape)}"
                )
            if not layout.sharded:
                mask.copy_(unpack_mask(packed[name].to(mask.device), shape))
                continue
            if packed[name].numel() != (shape.numel() + 7) // 8:
                raise ValueError(
                    f"saved mask for {name!r} has {packed[name].numel()} bytes, not {(shape.numel() + 7) // 8}"
                )
            start = layout.flat_start
            mask.view(-1).copy_(unpack_mask_range(packed[name], start, start + mask.numel()).to(mask.device))
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


def masked_mul_(
    tensors: Sequence[Tensor],
    masks: Sequence[Tensor],
    flat_masks: Optional[Sequence[Tensor]] = None,
    scratch: Optional[dict[torch.dtype, Tensor]] = None,
) -> None:
    """``t *= mask`` for every pair, in place, without allocating a float copy of any mask.

    Args:
        tensors: Weights, gradients, optimizer state (or integer keys), one device.
        masks: Bool masks of the same shapes, contiguous.
        flat_masks: Optional 1-D uint8 views of ``masks`` (saves two view calls per tensor on every step).
        scratch: CPU chunk buffers by dtype, reused and grown as needed (new ones per call when None).

    Example:
        >>> t = torch.tensor([1.0, 2.0, 3.0])
        >>> masked_mul_([t], [torch.tensor([True, False, True])])
        >>> t
        tensor([1., 0., 3.])
    """
    if not tensors:
        return
    if tensors[0].device.type != "cpu":
        torch._foreach_mul_(list(tensors), list(masks))  # device kernels cast the bool operand on the fly
        return
    if flat_masks is None:
        flat_masks = [m.view(-1).view(torch.uint8) for m in masks]  # uint8 -> float casts fast; bool -> float does not
    size = min(max(t.numel() for t in tensors), _CHUNK)
    if scratch is None:
        scratch = {}
    i = 0
    while i < len(tensors):
        t, m, mflat = tensors[i], masks[i], flat_masks[i]
        if not t.is_contiguous():
            t.mul_(m)
            i += 1
            continue
        j = i + 1  # the following tensors on the same mask and of the same dtype share each cast chunk
        while j < len(tensors) and masks[j] is m and tensors[j].dtype == t.dtype and tensors[j].is_contiguous():
            j += 1
        group = tensors[i:j]
        i = j
        buf = scratch.get(t.dtype)
        if buf is None or buf.numel() < size:
            buf = scratch[t.dtype] = torch.empty(size, dtype=t.dtype)
        n = t.numel()
        if n <= buf.numel():  # one chunk: the common case, three dispatcher calls and one per tensor
            chunk = buf if n == buf.numel() else buf[:n]
            chunk.copy_(mflat)
            for u in group:
                u.view(-1).mul_(chunk)
            continue
        step = buf.numel()  # the chunk views made by one split per tensor, in C++, not one slice per chunk in Python
        parts = [u.view(-1).split(step) for u in group]
        for c, mchunk in enumerate(mflat.split(step)):
            chunk = buf if mchunk.numel() == step else buf[: mchunk.numel()]
            chunk.copy_(mchunk)
            for part in parts:
                part[c].mul_(chunk)
