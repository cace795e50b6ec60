"""``compress``: the design document's decision tree as one call. The user brings a trained model, data and a budget;
the walk tries each technique in order (:data:`~lightning_compress.planner.steps.STEP_ORDER`), measures every
candidate on the validation data and on this machine (:mod:`~lightning_compress.planner.measurer`), stops at the
first candidate that meets the budget (unless ``explore``), skips with the reason every step this machine or the
numbers so far rule out, and writes the table, the Pareto plot, the report and the chosen model into the run folder,
which resumes after a crash at the first unfinished step (:mod:`~lightning_compress.planner.state`).

A causal language model walks with ``metric="perplexity"`` on token windows (``data`` = ``(calibration windows,
evaluation windows)``, see :func:`~lightning_compress.planner.language_model.lm_windows`) and a budget with
``max_ppl_increase`` (and typically ``weight_bytes_ratio``, its memory target): the static INT8 steps skip it, the
INT4 weight-only step quantizes it, and when the budget has no latency target nothing is timed.

Example:
    >>> budget = Budget(max_drop=0.5, latency_ratio=0.3)
    >>> result = compress(module, datamodule, budget, run_dir="compress")  # doctest: +SKIP
    >>> result.chosen.name, result.met  # doctest: +SKIP
    ('ptq_int8', True)
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from lightning_compress.bench.timing import TimingChecks
from lightning_compress.core.batches import call_model, move_data_to_device
from lightning_compress.core.files import atomic_folder, atomic_path
from lightning_compress.core.validation import ArgumentErrors, check_finite, check_materialized
from lightning_compress.planner.budget import Budget, Measurement
from lightning_compress.planner.candidates import Candidate, artifact_size, load_artifact
from lightning_compress.planner.hardware import MachineFacts, machine_facts
from lightning_compress.planner.language_model import bf16_weight_bytes, weight_bytes
from lightning_compress.planner.measurer import BenchMeasurer, Measurer
from lightning_compress.planner.progress import WalkProgress
from lightning_compress.planner.state import PlannerState
from lightning_compress.planner.steps import STEP_ORDER, CandidateRecord, PlannerSettings, Step, StepRecord, WalkContext
from lightning_compress.planner.token_batches import describe_inputs, same_length
from lightning_compress.quantization.calibration import METRICS, Metric, logits_of, split_labels

__all__ = ["EXPORT_FORMATS", "PlannerResult", "compress", "default_steps"]

EXPORT_FORMATS = ("onnx",)


@dataclass
class PlannerResult:
    """What :func:`compress` found.

    Attributes:
        chosen: The chosen candidate (the first that meets the budget; with ``explore`` the fastest / smallest of
            those; when none does, the best found), or None when no candidate was made.
        met: Whether ``chosen`` meets the budget; when not, ``chosen.shortfalls`` says by how much it misses.
        baseline: The fp32 model's measurement.
        records: Every step's record, in walk order.
        files: The files written (``csv``, ``markdown``, ``report``, ``plot``, ``state``, ``chosen``).
        exported: One line per exported artifact of the chosen model (or why a format was not written).
        model: The chosen model (None when none was made).
    """

    chosen: Optional[CandidateRecord]
    met: bool
    baseline: Measurement
    records: list[StepRecord]
    files: dict[str, Path] = field(default_factory=dict)
    exported: list[str] = field(default_factory=list)
    model: Optional[nn.Module] = None


def default_steps() -> dict[str, Step]:
    """The step implementations, by name, in walk order."""
    from lightning_compress.planner.pruning_steps import NM24, PruneDistill, Unstructured
    from lightning_compress.planner.quantization_steps import Int4WeightOnly, PTQInt8, PTQSensitivity, QATInt8

    steps = [PTQInt8(), PTQSensitivity(), QATInt8(), Int4WeightOnly(), NM24(), PruneDistill(), Unstructured()]
    return {s.name: s for s in steps}


class _Batches:
    """A list of batches as one iterable (Lightning reads a bare list as several dataloaders)."""

    def __init__(self, batches: Sequence[Any]) -> None:
        self.batches = batches

    def __iter__(self) -> Any:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _loaders(data: Any) -> tuple[Any, Any]:
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return tuple(_Batches(d) if isinstance(d, (list, tuple)) else d for d in data)  # type: ignore[return-value]
    if hasattr(data, "train_dataloader") and hasattr(data, "val_dataloader"):
        if hasattr(data, "setup"):
            data.setup("fit")
        return data.train_dataloader(), data.val_dataloader()
    raise TypeError(
        "`data` must be a LightningDataModule (train_dataloader / val_dataloader) or a pair (train batches,"
        f" validation batches), got {type(data).__name__}"
    )


def _example_inputs(batches: Sequence[Any], batch_size: int) -> Any:
    """``batch_size`` rows of model inputs taken from the validation batches (concatenated)."""
    parts, rows = [], 0
    for batch in batches:
        inputs = split_labels(batch)[0]
        parts.append(inputs)
        rows += (next(iter(inputs.values())) if isinstance(inputs, Mapping) else inputs).shape[0]
        if rows >= batch_size:
            break
    if isinstance(parts[0], Mapping):
        return {k: torch.cat([p[k] for p in parts])[:batch_size] for k in parts[0]}
    return torch.cat(parts)[:batch_size]


def _validate(model: Any, budget: Any, settings: Any, steps: Any, metric: Any, device: Any, export_formats: Any,
              run_dir: Any) -> None:  # fmt: skip
    errors = ArgumentErrors("compress: ")
    errors.require(isinstance(model, nn.Module), "model", "an nn.Module (or a LightningModule)", type(model).__name__)
    errors.require(isinstance(budget, Budget), "budget", "a Budget (or a mapping of its fields)", budget)
    errors.require(isinstance(settings, PlannerSettings), "settings", "PlannerSettings (or a mapping)", settings)
    if isinstance(steps, str) or not all(isinstance(s, str) for s in steps):
        errors.add(f"`steps` must be a list of step names from {', '.join(STEP_ORDER)}, got {steps!r}")
    else:
        unknown = [s for s in steps if s not in STEP_ORDER]
        errors.require(not unknown and len(set(steps)) == len(steps) and len(steps) > 0, "steps",
                       f"distinct names from {', '.join(STEP_ORDER)}", list(steps))  # fmt: skip
    if isinstance(metric, str):
        errors.one_of("metric", metric, (*METRICS, "perplexity"))
        if isinstance(budget, Budget) and (metric == "perplexity") != budget.lower_is_better:
            errors.add(f"metric={metric!r} needs a budget with "
                       + ("`max_ppl_increase` (perplexity is lower-is-better)" if metric == "perplexity"
                          else f"`max_drop` (points of {metric}); `max_ppl_increase` goes with metric='perplexity'")
                       + f", got {budget.describe()}")  # fmt: skip
    else:
        errors.callable("metric", metric, "(logits, labels) -> float", optional=False)
    errors.one_of("device", str(device), ("cpu", "cuda"))
    if str(device) == "cuda" and not torch.cuda.is_available():
        errors.add("`device` is 'cuda' and no CUDA GPU is present")
    if isinstance(export_formats, str) or not all(f in EXPORT_FORMATS for f in export_formats):
        errors.add(f"`export_formats` must be a list from {', '.join(EXPORT_FORMATS)} (the candidate's own file is"
                   f" always written), got {export_formats!r}")  # fmt: skip
    errors.require(isinstance(run_dir, (str, os.PathLike)) and str(run_dir) != "", "run_dir", "a folder", run_dir)
    errors.raise_if_any()


def _check_data(val_batches: list, metric: Metric) -> None:
    if not val_batches:
        raise ValueError("compress: the validation data yielded no batch: the planner measures every candidate on it")
    if metric == "perplexity":
        bad = [i for i, b in enumerate(val_batches) if not (isinstance(b, torch.Tensor) and b.dim() == 2
                                                              and not b.is_floating_point())]  # fmt: skip
        if bad:
            raise ValueError(
                f'compress: metric="perplexity" needs validation batches of token ids, integer tensors (B, L);'
                f" batch {bad[0]} is {type(val_batches[bad[0]]).__name__}"
                f" {tuple(getattr(val_batches[bad[0]], 'shape', ()))} (see planner.language_model.lm_windows)"
            )
    elif metric == "accuracy" and split_labels(val_batches[0])[1] is None:
        raise ValueError(
            'compress: metric="accuracy" needs labelled validation batches ((inputs, labels) or a dict with'
            ' "labels"), and the first batch has no labels; pass labelled data, or metric="agreement" (top-1'
            " agreement with the fp32 model, no labels needed)"
        )


def _choose(records: Sequence[CandidateRecord], budget: Budget, baseline: Measurement, explore: bool) -> tuple:
    def cost(c: CandidateRecord) -> tuple:
        m = c.measurement
        lat = 1 / m.speedup if m.speedup else float("inf")
        size = m.size_bytes / baseline.size_bytes if m.size_bytes and baseline.size_bytes else float("inf")
        if budget.weight_bytes_ratio is not None:
            size = (
                m.weight_bytes / baseline.bf16_weight_bytes if m.weight_bytes and baseline.bf16_weight_bytes else size
            )
        return (lat if budget.targets_latency else size, size, -budget.score(m))

    met = [c for c in records if c.met]
    if met:
        return (min(met, key=cost) if explore else met[0]), True
    accurate = [c for c in records if budget.accuracy_shortfall(c.measurement, baseline) is None]
    if accurate:
        return min(accurate, key=lambda c: (len(c.shortfalls), cost(c))), False
    return (max(records, key=lambda c: budget.score(c.measurement)) if records else None), False


def _export(chosen: CandidateRecord, model: Optional[nn.Module], original: nn.Module, run_dir: Path,
            example_inputs: Any, formats: Sequence[str]) -> list[str]:  # fmt: skip
    out_dir = run_dir / "chosen"
    out_dir.mkdir(parents=True, exist_ok=True)
    source = Path(chosen.artifact)
    target = out_dir / source.name
    if source.is_dir():
        with atomic_folder(target) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    else:
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    lines = [f"{target} ({chosen.kind}, {artifact_size(target)} bytes)"]
    for fmt in formats:
        path = out_dir / "model.onnx"
        try:
            from lightning_compress.export.export import export

            net = model if model is not None else load_artifact(chosen.kind, source, original)
            result = export(net, path, fmt, example_inputs=example_inputs, overwrite=True)
            lines.append(f"{result.path} ({fmt}, {result.bytes} bytes)")
        except Exception as err:  # noqa: BLE001 -- the planner's own file is written; say why this one is not
            lines.append(f"{fmt}: not written ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
    return lines


def compress(
    model: nn.Module,
    data: Any,
    budget: Union[Budget, Mapping[str, Any]],
    run_dir: Union[str, os.PathLike],
    *,
    settings: Union[PlannerSettings, Mapping[str, Any], None] = None,
    steps: Sequence[str] = STEP_ORDER,
    metric: Metric = "accuracy",
    device: str = "cpu",
    export_formats: Sequence[str] = EXPORT_FORMATS,
    restart: bool = False,
    repeats: int = 10,
    checks: Optional[TimingChecks] = TimingChecks(),  # noqa: B008 -- frozen, shared safely
    measurer: Optional[Measurer] = None,
    step_impls: Optional[Mapping[str, Step]] = None,
    facts: Optional[MachineFacts] = None,
    progress: bool = True,
    plot: bool = True,
) -> PlannerResult:
    """Walk the decision tree on ``model`` until a candidate meets ``budget`` (see the module docstring).

    Args:
        model: The trained fp32 model (a LightningModule: its network); never modified.
        data: A LightningDataModule, or a pair ``(train batches, validation batches)`` of labelled batches; the
            training batches calibrate PTQ and feed the fine-tunes, the validation batches measure every candidate.
        budget: A :class:`~lightning_compress.planner.budget.Budget` (or its fields as a mapping).
        run_dir: The planner's run folder (made if missing; a walk recorded there resumes).
        settings: :class:`~lightning_compress.planner.steps.PlannerSettings` (or a mapping): fine-tune epochs,
            pruning fraction, ``explore``.
        steps: The steps to walk, from :data:`~lightning_compress.planner.steps.STEP_ORDER` (walked in that order).
        metric: ``"accuracy"`` (labelled data), ``"agreement"`` (with the fp32 model), ``"perplexity"`` (a causal
            LM on token-window batches ``(B, L)``; the budget gives ``max_ppl_increase``) or
            ``metric(logits, labels)``.
        device: ``"cpu"`` or ``"cuda"``: where candidates run and are timed.
        export_formats: Formats the chosen model is also exported to (its own file is always copied to ``chosen/``).
        restart: Start the walk again in a folder that holds one (else a walk with another budget is an error).
        repeats: Timed calls per candidate (interleaved with the fp32 model).
        checks: The busy-machine and spread checks of every timing (None: none; for tests).
        measurer: Measures candidates (default: :class:`~lightning_compress.planner.measurer.BenchMeasurer`; it
            times nothing for a perplexity walk whose budget has no latency target).
        step_impls: Step implementations by name (default :func:`default_steps`; tests pass fakes).
        facts: What the machine has (default :func:`~lightning_compress.planner.hardware.machine_facts`).
        progress: Show a rich progress bar (else plain lines).
        plot: Write ``pareto.png``.

    Returns:
        :class:`PlannerResult`.

    Raises:
        ValueError: On a bad argument or budget (all listed at once), data without a batch or without the labels
            the metric needs, NaN / Inf or meta weights, or a run folder holding a walk with another budget.
        TypeError: If ``data`` is neither a data module nor a pair of batch iterables.
    """
    if isinstance(budget, Mapping):
        budget = Budget(**budget)
    settings = PlannerSettings(**settings) if isinstance(settings, Mapping) else settings or PlannerSettings()
    _validate(model, budget, settings, steps, metric, device, export_formats, run_dir)
    import lightning.pytorch as pl

    from lightning_compress.core.target import find_network

    network = copy.deepcopy(find_network(model)[0] if isinstance(model, pl.LightningModule) else model).eval()
    check_materialized(network)
    check_finite(dict(network.state_dict()), "the planner starts")
    train_data, val_data = _loaders(data)
    val_batches = same_length([move_data_to_device(b, torch.device("cpu")) for b in val_data])  # one compile
    _check_data(val_batches, metric)
    language = metric == "perplexity"
    example = _example_inputs(val_batches, budget.batch_size if budget.targets_latency or not language else 1)
    run_dir = Path(run_dir)
    ordered = [s for s in STEP_ORDER if s in steps]
    state = PlannerState.load_or_new(run_dir, budget, settings, ordered, restart=restart)
    impls = dict(step_impls) if step_impls is not None else default_steps()
    facts = facts or machine_facts(device)
    network = network.to(facts.device)
    num_classes = None
    if not language:
        with torch.no_grad():
            logits = logits_of(call_model(network, move_data_to_device(example, torch.device(facts.device))))
        num_classes = getattr(data, "num_classes", None) or (int(logits.shape[-1]) if logits.dim() == 2 else None)
    if measurer is None:
        measurer = BenchMeasurer(network, val_batches, example, metric, facts.device, repeats=repeats, checks=checks,
                                 time=budget.targets_latency or not language)  # fmt: skip
    baseline_file = Candidate("fp32", "float", network).save(run_dir / "candidates" / "fp32", example)
    if state.baseline is None:
        state.baseline = measurer.measure(network, artifact_size(baseline_file), "fp32")
        if budget.weight_bytes_ratio is not None:
            state.baseline.weight_bytes, state.baseline.bf16_weight_bytes = (
                weight_bytes(network),
                bf16_weight_bytes(network),
            )
        state.save()
    made: dict[str, nn.Module] = {}
    ctx = WalkContext(network, train_data, val_data, example, budget, settings, facts, state.baseline,
                      state.records, num_classes, metric, run_dir, repeats=repeats, checks=checks)  # fmt: skip
    with WalkProgress(len(ordered), enabled=progress) as bar:
        ctx.log = bar.log
        bar.log(f"lc-compress: {budget.describe()}; fp32 {_metric_text(budget, state.baseline)}"
                + (f"; resuming {run_dir} after {', '.join(state.records)}" if state.records else ""))  # fmt: skip
        if budget.targets_latency:
            bar.log(f"lc-compress: latencies are of one call on {describe_inputs(example)} (the first validation rows)")
        for name in ordered:
            done = [c for r in state.records.values() for c in r.candidates if c.met]
            if name in state.records:
                bar.done(f"{name}: {state.records[name].status} before the resume (not redone)")
                continue
            if done and not settings.explore:
                bar.log(f"{name}: not run: {done[0].name} already meets the budget")
                continue
            step = impls[name]
            bar.start(step.title)
            state.records[name] = record = _run_step(step, ctx, measurer, made)
            state.save()
            bar.done(_line(record, budget))
    candidates = [c for r in state.records.values() for c in r.candidates]
    chosen, met = _choose(candidates, budget, state.baseline, settings.explore)
    records = [state.records[s] for s in ordered if s in state.records]
    exported: list[str] = []
    chosen_model = None
    if chosen is not None:
        chosen_model = made.get(chosen.name)
        exported = _export(chosen, chosen_model, network, run_dir, example, export_formats)
    from lightning_compress.bench.machine import describe_machine, machine_info
    from lightning_compress.planner.report import write_outputs

    machine = describe_machine(machine_info(facts.device, load_s=0.0)) if isinstance(measurer, BenchMeasurer) else []
    if machine and budget.targets_latency:
        machine.append(f"timed inputs: {describe_inputs(example)} (the first validation rows, one call)")
    files = write_outputs(run_dir, budget, state.baseline, records, chosen, met, exported, machine, plot=plot)
    files["state"] = state.path
    return PlannerResult(chosen, met, state.baseline, records, files, exported, chosen_model)


def _run_step(step: Step, ctx: WalkContext, measurer: Measurer, made: dict[str, nn.Module]) -> StepRecord:
    start = time.perf_counter()
    try:
        reason = step.skip_reason(ctx)
    except Exception as err:  # noqa: BLE001 -- a check that cannot run is a reason to skip
        reason = f"its check failed ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})"
    if reason:
        return StepRecord(step.name, "skipped", reason, wall_s=time.perf_counter() - start)
    try:
        candidates = list(step.run(ctx))
    except Exception as err:  # noqa: BLE001 -- a step that fails is a row with its reason, the walk goes on
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        return StepRecord(step.name, "failed", f"{type(err).__name__}: {first}", wall_s=time.perf_counter() - start)
    made_s = time.perf_counter() - start
    record = StepRecord(step.name, "done")
    problems = []
    for candidate in candidates:
        t0 = time.perf_counter()
        try:
            path = candidate.save(ctx.run_dir / "candidates" / candidate.name, ctx.example_inputs)
            runtime = candidate.runtime if candidate.runtime is not None else candidate.model
            measurement = measurer.measure(runtime, artifact_size(path), candidate.name)
        except Exception as err:  # noqa: BLE001 -- a candidate that cannot be written or run is a reason, not a crash
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
            problems.append(f"{candidate.name} could not be written or measured ({type(err).__name__}: {first})")
            continue
        if ctx.budget.weight_bytes_ratio is not None:
            measurement.weight_bytes = weight_bytes(candidate.model)
        measurement.wall_s = made_s + time.perf_counter() - t0
        shortfalls = ctx.budget.shortfalls(measurement, ctx.baseline)
        details = candidate.details or {}
        row = CandidateRecord(candidate.name, step.name, candidate.kind, candidate.note, measurement, shortfalls,
                              str(path), details)  # fmt: skip
        record.candidates.append(row)
        made[candidate.name] = candidate.model
    record.reason = "; ".join(problems)
    if problems and not record.candidates:
        record.status = "failed"
    record.wall_s = time.perf_counter() - start
    return record


def _metric_text(budget: Budget, m: Measurement) -> str:
    return f"perplexity {m.metric:.3f}" if budget.lower_is_better else f"accuracy {100 * m.metric:.2f} %"


def _line(record: StepRecord, budget: Budget) -> str:
    if record.status != "done":
        return f"{record.step}: {record.status}: {record.reason}"
    parts = []
    for c in record.candidates:
        m = c.measurement
        lat = f"{1 / m.speedup:.3f}x fp32" if m.speedup else "latency -"
        parts.append(f"{c.name}: {_metric_text(budget, m)}, {lat}{' (!)' if m.untrusted else ''}, "
                     + ("meets the budget" if c.met else "short: " + "; ".join(c.shortfalls)))  # fmt: skip
    return " | ".join(parts)
