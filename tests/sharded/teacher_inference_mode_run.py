"""One process (gloo, world size 1): an FSDP2-sharded teacher run twice through DistillationModule's teacher forward,
then a forward outside it. With torch.inference_mode the second call fails (torch 2.14); the module must use no_grad.
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
for _ in range(2):
    logits, _features = DistillationModule._run_teacher(holder, x, ())
    assert not logits.requires_grad and not logits.is_inference()
    assert torch.allclose(logits, reference)
with torch.no_grad():
    teacher(x)  # FSDP2 still works outside
assert all(p.grad is None for p in teacher.parameters())
dist.destroy_process_group()
print("OK")
