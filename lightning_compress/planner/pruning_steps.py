"""The sparsity and pruning steps of the walk: 2:4 where sparse tensor cores exist, structured pruning followed by a
distillation fine-tune from the original when latency is still over budget, and unstructured sparsity only where a
sparse kernel measured faster than the dense one on this machine.

Example:
    >>> PruneDistill().name, Unstructured().title
    ('prune_distill', 'unstructured sparsity')
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import nn

from lightning_compress.planner.candidates import Candidate
from lightning_compress.planner.quantization_steps import fine_tune_trainer, ptq_candidate
from lightning_compress.planner.steps import WalkContext

__all__ = ["NM24", "PruneDistill", "Unstructured", "structured_kind"]


class NM24:
    """2:4 semi-structured sparsity of the Linear layers (magnitude masks, bf16), on sparse tensor cores only."""

    name, title = "nm24", "2:4 sparsity (sparse tensor cores)"

    def skip_reason(self, ctx: WalkContext) -> Optional[str]:
        if ctx.facts.sparse_24_reason:
            return ctx.facts.sparse_24_reason
        if not any(isinstance(m, nn.Linear) and m.in_features % 4 == 0 for m in ctx.network.modules()):
            return "2:4 kernels take Linear layers whose input width is a multiple of 4; this model has none"
        return None

    def run(self, ctx: WalkContext) -> Sequence[Candidate]:
        from lightning_compress.sparsity.nm_masks import nm_mask
        from lightning_compress.sparsity.semi_structured import to_semi_structured_

        sparse = copy.deepcopy(ctx.network)
        with torch.no_grad():
            for mod in sparse.modules():
                if isinstance(mod, nn.Linear) and mod.in_features % 4 == 0:
                    mod.weight.mul_(nm_mask(mod.weight, 2, 4))
        saved = copy.deepcopy(sparse)
        sparse = sparse.to(ctx.device, torch.bfloat16)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            swap = to_semi_structured_(sparse, torch.bfloat16)
        note = (f"{len(swap.swapped)} Linear layers 2:4 (one-shot magnitude, no fine-tune), bf16; INT8 on top: no"
                " model-level 2:4 INT8 path in torchao 0.18")  # fmt: skip
        return [Candidate("nm24_bf16", "float", saved, note, runtime=_BF16Inputs(sparse))]


class _BF16Inputs(nn.Module):
    """Casts floating inputs to bf16 before the wrapped model (a 2:4 bf16 model called with fp32 batches)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        cast = lambda t: t.to(torch.bfloat16) if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
        out = self.model(*[cast(a) for a in args], **{k: cast(v) for k, v in kwargs.items()})
        return out.float() if isinstance(out, torch.Tensor) else out


def structured_kind(network: nn.Module) -> Optional[str]:
    """``"channels"`` (a ResNet or SmallCNN), ``"transformer"`` (BERT-family heads and FFN neurons) or None."""
    from lightning_compress.pruning.structured.channels import channel_groups
    from lightning_compress.pruning.structured.transformer import transformer_layers

    try:
        if channel_groups(network):
            return "channels"
    except (ValueError, TypeError):
        pass
    try:
        if transformer_layers(network):
            return "transformer"
    except (ValueError, TypeError):
        pass
    return None


