"""N:M structured sparsity (2:4 by default) as a Lightning callback, with explicit masks and exact resume.

Example:
    >>> import lightning as L
    >>> trainer = L.Trainer(max_epochs=12, callbacks=[NMSparsity(n=2, m=4, start_epoch=2)])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from lightning_compress.core.distributed import broadcast_masks, gather_to_first, shard_offsets
from lightning_compress.core.mask_callback import MaskingCallback
from lightning_compress.core.masks import ParameterMasks, torch_optimizer
from lightning_compress.core.metric_logging import log_metrics
from lightning_compress.core.selection import FilterFn, prunable_weights
from lightning_compress.core.sharding import ShardLayout, all_reduce_, local_tensor
from lightning_compress.core.target import compression_target, steps_per_epoch
from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.sparsity.nm_masks import partial_nm_mask
from lightning_compress.sparsity.pattern import nm_eligibility, nm_problems

__all__ = ["NMSparsity"]

_POLICIES = ("fixed", "dynamic")


class NMSparsity(MaskingCallback):
    r"""Make the selected weights N:M sparse (2:4: two non-zeros in every 4 consecutive input weights) from a step on.

    The groups of ``m`` run along each layer's reduction dimension
    (:func:`~lightning_compress.sparsity.nm_masks.nm_mask`).
    From ``start_epoch`` on the masks are enforced at every optimizer step by the shared masking core, so the weights
    stay N:M after every step, at every validation and in every checkpoint. Two policies (``"dynamic"`` is the
    default: it was as accurate as ``"fixed"`` on MNIST-5k and about 1 point better on MiniLM / Rotten Tomatoes, see
    ``experiments/nm_sparsity/README.md``; ``"fixed"`` is the cheap one):

    * ``"fixed"``: the masks are computed once from the weights' magnitudes at the start step (or grown over the ramp)
      and then held; gradients of pruned weights are zeroed before each step and the weights re-zeroed after it, and
      the optimizer state of pruned positions is cleared, so nothing revives them. Costs nothing beyond GMP's masking.
    * ``"dynamic"`` (SR-STE, Zhou et al. 2021, "Learning N:M fine-grained structured sparse neural networks from
      scratch"): the callback keeps a dense copy of the masked weights (one extra copy of their memory). The forward
      and backward passes see the masked weights (zeros in storage); right before the optimizer step the dense values
      are put back and ``sr_ste_decay * (1 - mask) * weight`` is added to the gradient, so the optimizer updates the
      *dense* weights with the gradient taken at the sparse point (a straight-through estimator) while the pruned ones
      decay; right after the step the dense values are saved and the weights masked again. Every
      ``update_every_n_steps`` steps the masks are recomputed from the dense magnitudes, so a pruned weight that has
      grown back can return. Masks of other compression callbacks on the same weights (any callback with a ``masks``
      :class:`~lightning_compress.core.masks.ParameterMasks`, such as ``GradualMagnitudePruning``) are applied to the
      dense copy as well, so their zeros hold too.

    ``ramp_epochs > 0`` ramps in the sparsity: from the start step, every ``update_every_n_steps`` steps, a linearly
    growing fraction of the groups of ``m`` in each layer is made N:M (the groups where it removes the least magnitude
    first), reaching all groups ``ramp_epochs`` later. With ``"fixed"`` a group once N:M stays so.

    Under FSDP2 (``ModelParallelStrategy``, weights sharded along dimension 0) the masks and the dense copy are of the
    local shards: whole rows, hence whole groups (checked when ``fit`` starts; a group never straddles ranks), so the
    masks equal a single process's on the whole weights. During a ramp the fraction of groups made N:M is chosen per
    shard (``round(fraction * groups of the shard)``), not over the whole layer; from the end of the ramp on every
    group is N:M either way. A checkpoint holds the whole masks and the dense values of the pruned positions, gathered
    to the first rank, so it resumes under any sharding or none.

    Layers that cannot be made N:M (reduction dimension not a multiple of ``m``, depthwise convolutions, 1-D weights)
    are left dense with one warning that lists them (``strict=True``: an error instead); no weight is ever masked in a
    pattern the 2:4 kernels reject. Epochs are counted in optimizer steps, as in ``GradualMagnitudePruning``:
    ``steps_per_epoch = ceil(num_training_batches / accumulate_grad_batches)``; fractional epochs are allowed. Under
    ``Trainer(fast_dev_run=...)`` the masks apply from the first step (and a ramp ends on the last), so that the smoke
    run exercises them.

    Logs ``compress/nm_sparsity`` (the fraction of zeros in the masked weights; ``compress/nm_mask_changed``, the
    fraction of mask positions that flipped, too for ``"dynamic"``) to the trainer's loggers when the masks change.

    Args:
        n: Weights kept per group, an int with ``0 < n < m``.
        m: Group size, an int.
        start_epoch: When the masks first apply, in epochs (fractions allowed), >= 0.
        policy: ``"dynamic"`` (SR-STE) or ``"fixed"`` (see above).
        update_every_n_steps: Optimizer steps between mask updates: the ramp's steps, and the mask recomputations of
            ``"dynamic"``; an int >= 1.
        ramp_epochs: Length of the ramp in epochs, >= 0; 0 makes every group N:M at ``start_epoch``.
        sr_ste_decay: ``"dynamic"`` only: the SR-STE decay of the pruned weights (the paper's 2e-4), >= 0.
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing the modules whose ``weight`` is masked; default:
            ``nn.Linear`` and ``nn.Conv1d/2d/3d``. Names are relative to ``pl_module.compression_target`` if the module
            has one, else to the LightningModule.
        skip_first_conv: Leave the first convolution dense.
        skip_classifier: Leave the last ``nn.Linear`` dense.
        strict: Raise instead of warning when a selected layer cannot be made N:M.
        verbose: 0 silent, 1 a rank-zero line when the sparsity changes (``N:M sparsity: 0.00% -> 50.00%``), 2 also one
            line per layer.
        allow_config_change: Resume from a checkpoint written with other arguments (their masks, dense copy and
            schedule state carried over, the change logged); False: such a resume is an error that lists the changes.

    The masks are final (:attr:`is_final`) once every group is N:M, from the end of the ramp on (:attr:`final_step`;
    ``"dynamic"`` masks still move, but always N:M).

    Raises:
        ValueError: In ``__init__``, for any invalid argument (all of them listed at once). In ``on_fit_start``, if no
            selected layer can be made N:M, or (``strict=True``) some cannot. In ``on_train_start``, if the start or
            the ramp falls after the end of training. At a mask update, if a masked weight holds NaN or Inf. When
            ``fit`` resumes from a checkpoint written with other arguments (unless ``allow_config_change``).

    Example:
        >>> import lightning as L
        >>> sparsity = NMSparsity(n=2, m=4, start_epoch=2, skip_first_conv=True)
        >>> trainer = L.Trainer(max_epochs=12, callbacks=[sparsity])
    """

    _CONFIG = ("n", "m", "policy", "start_epoch", "ramp_epochs", "filter_fn", "skip_first_conv", "skip_classifier")
    _COMPARED = ("update_every_n_steps", "sr_ste_decay")

    def __init__(
        self,
        n: int = 2,
        m: int = 4,
        start_epoch: float = 0.0,
        policy: Literal["fixed", "dynamic"] = "dynamic",
        update_every_n_steps: int = 10,
        ramp_epochs: float = 0.0,
        sr_ste_decay: float = 2e-4,
        filter_fn: Optional[FilterFn] = None,
        skip_first_conv: bool = False,
        skip_classifier: bool = False,
        strict: bool = False,
        verbose: int = 1,
        allow_config_change: bool = False,
    ) -> None:
        _validate(
            n, m, start_epoch, policy, update_every_n_steps, ramp_epochs, sr_ste_decay, filter_fn, skip_first_conv,
            skip_classifier, strict, verbose, allow_config_change,
        )  # fmt: skip
        self.n = n
        self.m = m
        self.start_epoch = start_epoch
        self.policy = policy
        self.update_every_n_steps = update_every_n_steps
        self.ramp_epochs = ramp_epochs
        self.sr_ste_decay = float(sr_ste_decay)
        self.filter_fn = filter_fn
        self.skip_first_conv = skip_first_conv
        self.skip_classifier = skip_classifier
        self.strict = strict
        self.verbose = verbose
        self.allow_config_change = allow_config_change

        self._skipped: dict[str, str] = {}
        self._dense: Optional[list[Tensor]] = None  # "dynamic": the dense values of the masked weights
        self._external: list[list[Tensor]] = []  # "dynamic": other callbacks' masks on each masked weight
        self._handles: list[RemovableHandle] = []
        self._indices: dict[int, list[int]] = {}  # optimizer id -> indices of the masked weights it updates
        self._restored: set[int] = set()  # "dynamic": optimizers whose weights are dense until their step ends
        self._start_step = 0
        self._full_step = 0  # the step from which every group is N:M
        self._fraction = 0.0  # fraction of the groups that the current masks make N:M
        self._schedule_known = False  # set in on_train_start

    @property
    def fraction(self) -> float:
        """The fraction of the groups of ``m`` that the current masks make N:M (1.0 once fully applied)."""
        return self._fraction

    @property
    @override
    def is_final(self) -> bool:
        """Whether every group of ``m`` is N:M (the end of the ramp)."""
        return self._masks is not None and self._fraction >= 1.0

    @property
    @override
    def final_step(self) -> Optional[int]:
        """The optimizer step from which every group is N:M (known from ``on_train_start``)."""
        return self._full_step if self._schedule_known else None

    @override
    def describe_state(self) -> str:
        return (
            f"NMSparsity {self.n}:{self.m} ({self.policy}): {self._fraction:.0%} of the groups {self.n}:{self.m},"
            f" {self._final_text()}"
        )

    # ------------------------------------------------------------------------------------------------------ hooks
    @override
    def _select(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, nn.Parameter]:
        target = compression_target(pl_module)
        selected = prunable_weights(target, self.filter_fn, self.skip_first_conv, self.skip_classifier)
        eligible, self._skipped = nm_eligibility(target, selected, self.m)
        listed = ", ".join(f"{name} {tuple(selected[name].shape)}: {why}" for name, why in self._skipped.items())
        if not eligible:
            raise ValueError(
                f"NMSparsity({self.n}:{self.m}) found no layer that can be made {self.n}:{self.m} in"
                f" {type(target).__name__}: {listed}; the reduction dimension (in_features, or in_channels / groups x"
                f" kernel size) must be a multiple of m={self.m}"
            )
        if self._skipped and self.strict:
            raise ValueError(
                f"NMSparsity({self.n}:{self.m}, strict=True): {len(self._skipped)} selected layer(s) cannot be made"
                f" {self.n}:{self.m}: {listed}; leave them out with `filter_fn`, or pass strict=False to keep them"
                " dense"
            )
        if self._skipped:
            rank_zero_warn(
                f"NMSparsity({self.n}:{self.m}) leaves {len(self._skipped)} selected layer(s) dense: {listed}."
                " Pass strict=True to make this an error, or a `filter_fn` that leaves them out."
            )
        return {name: selected[name] for name in eligible}

    @override
    def _reset_schedule(self) -> None:
        self._fraction, self._dense = 0.0, None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        assert self._masks is not None
        _check_groups(self._masks.layouts, self.n, self.m)

    @override
    def _attach(self, trainer: pl.Trainer) -> None:
        if self.policy == "fixed":
            super()._attach(trainer)
            return
        for optimizer in trainer.optimizers:
            self._handles.append(torch_optimizer(optimizer).register_step_post_hook(self._dynamic_post_step))

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        needed = tuple(n for n, v in (("start_epoch", self.start_epoch), ("ramp_epochs", self.ramp_epochs)) if v)
        steps = steps_per_epoch(trainer, pl_module, needed)
        self._start_step = round(self.start_epoch * steps)
        self._full_step = self._start_step + round(self.ramp_epochs * steps)
        last_step = max(int(total) - 1, 0) if not math.isinf(total) else self._full_step
        if trainer.fast_dev_run:  # a smoke run of a few batches: exercise the masks from the first step
            self._start_step, self._full_step = 0, min(self._full_step, last_step)
        if self._start_step > last_step:
            raise ValueError(
                f"N:M sparsity starts at step {self._start_step} (`start_epoch={self.start_epoch}`, {steps}"
                f" optimizer steps per epoch) but training has only {int(total)} optimizer steps; lower `start_epoch`"
                " or train longer"
            )
        if self._full_step > total:
            raise ValueError(
                f"the ramp ends at step {self._full_step} (`start_epoch={self.start_epoch}`,"
                f" `ramp_epochs={self.ramp_epochs}`, {steps} optimizer steps per epoch) but training has only"
                f" {int(total)} optimizer steps; lower `ramp_epochs` or train longer"
            )
        self._full_step = min(self._full_step, last_step)  # a ramp that ends with training completes on the last step
        self._schedule_known = True
        self._external = self._other_masks(trainer)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._restored and self._masks is not None:  # a skipped step (AMP's GradScaler on inf/NaN) left them dense
            self._restored.clear()
            self._masks.apply_to_weights()

    @override
    @torch.no_grad()
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        masks = self._masks
        if masks is None:
            return
        if self.policy == "fixed":
            masks.apply_to_grads(optimizer)
            return
        if self._dense is None:
            return
        self._restored.add(id(torch_optimizer(optimizer)))
        indices = self._optimizer_indices(optimizer)
        owners, local = masks.params, masks.local_params  # the local shards when sharded
        params = [local[i] for i in indices]
        dense = [self._dense[i] for i in indices]
        if self.sr_ste_decay:
            # the weights hold mask * dense here, so decay * (dense - weight) is decay * (1 - mask) * dense
            with_grad = [j for j, i in enumerate(indices) if owners[i].grad is not None]
            grads = [local_tensor(owners[indices[j]].grad) for j in with_grad]
            torch._foreach_add_(grads, [dense[j] for j in with_grad], alpha=self.sr_ste_decay)
            torch._foreach_add_(grads, [params[j] for j in with_grad], alpha=-self.sr_ste_decay)
        torch._foreach_copy_(params, dense)  # SR-STE: step the dense weights with the sparse-point gradient

    # ------------------------------------------------------------------------------------------------- state dict
    @override
    def _extra_state(self) -> dict[str, Any]:
        assert self._masks is not None
        state: dict[str, Any] = {"fraction": self._fraction}
        if self._dense is not None:  # the dense values of the pruned positions (the kept ones are the weights)
            masks = self._masks
            pruned = [d[~mask] for d, mask in zip(self._dense, masks.masks)]
            if masks.group is not None:  # the whole tensors' values, in row order, on the first rank (a collective)
                gathered = gather_to_first(pruned, masks.group)
                pruned = [torch.cat(parts) for parts in gathered] if gathered is not None else []
            state["dense_pruned"] = {name: values.cpu() for name, values in zip(masks.names, pruned)}
        return state

    @override
    @torch.no_grad()
    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        masks = self._masks
        assert masks is not None
        self._fraction = float(state.get("fraction", 0.0))
        self._dense = None
        pruned = state.get("dense_pruned")
        if self.policy == "dynamic" and pruned is not None:
            self._dense = []
            counts = [int(m.numel() - m.count_nonzero()) for m in masks.masks]
            starts = shard_offsets(counts, masks.group, masks.masks[0].device)  # where each shard's values begin
            for name, param, mask, start, count in zip(masks.names, masks.local_params, masks.masks, starts, counts):
                dense = param.detach().clone()
                dense[~mask] = pruned[name][start : start + count].to(dense.device, dense.dtype)
                self._dense.append(dense)

    # ---------------------------------------------------------------------------------------------------- helpers
    @override
    def _due(self, step: int) -> bool:
        if step < self._start_step:
            return False
        if step >= self._full_step and self._fraction < 1.0:
            return True
        if self.policy == "fixed" and self._fraction >= 1.0:
            return False
        return (step - self._start_step) % self.update_every_n_steps == 0

    def _target_fraction(self, step: int) -> float:
        if step >= self._full_step:
            return 1.0
        return (step - self._start_step) / (self._full_step - self._start_step)

    @override
    @torch.no_grad()
    def _update(self, trainer: pl.Trainer, step: int) -> None:
        masks = self._masks
        assert masks is not None
        target, previous = self._target_fraction(step), self._fraction
        local = masks.local_params  # the local shards when sharded: whole rows, so whole groups (_check_groups)
        if self.policy == "fixed":
            if target <= self._fraction:
                return
            self._check_finite(local, f"mask update at step {step}")
            new = [self._nm_mask(p, target, mask) for p, mask in zip(local, masks.masks)]
        else:
            if self._dense is None:  # the first application: the dense copy starts from the weights
                self._dense = [p.detach().clone() for p in local]
                for dense, external in zip(self._dense, self._external):
                    for other in external:
                        dense.mul_(other)
            self._check_finite(self._dense, f"mask update at step {step}")
            new = [self._nm_mask(d, target) for d in self._dense]
        if masks.group is None:
            new = broadcast_masks(new)  # DDP: rank 0's masks on every replica
        flips = [int((a != b).sum()) for a, b in zip(new, masks.masks)]
        changed = sum(self._summed(flips)) / sum(x.global_numel for x in masks.layouts)
        before, before_layers = self._zero_fraction(), self._layer_zeros()
        masks.set_masks(new)
        if self._dense is not None:
            for param, dense in zip(local, self._dense):
                param.copy_(dense)
        masks.apply_to_weights()
        self._fraction = target

        after, after_layers = self._zero_fraction(), self._layer_zeros()
        metrics = {"compress/nm_sparsity": after}
        if self.policy == "dynamic":
            metrics["compress/nm_mask_changed"] = changed
        log_metrics(trainer, metrics)
        if self.verbose >= 1 and target != previous:
            rank_zero_info(f"N:M sparsity: {before:.2%} -> {after:.2%} ({self.n}:{self.m}, step {step})")
        if self.verbose >= 2 and target != previous:
            for name, value in after_layers.items():
                rank_zero_info(f"  {name}: {before_layers[name]:.2%} -> {value:.2%}")

    @torch.no_grad()
    def _dynamic_post_step(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        """After the step of the dense weights: other callbacks' zeros, save the dense values, mask in place."""
        masks = self._masks
        if masks is None or self._dense is None:
            return
        self._restored.discard(id(optimizer))
        indices = self._optimizer_indices(optimizer)
        local = masks.local_params
        for i in indices:
            for other in self._external[i] if i < len(self._external) else ():
                local[i].mul_(other)
        torch._foreach_copy_([self._dense[i] for i in indices], [local[i] for i in indices])
        masks.apply_to_weights(optimizer)

    def _optimizer_indices(self, optimizer: Any) -> list[int]:
        optimizer = torch_optimizer(optimizer)
        indices = self._indices.get(id(optimizer))
        if indices is None:
            assert self._masks is not None
            ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
            indices = self._indices[id(optimizer)] = [i for i, p in enumerate(self._masks.params) if id(p) in ids]
        return indices

    def _other_masks(self, trainer: pl.Trainer) -> list[list[Tensor]]:
        """For each masked weight, the live masks that other compression callbacks hold on it."""
        assert self._masks is not None
        position = {id(p): i for i, p in enumerate(self._masks.params)}
        external: list[list[Tensor]] = [[] for _ in position]
        for callback in trainer.callbacks:
            other = getattr(callback, "masks", None)
            if callback is self or not isinstance(other, ParameterMasks):
                continue
            for param, mask in zip(other.params, other.masks):
                if id(param) in position:
                    external[position[id(param)]].append(mask)
        return external

    def _nm_mask(self, weight: Tensor, fraction: float, current: Optional[Tensor] = None) -> Tensor:
        """:func:`partial_nm_mask` of one weight (a local shard when sharded; a shard of no rows keeps its mask)."""
        if weight.numel() == 0:
            return torch.ones_like(weight, dtype=torch.bool) if current is None else current.clone()
        return partial_nm_mask(weight, self.n, self.m, fraction, current)

    def _summed(self, counts: list[int]) -> list[int]:
        """Per-weight counts of the local shards, summed over the shards (a collective when sharded)."""
        assert self._masks is not None
        group = self._masks.group
        if group is None:
            return counts
        return all_reduce_(torch.tensor(counts, device=self._masks.masks[0].device), group).tolist()

    def _zeros(self) -> list[int]:
        assert self._masks is not None
        return self._summed([int((p.detach() == 0).sum()) for p in self._masks.local_params])

    def _zero_fraction(self) -> float:
        assert self._masks is not None
        return sum(self._zeros()) / sum(x.global_numel for x in self._masks.layouts)

    def _layer_zeros(self) -> dict[str, float]:
        assert self._masks is not None
        masks = self._masks
        return {name: z / x.global_numel for name, z, x in zip(masks.names, self._zeros(), masks.layouts)}

    @override
    def _detach(self) -> None:
        super()._detach()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._indices.clear()


def _check_groups(layouts: list[ShardLayout], n: int, m: int) -> None:
    """Assert that no group of ``m`` straddles two ranks: each local shard holds whole rows of its weight (FSDP2
    shards along dimension 0, the groups run along the reduction dimension inside a row) and starts on a group.

    Raises:
        ValueError: Naming the weight and its shard if a shard starts or ends inside a group.
    """
    for layout in layouts:
        if not layout.sharded:
            continue
        whole_rows = tuple(layout.local_shape[1:]) == tuple(layout.global_shape[1:])
        if not whole_rows or layout.flat_start % m or layout.local_shape.numel() % m:
            raise ValueError(
                f"NMSparsity({n}:{m}) cannot mask `{layout.name}`: its local shard {tuple(layout.local_shape)} (from"
                f" flat index {layout.flat_start} of the whole {tuple(layout.global_shape)}) does not hold whole groups"
                f" of {m} along the reduction dimension, so a group would straddle ranks; only whole rows per rank"
                " (FSDP2's `fully_shard` along dimension 0) are supported"
            )


def _validate(
    n: Any,
    m: Any,
    start_epoch: Any,
    policy: Any,
    update_every_n_steps: Any,
    ramp_epochs: Any,
    sr_ste_decay: Any,
    filter_fn: Any,
    skip_first_conv: Any,
    skip_classifier: Any,
    strict: Any,
    verbose: Any,
    allow_config_change: Any,
) -> None:
    """Raise one ValueError naming every bad constructor argument, its value and what is allowed."""
    errors = ArgumentErrors()
    errors.extend(nm_problems(n, m))
    errors.number("start_epoch", start_epoch, minimum=0)
    errors.one_of("policy", policy, _POLICIES)
    errors.int("update_every_n_steps", update_every_n_steps)
    errors.number("ramp_epochs", ramp_epochs, minimum=0)
    errors.number("sr_ste_decay", sr_ste_decay, minimum=0)
    errors.callable("filter_fn", filter_fn, "(module, fqn) -> bool")
    errors.bools(skip_first_conv=skip_first_conv, skip_classifier=skip_classifier, strict=strict,
                 allow_config_change=allow_config_change)  # fmt: skip
    errors.verbose(verbose)
    errors.raise_if_any()
