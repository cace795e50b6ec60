"""One-shot weight quantization (GPTQ, AWQ, RTN) at the start of ``fit``, as a Lightning callback.

By default the quantized weights are then **frozen** (``requires_grad=False``): the one-shot result is already the
grid's best fit to the calibration data, a fine-tune of the rest of the model (heads, norms, biases) keeps exactly the
model that :func:`~lightning_compress.quantization.weight_only.weight_only_linear.to_weight_only_` will run, and no
optimizer state is spent on them. With ``train="fake_quant"`` they stay trainable through INT4 fake quantization: the
forward uses the weights rounded to the grids the one-shot pass chose (scales kept fixed), the gradient passes
straight through to the float weights, and at the end of ``fit`` the weights are rounded onto those grids again; that
recovers accuracy after an aggressive grid (3 bits) at the cost of a training run with a small learning rate.

Example:
    >>> import lightning as L
    >>> trainer = L.Trainer(max_epochs=1, callbacks=[OneShotQuantization(method="gptq", bits=4, group_size=64)])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_compress.core.batches import call_on_batch, stage_dataloader
from lightning_compress.core.compression_callback import CompressionCallback
from lightning_compress.core.distributed import broadcast_tensors_
from lightning_compress.core.selection import FilterFn
from lightning_compress.core.sharding import check_sharding
from lightning_compress.core.target import compression_target
from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.pruning.one_shot.ignored_layers import IgnoreSpec
from lightning_compress.quantization.weight_only.grid import QuantizedWeight, dequantize, quantize
from lightning_compress.quantization.weight_only.quantize import (
    QuantizationResult,
    check_quantize_arguments,
    one_shot_quantize,
)

__all__ = ["OneShotQuantization"]

TRAIN_MODES = ("freeze", "fake_quant")


def _on_grid(weight: Tensor, q: QuantizedWeight) -> Tensor:
    """``weight`` rounded to ``q``'s grids (fixed scales and zero points, AWQ's input scale applied)."""
    w = weight.float()
    s = q.input_scale.to(w.device).unsqueeze(0) if q.input_scale is not None else None
    scaled = w * s if s is not None else w
    out = dequantize(quantize(scaled, q.scale.to(w.device), q.zero.to(w.device), q.grid.bits), q.scale.to(w.device),
                     q.zero.to(w.device))  # fmt: skip
    return (out / s if s is not None else out).to(weight.dtype)


class _FakeQuantLinear(nn.Linear):
    """An ``nn.Linear`` (same parameters, same state dict) whose forward uses its weight rounded to a fixed grid, with
    a straight-through gradient."""

    quantized: QuantizedWeight

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        w = w + (_on_grid(w.detach(), self.quantized) - w).detach()
        return nn.functional.linear(x, w, self.bias)


class OneShotQuantization(CompressionCallback):
    """Quantize the model's Linear weights in one shot when ``fit`` starts (on the first ``calibration_batches``
    batches of ``dataloader``, default the train dataloader), then freeze them or train them through fake quant.

    Args:
        method: ``"gptq"``, ``"awq"`` or ``"rtn"``.
        bits: 2..8.
        group_size: Inputs per scale (must divide every quantized layer's width), or None (per channel).
        symmetric: Symmetric grids.
        act_order: GPTQ's activation order.
        damping: GPTQ's Hessian dampening (a fraction of the mean diagonal).
        calibration_batches: Batches of calibration data, >= 1.
        dataloader: Calibration data; default: the train dataloader.
        filter_fn: ``filter_fn(module, fqn) -> bool``; names relative to ``pl_module.compression_target`` if any.
        ignore: ``"auto"`` (the output head and weights tied to an embedding stay float) or module-name patterns.
        blocks: ``"auto"``, a module name, or None (as for ``one_shot_quantize``).
        forward_fn: ``forward_fn(model, batch)``; default: a LightningModule's ``forward(inputs)``.
        train: ``"freeze"`` (default) or ``"fake_quant"`` (see the module docstring).
        verbose: 0 silent, 1 one rank-zero line, 2 also one line per layer.
        allow_config_change: Resume from a checkpoint written with other arguments.

    Attributes:
        result: The :class:`~lightning_compress.quantization.weight_only.quantize.QuantizationResult` (after
            ``on_fit_start``); pass it to ``to_weight_only_`` to run real INT4 / INT8 kernels.

    Raises:
        ValueError: In ``__init__`` for any bad argument (all listed); in ``on_fit_start`` as ``one_shot_quantize``.

    Example:
        >>> quantization = OneShotQuantization(method="awq", bits=4, group_size=32, train="fake_quant")
    """

    _CONFIG = ("method", "bits", "group_size", "symmetric", "filter_fn")
    _COMPARED = ("act_order", "damping", "calibration_batches", "train")

    def __init__(
        self,
        method: str = "gptq",
        bits: int = 4,
        group_size: Optional[int] = 128,
        symmetric: bool = True,
        act_order: bool = False,
        damping: float = 0.01,
        calibration_batches: int = 16,
        dataloader: Optional[Iterable[Any]] = None,
        filter_fn: Optional[FilterFn] = None,
        ignore: IgnoreSpec = "auto",
        blocks: Optional[str] = "auto",
        forward_fn: Optional[Any] = None,
        train: str = "freeze",
        verbose: int = 1,
        allow_config_change: bool = False,
    ) -> None:
        errors = ArgumentErrors("OneShotQuantization: ")
        check_quantize_arguments(errors, method, bits, group_size, symmetric, act_order, damping, 128, None, None,
                                 None, calibration_batches, filter_fn, ignore, forward_fn, 20)  # fmt: skip
        errors.require(blocks is None or isinstance(blocks, str), "blocks", "'auto', None or a module name", blocks)
        errors.one_of("train", train, TRAIN_MODES)
        errors.verbose(verbose)
        errors.bool("allow_config_change", allow_config_change)
        errors.raise_if_any()
        self.method, self.bits, self.group_size, self.symmetric = method, bits, group_size, symmetric
        self.act_order, self.damping, self.calibration_batches = act_order, damping, calibration_batches
        self.dataloader, self.filter_fn, self.blocks, self.forward_fn = dataloader, filter_fn, blocks, forward_fn
        self.ignore = ignore if isinstance(ignore, str) else tuple(ignore)
        self.train, self.verbose, self.allow_config_change = train, verbose, allow_config_change
        self.result: Optional[QuantizationResult] = None
        self._pending: Optional[dict[str, Any]] = None

    @property
    @override
    def is_final(self) -> bool:
        return self.result is not None

    @property
    @override
    def final_step(self) -> Optional[int]:
        return 0 if self.result is not None else None

    @override
    def describe_state(self) -> str:
        if self.result is None:
            return "OneShotQuantization: not quantized yet"
        return f"OneShotQuantization: {self.result.summary()} ({self.train}); final"

    # ------------------------------------------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_sharding(trainer, self)  # refuses sharded strategies: core.sharding.SHARDED_SUPPORT

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        target = compression_target(pl_module)
        if self.result is None:
            if self._pending is not None:  # a resumed run: the checkpoint's weights are already on the grids
                self.result = self._restore(self._pending)
            else:
                self._quantize(trainer, target)
        assert self.result is not None
        for fqn, q in self.result.layers.items():
            layer = target.get_submodule(fqn)
            if self.train == "freeze":
                layer.weight.requires_grad_(False)
            elif type(layer) is nn.Linear:
                layer.__class__ = _FakeQuantLinear
                layer.quantized = q

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.result is None or self.train != "fake_quant":
            return
        target = compression_target(pl_module)
        with torch.no_grad():
            for fqn, q in self.result.layers.items():
                layer = target.get_submodule(fqn)
                layer.weight.copy_(_on_grid(layer.weight, q))
                q.weight = layer.weight.detach().clone()
                if isinstance(layer, _FakeQuantLinear):
                    layer.__class__ = nn.Linear
                    del layer.quantized

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"config": self.resume_config()}
        if self.result is not None:
            state["layers"] = {
                fqn: {"scale": q.scale, "zero": q.zero, "input_scale": q.input_scale}
                for fqn, q in self.result.layers.items()
            }
            state["skipped"] = dict(self.result.skipped)
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict) if "layers" in state_dict else None

    # ---------------------------------------------------------------------------------------------------- helpers
    def _restore(self, state: dict[str, Any]) -> QuantizationResult:
        from lightning_compress.quantization.weight_only.grid import Grid

        grid = Grid(self.bits, self.group_size, self.symmetric)
        layers = {
            fqn: QuantizedWeight(torch.empty(0), s["scale"], s["zero"], grid, input_scale=s.get("input_scale"))
            for fqn, s in state["layers"].items()
        }
        return QuantizationResult(layers=layers, skipped=dict(state.get("skipped", {})), method=self.method, grid=grid)

    def _quantize(self, trainer: pl.Trainer, target: nn.Module) -> None:
        loader = self.dataloader
        if loader is None and self.method != "rtn":
            try:
                loader = stage_dataloader(trainer, "fit")
            except ValueError as err:
                raise ValueError("OneShotQuantization needs calibration data: pass `dataloader=` or give `fit` a"
                                 " train dataloader") from err  # fmt: skip
        forward = self.forward_fn
        if forward is None and isinstance(target, pl.LightningModule):
            forward = lambda module, batch: call_on_batch(module, batch, whole_inputs=True)  # noqa: E731
        _, result = one_shot_quantize(
            target, loader, method=self.method, bits=self.bits, group_size=self.group_size, symmetric=self.symmetric,
            act_order=self.act_order, damping=self.damping, calibration_batches=self.calibration_batches,
            filter_fn=self.filter_fn, ignore=self.ignore, blocks=self.blocks, forward_fn=forward,
        )  # fmt: skip
        broadcast_tensors_([target.get_submodule(fqn).weight for fqn in result.layers])
        self.result = result
        if result.skipped:
            listed = ", ".join(f"{name}: {why}" for name, why in result.skipped.items())
            rank_zero_warn(f"OneShotQuantization left {len(result.skipped)} selected layer(s) in float: {listed}")
        if self.verbose >= 1:
            rank_zero_info(f"One-shot quantization: {result.summary()}; weights {self.train}")
        if self.verbose >= 2:
            for fqn, r in result.report.items():
                err = "-" if r.error is None else f"{r.error:.3%}"
                rank_zero_info(f"  {fqn}: output error {err}, weight error {r.weight_error:.3%}, {r.seconds:.2f} s")