class PruneDistill:
    """Structured pruning (channels, or heads and FFN neurons) and a distillation fine-tune from the original, stopped
    when the validation accuracy plateaus (< 0.1 point over two evaluations) or the time budget is spent; the student
    is measured in fp32 and, where INT8 runs, after PTQ INT8."""

    name, title = "prune_distill", "structured pruning + distillation"

    def skip_reason(self, ctx: WalkContext) -> Optional[str]:
        if ctx.num_classes is None:
            return "the distillation fine-tune trains a classifier; this model has no class count"
        if structured_kind(ctx.network) is None:
            return (f"structured pruning removes channels of ResNets / SmallCNN or heads and FFN neurons of BERT-family"
                    f" models; {type(ctx.network).__name__} has neither")  # fmt: skip
        if ctx.settings.explore:
            return None
        fast = [c for c in ctx.candidates() if not ctx.budget.hardware_shortfalls(c.measurement, ctx.baseline)]
        if fast:
            return (f"{fast[0].name} already meets the latency / size target (it misses only accuracy): a smaller"
                    " network would not recover accuracy")  # fmt: skip
        return None

    def run(self, ctx: WalkContext) -> Sequence[Candidate]:
        from lightning.pytorch.callbacks import EarlyStopping

        from lightning_compress.distillation.distillation_module import DistillationModule
        from lightning_compress.training.classification import ClassificationModule

        fraction, settings = ctx.settings.prune_fraction, ctx.settings
        teacher = copy.deepcopy(ctx.network).eval()
        pruned = self._prune(ctx, teacher, fraction)
        student = ClassificationModule(pruned.train(), num_classes=ctx.num_classes,
                                       optimizer=lambda p: torch.optim.AdamW(p, lr=settings.lr))  # fmt: skip
        module = DistillationModule(student, teacher, temperature=4.0, alpha=0.5)
        plateau = EarlyStopping(monitor="val/acc", mode="max", min_delta=0.001, patience=2)
        trainer = fine_tune_trainer(ctx, ctx.run_dir / "candidates" / self.name, settings.distill_max_epochs,
                                    [plateau], max_time={"seconds": settings.distill_time_s})  # fmt: skip
        trainer.fit(module, train_dataloaders=ctx.train_data, val_dataloaders=ctx.val_data)
        network = pruned.eval()
        why = "plateau" if plateau.stopped_epoch else "epoch limit or time budget"
        note = f"{fraction:.0%} of units removed, {trainer.current_epoch} epochs distilled from the original ({why})"
        details = {"epochs": trainer.current_epoch, "stopped_by": why, "fraction": fraction}
        out = [Candidate(self.name, "pruned", network, note, details)]
        if ctx.facts.int8_reason is None:
            try:
                out.append(ptq_candidate(ctx, network, "prune_distill_int8", note=note + "; then PTQ INT8"))
            except Exception as err:  # noqa: BLE001 -- the fp32 student is still a candidate
                ctx.log(f"prune_distill+int8: PTQ of the student failed ({type(err).__name__}: {err})")
        return out

    @staticmethod
    def _prune(ctx: WalkContext, teacher: nn.Module, fraction: float) -> nn.Module:
        batches = ctx.settings.calibration_batches
        if structured_kind(teacher) == "channels":
            from lightning_compress.pruning.structured.channels import prune_channels

            return prune_channels(teacher, fraction, ctx.train_data, max_batches=batches)[0]
        from lightning_compress.pruning.structured.transformer import prune_ffn_neurons, prune_heads

        smaller = prune_heads(teacher, fraction, ctx.train_data, max_batches=batches)[0]
        return prune_ffn_neurons(smaller, fraction, ctx.train_data, max_batches=batches)[0]


class Unstructured:
    """Magnitude-pruned unstructured sparsity in sparse (CSR) layers, only where that kernel measured faster than dense
    here (no fine-tune)."""

    name, title = "unstructured", "unstructured sparsity"

    def __init__(self, kernel_check: Optional[Any] = None) -> None:
        """``kernel_check(model, inputs, sparsity, device=...) -> BenchResult``: the measurement of the sparse kernel
        against dense (default :func:`~lightning_compress.planner.hardware.sparse_kernel_speedup`)."""
        self.kernel_check = kernel_check
        self._row: Any = None

    def skip_reason(self, ctx: WalkContext) -> Optional[str]:
        from lightning_compress.planner.hardware import sparse_kernel_speedup
        from lightning_compress.planner.language_model import is_causal_lm

        if is_causal_lm(ctx.network):
            return (f"{type(ctx.network).__name__} is a causal LM: the unstructured candidate is a one-shot magnitude"
                    f" prune to {ctx.settings.unstructured_sparsity:.0%}, which a language model's perplexity does"
                    " not survive; one-shot SparseGPT / Wanda pruning of LLMs is lc-oneshot-lm's"
                    " (--method sparsegpt)")  # fmt: skip
        check = self.kernel_check or sparse_kernel_speedup
        sparsity = ctx.settings.unstructured_sparsity
        row = check(copy.deepcopy(ctx.network), ctx.example_inputs, sparsity, device=ctx.device,
                    repeats=ctx.repeats, checks=ctx.checks)  # fmt: skip
        self._row = row
        if not row.available:
            return f"no sparse kernel runs this model here ({row.reason})"
        if row.untrusted:
            return f"the sparse-kernel check could not be trusted (refused): {row.untrusted}"
        if row.speedup is None or row.speedup <= 1.0:
            return (f"no sparse kernel is faster than dense here: {row.path} measured {row.speedup or 0:.2f}x the"
                    f" dense model's speed ({row.latency_ms or 0:.3f} ms, interleaved)")  # fmt: skip
        return None

    def run(self, ctx: WalkContext) -> Sequence[Candidate]:
        from lightning_compress.bench.model_benchmark import prune_unstructured
        from lightning_compress.sparsity.sparse_layers import to_sparse_layers

        sparsity = ctx.settings.unstructured_sparsity
        pruned = prune_unstructured(ctx.network, sparsity)
        layered, _ = to_sparse_layers(pruned, "csr")
        note = f"{sparsity:.0%} magnitude-pruned, CSR layers ({self._row.speedup:.2f}x dense in the kernel check)"
        return [Candidate(self.name, "sparse", pruned, note, runtime=layered)]
