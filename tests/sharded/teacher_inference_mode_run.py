"""One process (gloo, world size 1): an FSDP2-sharded teacher run repeatedly through DistillationModule's teacher
forward, from inside torch.inference_mode, torch.no_grad and neither, then a forward outside it. Had it run in inference
mode once, later calls would fail (torch 2.14); the module runs it under no_grad with inference mode off.
Prints OK on success. Run by tests/sharded/test_distillation_fsdp2.py."""

from __future__ import annotations

import os
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from lightning_compress.distillation.distillation_module import DistillationModule

os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("PORT", "29541"))
dist.init_process_group("gloo", rank=0, world_size=1)
mesh = init_device_mesh("cpu", (1,))
torch.manual_seed(0)
teacher = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
reference = teacher(torch.ones(2, 4)).detach()
fully_shard(teacher[0], mesh=mesh)
fully_shard(teacher, mesh=mesh)
teacher.requires_grad_(False)
holder = SimpleNamespace(_teacher=teacher, teacher_dtype=None)
x = torch.ones(2, 4)
# Both modes a caller may be in (Lightning's eval loops use inference_mode on GPUs, no_grad on gloo), and neither:
# the teacher runs outside inference mode every time, so that its later forwards keep working.
for outer in (torch.inference_mode, torch.no_grad, torch.enable_grad, torch.inference_mode, torch.enable_grad):
    with outer():
        logits, _features = DistillationModule._run_teacher(holder, x, ())
    assert not logits.requires_grad and logits.is_inference() == (outer is torch.inference_mode), outer
    assert torch.allclose(logits, reference), outer
with torch.no_grad():
    teacher(x)  # FSDP2 still works outside
assert all(p.grad is None for p in teacher.parameters())
# The control: the same kind of teacher run directly under inference_mode, then under no_grad (the trap itself).
control = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
fully_shard(control[0], mesh=mesh)
fully_shard(control, mesh=mesh)
control.requires_grad_(False)
try:
    with torch.inference_mode():
        control(x)
    with torch.no_grad():
        control(x)
    print("control: no failure after inference_mode (this torch does not have the trap)")
except RuntimeError as err:
    print(f"control: the trap, reproduced: {str(err).splitlines()[0][:120]}")
dist.destroy_process_group()
print("OK")
