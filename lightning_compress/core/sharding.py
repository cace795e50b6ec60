"""Weights sharded across ranks (FSDP2's ``fully_shard``, as Lightning's ``ModelParallelStrategy`` applies it): the
local shard of a parameter, where it sits in the whole tensor, and the checks that a compression callback's
assumptions about the sharding hold.

FSDP2 turns every parameter into a ``DTensor`` whose placements are ``Shard(0)`` on its mesh: rank ``i`` of the ``s``
shards holds the contiguous rows ``[i * ceil(rows / s), ...)`` of dimension 0 (the last ranks may hold fewer rows, or
none). The masks of a sharded weight are held for its local shard only (:func:`local_tensor`, no copy), and every
computation that needs the whole tensor (a global magnitude threshold, the count of pruned weights, a checkpoint)
combines the shards with collectives over the group of the sharded mesh dimension (:attr:`ShardLayout.group`).

What is handled: plain tensors (replicated, as under DDP), and ``DTensor`` s sharded along dimension 0 on one mesh
dimension and replicated on any others (FSDP2, and HSDP). What is refused, with the parameter and its placements in
the message (:func:`shard_layout`): a dimension other than 0 sharded (tensor parallelism's row-wise layers; N:M groups
and rows would straddle ranks), dimension 0 sharded over two mesh dimensions (FSDP2 over tensor parallelism),
``Partial`` placements, and a module whose selected weights are partly sharded and partly not.

Which callback works under which sharded strategy is decided in one place, :data:`SHARDED_SUPPORT` (by class name,
inherited by subclasses), and :func:`check_sharding` applies it in every callback's ``setup`` (before
``configure_model`` shards anything): under FSDP2 (``ModelParallelStrategy``) the masking callbacks
(``GradualMagnitudePruning``, ``NMSparsity``) and ``DistillationModule`` work; the callbacks that need whole weights or
the whole network (``OneShotPruning``, ``QuantizationAwareTraining``, ``PostTrainingQuantization``,
``OneShotQuantization``, ``ExportCallback``, ``CompressionPlanner``) refuse every sharded strategy and name DDP (or the
consolidated checkpoint); the masking callbacks refuse FSDP1 (``FSDPStrategy``) and DeepSpeed; and every one of them
refuses a ``ModelParallelStrategy`` mesh with a tensor-parallel dimension larger than 1.

Example:
    >>> w = torch.ones(4, 3)
    >>> local_tensor(w) is w, shard_layout("w", w).shards
    (True, 1)
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = [
    "SHARDED_STRATEGIES",
    "SHARDED_SUPPORT",
    "ShardLayout",
    "ShardedSupport",
    "all_reduce_",
    "check_sharding",
    "common_group",
    "is_dtensor",
    "local_tensor",
    "shard_layout",
    "shard_layouts",
    "sharded_strategy",
    "sharded_support",
    "tensor_parallel_size",
]

# Lightning strategies that shard parameters, by class name (matched along the strategy's MRO, so that DeepSpeed is
# never imported to check it).
SHARDED_STRATEGIES = ("ModelParallelStrategy", "FSDPStrategy", "DeepSpeedStrategy")


def _dtensor_class() -> Optional[type]:
    """``DTensor``, if its module is loaded: no tensor can be a ``DTensor`` before it is, and importing it costs."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None) if module is not None else None


def is_dtensor(tensor: Any) -> bool:
    """Whether ``tensor`` is a ``torch.distributed.tensor.DTensor`` (an FSDP2 parameter, say).

    Example:
        >>> is_dtensor(torch.ones(2))
        False
    """
    cls = _dtensor_class()
    return cls is not None and isinstance(tensor, cls)


def local_tensor(tensor: Tensor) -> Tensor:
    """The part of ``tensor`` this rank holds: a ``DTensor``'s local shard (the same storage, no copy), else
    ``tensor`` itself.

    Example:
        >>> w = torch.ones(2)
        >>> local_tensor(w) is w
        True
    """
    if not is_dtensor(tensor):
        return tensor
    local = getattr(tensor, "_local_tensor", None)
    if local is None:  # a later DTensor without the attribute: the public view (an autograd op, hence no_grad)
        with torch.no_grad():
            local = tensor.to_local()
    return local


