"""The quantization steps of the walk: PTQ INT8, sensitivity-guided PTQ (the most sensitive layers kept in float), a
QAT fine-tune, and INT4 weight-only (GPTQ or AWQ) for LLM-style models when memory is the target.

A causal LM skips the static INT8 steps (they quantize activations, whose outlier channels a language model is known
for, through a graph captured at one input shape) and goes to the INT4 weight-only step; its candidate ships the
INT4 Linear layers (codes, scales, zeros) and every other tensor (norms; the embedding and the output head tied to it
unless the target is weight bytes) in bf16, and is measured as it ships (bf16 compute). GPTQ runs with searched
ranges (``search_ranges=True``: a planner choice, the library's default stays min-max; the candidate is named
``int4_gptqr``): on SmolLM2-135M W4 g64 it gives perplexity +9.1 % over fp32 where min-max gives +21.9 %. When the
target is ``weight_bytes_ratio`` the embedding (and a head tied to it) is stored as int8 per row
(:func:`~lightning_compress.quantization.weight_only.int8_embedding.int8_embedding_`, one int8 tensor for both; name
suffix ``_emb8``): +0.02 % perplexity on SmolLM2-135M for half the embedding's bytes.

Each step says why it is skipped from the numbers earlier steps measured: keeping layers in float or fine-tuning with
QAT can only recover accuracy, never make the INT8 graph faster or smaller, so they run only when PTQ lost too much
and its INT8 graph meets the latency and size targets.

Example:
    >>> PTQInt8().name, QATInt8().title
    ('ptq_int8', 'QAT fine-tune (INT8)')
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
from torch import nn

from lightning_compress.planner.candidates import Candidate
from lightning_compress.planner.language_model import is_causal_lm
from lightning_compress.planner.steps import CandidateRecord, WalkContext

__all__ = [
    "Int4WeightOnly",
    "PTQInt8",
    "PTQSensitivity",
    "QATInt8",
    "fine_tune_trainer",
    "int4_group_size",
    "is_causal_lm",
    "ptq_candidate",
]


def fine_tune_trainer(ctx: WalkContext, folder: Path, max_epochs: int, callbacks: Sequence[Any], **kwargs: Any):  # noqa: ANN201
    """A quiet Lightning Trainer for the planner's fine-tunes (no logger, no checkpoints, the planner's device)."""
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="gpu" if ctx.device.type == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(folder),
        callbacks=list(callbacks),
        limit_train_batches=ctx.settings.limit_train_batches,
        num_sanity_val_steps=0,
        **kwargs,
    )


def ptq_candidate(ctx: WalkContext, network: nn.Module, name: str, note: str = "", **options: Any) -> Candidate:
    """PTQ INT8 of ``network`` (compiled oneDNN model) as a candidate: built by ``lc-bench``'s INT8 path
    (:func:`~lightning_compress.bench.model_benchmark.int8_model`), so that its timing is ``lc-bench``'s."""
    from lightning_compress.bench.model_benchmark import int8_model

    batches = ctx.settings.calibration_batches
    int8 = int8_model(network, ctx.train_data, ctx.device, calibration_batches=batches, **options)
    report = int8.quantization_report
    details = {"quantized_layers": len(report.quantized_layers), "float_layers": list(report.float_layers)}
    text = note or f"{len(report.quantized_layers)} layers INT8, {ctx.settings.calibration_batches} calibration batches"
    return Candidate(name, "int8", int8, text, details)


def _first(ctx: WalkContext, step: str) -> Optional[CandidateRecord]:
    found = ctx.candidates(step)
    return found[0] if found else None


