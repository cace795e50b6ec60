"""The decision framework as one call: :func:`compress` walks PTQ INT8 -> sensitivity-guided PTQ -> QAT -> INT4
weight-only (LLMs, memory targets) -> 2:4 (sparse tensor cores) -> structured pruning + distillation -> unstructured
sparsity (only where a sparse kernel measured faster), measuring every candidate on this machine, and stops at the
first that meets the :class:`Budget`.

Modules: ``budget`` (the targets and the measurement), ``steps`` (the walk's order, context and records),
``quantization_steps`` / ``pruning_steps`` (the techniques), ``candidates`` (files of candidates), ``hardware`` (what
the machine can benefit from), ``measurer`` (the ``lc-bench`` timing of candidates), ``state`` (the resumable run
folder), ``report`` (table, Pareto front, report), ``progress`` (the display), ``walk`` (``compress``) and
``planner_callback`` (the walk at the end of ``fit``).
"""

from lightning_compress.planner.budget import Budget, Measurement
from lightning_compress.planner.steps import STEP_ORDER, PlannerSettings
from lightning_compress.planner.walk import PlannerResult, compress

__all__ = ["STEP_ORDER", "Budget", "Measurement", "PlannerResult", "PlannerSettings", "compress"]