@dataclass(frozen=True)
class ShardLayout:
    """Where this rank's part of a parameter sits in the whole tensor.

    Attributes:
        name: The parameter's name, for messages.
        global_shape: The whole tensor's shape.
        local_shape: The shape of this rank's shard (``global_shape`` when not sharded).
        row_start: The first row (along dimension 0) of the shard in the whole tensor.
        shards: How many shards dimension 0 is split into (1: not sharded).
        coordinate: This rank's index among the shards (rows are in coordinate order).
        group: The process group of the shards (None when not sharded).
    """

    name: str
    global_shape: torch.Size
    local_shape: torch.Size
    row_start: int = 0
    shards: int = 1
    coordinate: int = 0
    group: Any = None

    @property
    def sharded(self) -> bool:
        """Whether the parameter is split over more than one rank."""
        return self.shards > 1

    @property
    def global_numel(self) -> int:
        return self.global_shape.numel()

    @property
    def row_size(self) -> int:
        """Elements per row of dimension 0 (``numel / rows``; 1 for a 0-d tensor)."""
        rows = self.global_shape[0] if len(self.global_shape) else 1
        return self.global_numel // rows if rows else 0

    @property
    def flat_start(self) -> int:
        """The flat index, in the whole tensor, of the shard's first element."""
        return self.row_start * self.row_size

    def shard_rows(self, coordinate: int) -> tuple[int, int]:
        """The rows ``[start, stop)`` that shard ``coordinate`` holds (``torch.chunk``'s split of dimension 0)."""
        rows = self.global_shape[0] if len(self.global_shape) else 1
        chunk = -(-rows // self.shards)
        start = min(coordinate * chunk, rows)
        return start, min(start + chunk, rows)

    def shard_numel(self, coordinate: int) -> int:
        """The number of elements shard ``coordinate`` holds."""
        start, stop = self.shard_rows(coordinate)
        return (stop - start) * self.row_size if len(self.global_shape) else self.global_numel


def shard_layout(name: str, tensor: Tensor, who: str = "masking") -> ShardLayout:
    """The layout of ``tensor``'s shards (see the module docstring for what is handled).

    Args:
        name: The parameter's name, for messages.
        tensor: A plain tensor or a ``DTensor``.
        who: What needs the layout (``"GradualMagnitudePruning"``), for messages.

    Raises:
        ValueError: If ``tensor`` is sharded in a way the masks cannot follow: the message names the parameter, its
            placements and its mesh, and what is supported.

    Example:
        >>> shard_layout("fc.weight", torch.ones(4, 2)).global_shape
        torch.Size([4, 2])
    """
    if not is_dtensor(tensor):
        return ShardLayout(name, tensor.shape, tensor.shape)
    from torch.distributed.tensor import Replicate, Shard

    placements = tuple(tensor.placements)
    mesh = tensor.device_mesh
    sharded = [(dim, p) for dim, p in enumerate(placements) if not isinstance(p, Replicate) and mesh.size(dim) > 1]
    bad = [p for _, p in sharded if type(p) is not Shard or p.dim != 0]
    if bad or len(sharded) > 1:
        names = getattr(mesh, "mesh_dim_names", None)
        raise ValueError(
            f"{who} cannot mask `{name}`: it is a DTensor with placements {placements} on a device mesh of shape"
            f" {tuple(mesh.shape)}{f' {names}' if names else ''}. Supported: weights sharded along dimension 0 on one"
            " mesh dimension (FSDP2's `fully_shard`, as `ModelParallelStrategy` applies it in `configure_model`) and"
            " replicated on any others; tensor parallelism (a weight split along another dimension, or along"
            " dimension 0 over two mesh dimensions) splits rows and N:M groups across ranks. Use a mesh without"
            " tensor parallelism (`ModelParallelStrategy(data_parallel_size=<devices>, tensor_parallel_size=1)`),"
            " or leave these layers out with `filter_fn`"
        )
    local = local_tensor(tensor)
    shape = tensor.shape
    if not sharded:
        return ShardLayout(name, shape, local.shape)
    (dim, _), shards = sharded[0], mesh.size(sharded[0][0])
    coordinate = mesh.get_local_rank(dim)
    layout = ShardLayout(name, shape, local.shape, 0, shards, coordinate, mesh.get_group(dim))
    row_start, row_stop = layout.shard_rows(coordinate)  # torch.chunk's split, which DTensor's Shard(0) follows
    expected = (row_stop - row_start, *shape[1:])
    if tuple(local.shape) != expected:
        raise ValueError(
            f"{who} cannot mask `{name}`: its local shard has shape {tuple(local.shape)}, but rows"
            f" [{row_start}, {row_stop}) of the whole {tuple(shape)} were expected on shard {coordinate} of"
            f" {shards} (FSDP2's even split of dimension 0); a custom `shard_placement_fn` or an uneven sharding is"
            " not supported"
        )
    return ShardLayout(name, shape, local.shape, row_start, shards, coordinate, layout.group)


def shard_layouts(params: Mapping[str, Tensor], who: str = "masking") -> list[ShardLayout]:
    """:func:`shard_layout` of every parameter, checked to be sharded alike: all plain, or all sharded over one group.

    Raises:
        ValueError: For a parameter :func:`shard_layout` refuses; if some parameters are sharded and others are not,
            or they are sharded over different groups (the message lists them).

    Example:
        >>> [layout.sharded for layout in shard_layouts({"a": torch.ones(2, 2)})]
        [False]
    """
    layouts = [shard_layout(name, tensor, who) for name, tensor in params.items()]
    common_group(layouts, who)
    return layouts


def common_group(layouts: Sequence[ShardLayout], who: str = "masking") -> Any:
    """The process group all ``layouts`` are sharded over (None when none is sharded).

    Raises:
        ValueError: If only some are sharded, or over different groups.
    """
    sharded = [layout for layout in layouts if layout.sharded]
    if not sharded:
        return None
    plain = [layout.name for layout in layouts if not layout.sharded]
    if plain:
        raise ValueError(
            f"{who}: the selected weights are partly sharded and partly not: {', '.join(plain)} are whole on every"
            f" rank, {', '.join(layout.name for layout in sharded[:3])}{', ...' if len(sharded) > 3 else ''} are"
            " FSDP2 shards. Apply `fully_shard` to the root module as well in `configure_model` (it takes the"
            " parameters no inner `fully_shard` took), or leave the whole layers out with `filter_fn`"
        )
    groups = {id(layout.group): layout for layout in sharded}
    if len(groups) > 1:
        listed = ", ".join(f"{layout.name} ({layout.shards} shards)" for layout in groups.values())
        raise ValueError(f"{who}: the selected weights are sharded over different process groups: {listed}")
    return sharded[0].group


def all_reduce_(tensor: Tensor, group: Any) -> Tensor:
    """Sum ``tensor`` in place over ``group`` (nothing when ``group`` is None); returns ``tensor``.

    Example:
        >>> all_reduce_(torch.ones(2), None)
        tensor([1., 1.])
    """
    if group is not None:
        torch.distributed.all_reduce(tensor, group=group)
    return tensor


def sharded_strategy(trainer: Any) -> Optional[str]:
    """The name of the trainer's strategy if it shards parameters (:data:`SHARDED_STRATEGIES`), else None.

    Example:
        >>> import lightning.pytorch as pl
        >>> sharded_strategy(pl.Trainer(accelerator="cpu", logger=False)) is None
        True
    """
    strategy = getattr(trainer, "strategy", None)
    names = {cls.__name__ for cls in type(strategy).__mro__}
    return next((name for name in SHARDED_STRATEGIES if name in names), None)


def tensor_parallel_size(strategy: Any) -> int:
    """The size of the tensor-parallel dimension of a ``ModelParallelStrategy`` (1 for any other strategy).

    Read from the device mesh once the processes are up, else from the constructor argument; ``"auto"`` resolves as
    Lightning resolves it (``tensor_parallel_size = devices`` per node, ``data_parallel_size = num_nodes``), so
    ``ModelParallelStrategy()`` on 2 devices of one node is tensor parallelism of 2.

    Example:
        >>> tensor_parallel_size(object())
        1
    """
    mesh = getattr(strategy, "_device_mesh", None)
    if mesh is not None and "tensor_parallel" in (getattr(mesh, "mesh_dim_names", None) or ()):
        return int(mesh["tensor_parallel"].size())
    size = getattr(strategy, "_tensor_parallel_size", 1)
    if size == "auto":
        devices = getattr(strategy, "parallel_devices", None)
        return max(1, len(devices)) if devices else 1
    return int(size) if isinstance(size, int) else 1


@dataclass(frozen=True)
class ShardedSupport:
    """What a callback (or module) does under strategies that shard parameters.

    Attributes:
        strategies: The sharded strategies it works under (names from :data:`SHARDED_STRATEGIES`).
        why: Why the other sharded strategies cannot work, for the message.
        instead: What to use instead, besides the supported strategies.
    """

    strategies: tuple[str, ...]
    why: str
    instead: str = "DDP (`strategy='ddp'`)"


_WHOLE = (
    "which no rank of a sharded model holds (FSDP2 and FSDP1 split every weight across the ranks, DeepSpeed ZeRO-3 too)"
)
_FLAT = (
    "FSDP1 flattens each wrapped module's weights into one flat parameter and splits that anywhere, so a rank holds"
    " pieces of rows that no mask can follow; DeepSpeed partitions the weights in its own flat layout"
)
_CONSOLIDATE = (
    "DDP (`strategy='ddp'`), or apply it after training to the consolidated checkpoint"
    " (`python -m lightning.pytorch.utilities.consolidate_checkpoint <ckpt folder>`) loaded into the plain network"
)

# The one table of which callback works under which sharded strategy (by class name, looked up along the MRO so that
# subclasses inherit their parent's entry). Everything runs under DDP and in one process; this table is only about
# strategies that shard parameters. Tested here (2 CPU processes, gloo): ModelParallelStrategy (FSDP2).
SHARDED_SUPPORT: dict[str, ShardedSupport] = {
    "GradualMagnitudePruning": ShardedSupport(("ModelParallelStrategy",), _FLAT),
    "NMSparsity": ShardedSupport(("ModelParallelStrategy",), _FLAT),
    "OneShotPruning": ShardedSupport(
        (),
        "it calibrates and prunes whole weights when fit starts (SparseGPT chooses masks across the rows of a column"
        f" block, Wanda and magnitude rank whole rows or tensors), {_WHOLE}",
        _CONSOLIDATE,
    ),
    "QuantizationAwareTraining": ShardedSupport(
        (),
        "it replaces the network in `setup`, before `configure_model` shards it: the INT8 path exports one whole"
        " graph of the network (PT2E) and trains that graph from the start of fit, the INT4 path wraps the whole"
        " weights in group-wise fake quantizers; no rank of a sharded model holds the whole network or whole weights",
    ),
    "PostTrainingQuantization": ShardedSupport(
        (),
        "it calibrates and converts a copy of the whole network (a PT2E graph export) at the end of fit and in"
        f" validation, {_WHOLE}",
        _CONSOLIDATE,
    ),
    "OneShotQuantization": ShardedSupport(
        (),
        "it quantizes whole weights when fit starts (GPTQ's column-by-column error updates over whole rows,"
        f" group-wise grids along the input dimension), {_WHOLE}",
        _CONSOLIDATE,
    ),
    "ExportCallback": ShardedSupport(
        (), f"it exports and reloads the whole network (ONNX, torch.export, compressed tensors), {_WHOLE}", _CONSOLIDATE
    ),
    "CompressionPlanner": ShardedSupport(
        (),
        "it copies the whole network at the end of fit and runs its own compression steps and benchmarks in one"
        f" process, {_WHOLE}",
        _CONSOLIDATE,
    ),
    "DistillationModule": ShardedSupport(
        ("ModelParallelStrategy", "FSDPStrategy", "DeepSpeedStrategy"),
        "",  # every sharded strategy: under ModelParallelStrategy the teacher is sharded too, else replicated
    ),
}


def sharded_support(component: Any) -> Optional[ShardedSupport]:
    """The :data:`SHARDED_SUPPORT` entry of a callback or module (an instance, a class or a class name), found along
    its class hierarchy; None for a component the table does not list (it is not checked).

    Example:
        >>> sharded_support("OneShotPruning").strategies
        ()
    """
    if isinstance(component, str):
        return SHARDED_SUPPORT.get(component)
    cls = component if isinstance(component, type) else type(component)
    return next((SHARDED_SUPPORT[c.__name__] for c in cls.__mro__ if c.__name__ in SHARDED_SUPPORT), None)


def check_sharding(trainer: Any, component: Any) -> None:
    """Refuse, before training, a strategy that ``component`` cannot work under (the decision is
    :data:`SHARDED_SUPPORT`): a sharded strategy it does not list, or a ``ModelParallelStrategy`` whose mesh has a
    tensor-parallel dimension larger than 1 (no callback follows weights split along their rows' length).

    Every callback of the library calls it in its ``setup`` hook (``DistillationModule`` in its own ``setup``).

    Args:
        trainer: The Trainer (its ``strategy`` is read; no process needs to be started).
        component: The callback or module (or its class name), named in the message.

    Raises:
        ValueError: Naming the component, the strategy, why it cannot work and what to use instead.

    Example:
        >>> import lightning.pytorch as pl
        >>> check_sharding(pl.Trainer(accelerator="cpu", logger=False), "QuantizationAwareTraining")
    """
    who = (
        component
        if isinstance(component, str)
        else (component if isinstance(component, type) else type(component)).__name__
    )
    support = sharded_support(component)
    name = sharded_strategy(trainer)
    if support is None or name is None:
        return
    if name not in support.strategies:
        supported = " or ".join(support.strategies)
        instead = f"{supported} or {support.instead}" if supported else support.instead
        raise ValueError(f"{who} does not work under {name}: {support.why}. Use {instead}")
    tp = tensor_parallel_size(trainer.strategy) if name == "ModelParallelStrategy" else 1
    if tp > 1:
        raise ValueError(
            f"{who} does not work with tensor parallelism: the ModelParallelStrategy's device mesh has a"
            f" tensor-parallel dimension of size {tp} (`tensor_parallel_size`; `'auto'` makes it the number of devices"
            " per node), and tensor-parallel layers split weights along dimensions and ranks that masks, N:M groups"
            " and a sharded teacher do not follow. Use `ModelParallelStrategy(data_parallel_size=<devices>,"
            " tensor_parallel_size=1)` (FSDP2 only) or DDP (`strategy='ddp'`)"
        )