def _ptq_rules_out_recovery(ctx: WalkContext, what: str) -> Optional[str]:
    """Why recovering PTQ's accuracy cannot help (None: it can)."""
    ptq = _first(ctx, "ptq_int8")
    if ptq is None:
        record = ctx.records.get("ptq_int8")
        why = f" ({record.status}: {record.reason})" if record is not None and record.reason else ""
        return f"{what} starts from the PTQ INT8 model, and there is none{why}"
    drop = ctx.drop(ptq)
    if drop <= ctx.budget.allowed_drop:
        return (f"PTQ INT8 lost only {drop:.2f} points (budget {ctx.budget.allowed_drop:g}): {what} recovers accuracy"
                " and cannot make the INT8 graph faster or smaller")  # fmt: skip
    hardware = ctx.budget.hardware_shortfalls(ptq.measurement, ctx.baseline)
    if hardware:
        return f"{what} gives the same INT8 kernels as PTQ INT8, which already misses: {'; '.join(hardware)}"
    return None


class PTQInt8:
    """Post-training static INT8 of every layer (calibrated, no training)."""

    name, title = "ptq_int8", "PTQ INT8"

    def skip_reason(self, ctx: WalkContext) -> Optional[str]:
        if is_causal_lm(ctx.network):
            return (f"{type(ctx.network).__name__} is a causal LM: static INT8 (PT2E) quantizes its activations too,"
                    " through a graph captured at one input shape; the walk takes INT4 weight-only for it")  # fmt: skip
        return ctx.facts.int8_reason

    def run(self, ctx: WalkContext) -> Sequence[Candidate]:
        return [ptq_candidate(ctx, ctx.network, self.name)]


class PTQSensitivity:
    """PTQ INT8 with the most sensitive layers kept in float until the drop is within the budget."""

    name, title = "ptq_sensitivity", "sensitivity-guided PTQ"

    def skip_reason(self, ctx: WalkContext) -> Optional[str]:
        return ctx.facts.int8_reason or _ptq_rules_out_recovery(ctx, "keeping sensitive layers in float")

    def run(self, ctx: WalkContext) -> Sequence[Candidate]:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "no set meets the budget": the table says it
            candidate = ptq_candidate(
                ctx, ctx.network, self.name, accuracy_budget=ctx.budget.max_drop / 100.0, eval_data=ctx.val_data,
                metric=ctx.metric, measure_latency=False,
            )  # fmt: skip
        report = candidate.model.quantization_report
        kept = report.kept_for_budget
        candidate.note = f"kept in float: {', '.join(kept) or 'none'} (searched on the validation batches)"
        candidate.details = {
            **(candidate.details or {}),
            "kept_for_budget": kept,
            "budget_met_in_search": report.budget_met,
        }
        return [candidate]


class QATInt8:
    """A few epochs of quantization-aware training from the fp32 weights, converted to the INT8 graph."""

    name, title = "qat_int8", "QAT fine-tune (INT8)"

    def skip_reason(self, ctx: WalkContext) -> Optional[str]:
        if ctx.num_classes is None:
            return "the QAT fine-tune trains a classifier (ClassificationModule); this model has no class count"
        reason = ctx.facts.int8_reason or _ptq_rules_out_recovery(ctx, "a QAT fine-tune")
        if reason is None:
            sens = _first(ctx, "ptq_sensitivity")
            if sens is not None and not sens.shortfalls:
                return "sensitivity-guided PTQ already meets the budget"
        return reason

    def run(self, ctx: WalkContext) -> Sequence[Candidate]:
        from lightning_compress.quantization.qat import QuantizationAwareTraining
        from lightning_compress.training.classification import ClassificationModule

        epochs = ctx.settings.qat_epochs
        module = ClassificationModule(copy.deepcopy(ctx.network).train(), num_classes=ctx.num_classes,
                                      optimizer=_adamw(ctx.settings.lr * 0.1))  # fmt: skip
        qat = QuantizationAwareTraining(scheme="int8", freeze_bn_epoch=max(0.0, epochs - 1.0), verbose=0,
                                        evaluate_quantized=False)  # fmt: skip
        trainer = fine_tune_trainer(ctx, ctx.run_dir / "candidates" / self.name, epochs, [qat])
        trainer.fit(module, train_dataloaders=ctx.train_data, val_dataloaders=ctx.val_data)
        if qat.quantized_model is None:
            raise RuntimeError("the QAT fine-tune ended without a converted INT8 model")
        return [Candidate(self.name, "int8", qat.quantized_model, f"{epochs} epochs QAT, lr {ctx.settings.lr * 0.1:g}")]


