"""Distillation under FSDP2 (Lightning's ``ModelParallelStrategy``): the student and the teacher both sharded over the
data-parallel dimension of the device mesh.

:meth:`~lightning_compress.distillation.distillation_module.DistillationModule.configure_model` calls
:func:`shard_for_distillation` when the strategy has a device mesh:

* the teacher's fingerprint is taken first, on the whole weights (equal on every rank: it names the cache files);
* the **student**: its own ``configure_model`` when it defines one (it gets the module's device mesh), else
  :func:`fully_shard_layers` on the student network (every submodule that holds parameters, then the network);
* the **feature projections** (when there are feature pairs): each one sharded the same way, so that their gradients
  are reduced across ranks like the student's;
* the **teacher**: :func:`fully_shard_layers` too. Its parameters are frozen (``requires_grad=False``) and outside the
  module tree, so no optimizer holds them, no gradient is ever reduced for them, and no checkpoint saves them; each rank
  holds ``1 / ranks`` of its weights, and a forward all-gathers one layer's weights at a time (FSDP2 reshards after
  each layer's forward).

A sharded teacher's forward is a collective: every rank of its mesh must run it together. With a teacher cache a rank
whose examples are all cached would skip it while another rank runs it and waits; :func:`teacher_group` gives the
group over which the cache agrees first whether any rank needs the teacher
(:meth:`~lightning_compress.distillation.teacher_cache.TeacherCache.logits`, one 1-element all-reduce per step).
The teacher runs under ``no_grad`` outside inference mode (an FSDP2 module that ran once under ``inference_mode`` fails
at later forwards with torch 2.14), see ``DistillationModule._run_teacher``.

Example:
    >>> teacher_group(torch.nn.Linear(2, 2)) is None  # a plain teacher: no collective
    True
"""

from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import nn

from lightning_compress.core.sharding import all_reduce_, is_dtensor, shard_layout

__all__ = ["fully_shard_layers", "shard_for_distillation", "teacher_group"]


def fully_shard_layers(module: nn.Module, mesh: Any) -> int:
    """FSDP2 ``fully_shard`` on every submodule of ``module`` that holds parameters of its own (innermost first), then
    on ``module`` itself; nothing if ``module`` is sharded already.

    Args:
        module: The network.
        mesh: A 1-D device mesh (the data-parallel dimension).

    Returns:
        How many modules were sharded (0 when it was sharded already).

    Example:
        >>> # in LightningModule.configure_model: fully_shard_layers(self.model, self.device_mesh["data_parallel"])
    """
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if isinstance(module, FSDPModule):
        return 0
    layers = [m for m in module.modules() if m is not module and next(m.parameters(recurse=False), None) is not None]
    for layer in reversed(layers):  # children before their parents
        fully_shard(layer, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return len(layers) + 1


def shard_for_distillation(distill: Any) -> None:
    """Shards a ``DistillationModule``'s student, projections and teacher over the data-parallel dimension of its
    device mesh (see the module docstring).

    Raises:
        ValueError: If a parameter of the module is still whole after the student's own ``configure_model`` (it
            shards only part of the student): the message names the parameters.
    """
    mesh = distill.device_mesh
    names = getattr(mesh, "mesh_dim_names", None) or ()
    dp = mesh["data_parallel"] if "data_parallel" in names else mesh
    distill.teacher_fingerprint()  # the whole teacher's weights, before they are split
    student = distill.student
    if is_overridden("configure_model", student, pl.LightningModule):
        student._device_mesh = mesh
        student.configure_model()
    else:
        fully_shard_layers(distill.student_network, dp)
    for projection in distill.projections:
        if next(projection.parameters(), None) is not None:
            fully_shard_layers(projection, dp)
    fully_shard_layers(distill.teacher, dp)
    whole = [name for name, p in distill.named_parameters() if not is_dtensor(p)]
    if whole:
        listed = ", ".join(whole[:5]) + (", ..." if len(whole) > 5 else "")
        raise ValueError(
            f"DistillationModule under ModelParallelStrategy: {len(whole)} parameters are whole on every rank after"
            f" the student's `configure_model`: {listed}. Their gradients would not be reduced across ranks; shard"
            " every parameter of the student in its `configure_model` (`fully_shard` its network, which takes the"
            " parameters no inner `fully_shard` took), or remove the student's `configure_model` to let"
            " DistillationModule shard every layer"
        )


def teacher_group(teacher: nn.Module) -> Optional[Any]:
    """The process group a sharded teacher's forward is a collective over (None for a plain or unsplit teacher).

    Example:
        >>> teacher_group(torch.nn.Linear(2, 2)) is None
        True
    """
    for name, param in teacher.named_parameters():
        if is_dtensor(param):
            return shard_layout(name, param, "DistillationModule (sharded teacher)").group
        return None
    return None


def sync_needed(missing: int, group: Any, device: torch.device) -> bool:
    """Whether any rank of ``group`` misses teacher outputs (``missing`` examples here): one all-reduce (sum) of one
    element, on ``device`` (the inputs' device, so that NCCL gets a GPU tensor)."""
    return bool(all_reduce_(torch.tensor([missing], dtype=torch.int64, device=device), group).item() > 0)