def _adamw(lr: float):  # noqa: ANN202
    import functools

    import torch

    return functools.partial(torch.optim.AdamW, lr=lr)


def int4_group_size(model: nn.Module, asked: Optional[int] = None) -> int:
    """``asked``, or the largest of 128, 64, 32 that divides the input width of every Linear layer of ``model``.

    Raises:
        ValueError: If none does (the widths are listed).
    """
    if asked is not None:
        return asked
    widths = sorted({m.in_features for m in model.modules() if isinstance(m, nn.Linear)})
    for size in (128, 64, 32):
        if all(w % size == 0 for w in widths):
            return size
    raise ValueError(f"no INT4 group size of 128, 64 or 32 divides every Linear input width ({widths}); set"
                     " int4_group_size (--int4-group-size)")  # fmt: skip


class Int4WeightOnly:
    """INT4 weight-only (GPTQ or AWQ, in groups) of the Linear layers of an LLM-style model, when memory is the
    target: the rest of the model ships in bf16."""

    name, title = "int4_weight_only", "INT4 weight-only (GPTQ / AWQ)"

    def skip_reason(self, ctx: WalkContext) -> Optional[str]:
        if not is_causal_lm(ctx.network):
            return (f"INT4 weight-only is for LLM-style models (a causal LM's Linear weights, memory-bound decoding);"
                    f" this model is a {type(ctx.network).__name__}")  # fmt: skip
        if not ctx.budget.targets_size:
            return ("INT4 weight-only saves memory; the budget has no memory target (weight_bytes_ratio, size_ratio"
                    " / size_mb)")  # fmt: skip
        return None

    def run(self, ctx: WalkContext) -> Sequence[Candidate]:
        import torch

        from lightning_compress.quantization.weight_only import one_shot_quantize, to_weight_only_
        from lightning_compress.quantization.weight_only.int8_embedding import int8_embedding_

        method, group = ctx.settings.int4_method, int4_group_size(ctx.network, ctx.settings.int4_group_size)
        batches = ctx.settings.calibration_batches
        search_ranges = method == "gptq"  # the planner's choice (module docstring); AWQ searches its own scales
        model, result = one_shot_quantize(copy.deepcopy(ctx.network), ctx.train_data, method=method, bits=4,
                                          group_size=group, calibration_batches=batches,
                                          search_ranges=search_ranges)  # fmt: skip
        int8_rows = ctx.budget.weight_bytes_ratio is not None
        table = model.get_input_embeddings().weight.detach().float().clone() if int8_rows else None
        model = to_weight_only_(model.to(torch.bfloat16), result, dtype=torch.bfloat16)
        embedding = None
        if int8_rows:  # after the bf16 cast (the row scales stay float32), rounding the float32 table
            embedding = int8_embedding_(model, dtype=torch.bfloat16, source=table)
        label = "GPTQ (searched ranges)" if search_ranges else method.upper()
        rest = "the rest bf16"
        if embedding is not None:
            tied = " (the tied head shares its codes)" if embedding["tied_head"] else ""
            rest = f"the embedding int8 per row{tied}, {rest}"
        note = (f"{label} W4A16 g{group} ({len(result.layers)} Linear layers, {result.calibration_batches}"
                f" calibration windows), {rest}")  # fmt: skip
        details = {"layers": len(result.layers), "skipped": sorted(result.skipped), "group_size": group,
                   "method": method, "search_ranges": search_ranges, "int8_embedding": embedding}  # fmt: skip
        name = f"int4_{method}{'r' if search_ranges else ''}{'_emb8' if embedding else ''}"
        return [Candidate(name, "int4", model, note, details)]
