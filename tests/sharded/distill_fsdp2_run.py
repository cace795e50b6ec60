"""Two CPU processes (gloo) distil a small MLP teacher into a smaller MLP student under Lightning's
``ModelParallelStrategy`` (data-parallel mesh of 2, no tensor parallelism): ``DistillationModule.configure_model``
shards the student and the frozen teacher with FSDP2; ``GradualMagnitudePruning`` (50 %) prunes the sharded student in
the same Trainer. Each rank saves what it holds to ``<out>/rank<r>.pt``.

    python tests/sharded/distill_fsdp2_run.py OUT   # two fits in the same 2 processes, each rank saving
                                                    # OUT/cached/rank<r>.pt: teacher_cache=OUT/cache (per rank)
                                                    # OUT/plain/rank<r>.pt: no cache, the teacher on every batch
                                                    # OUT/features/rank<r>.pt: + a feature pair (a projection)

The data are dealt out by a ``DistributedSampler`` without shuffling (rank 0 gets the even indices, rank 1 the odd
ones, the same every epoch; Lightning's own sampler would shuffle and move examples between ranks), and some of rank
0's examples repeat within the first epoch (its third batch is a copy of its first, half of its fourth a
copy of half its second), so that in epoch 0 rank 0 meets a batch with nothing missing while rank 1 still needs the
sharded teacher (whose forward is a collective), and a batch with half of it missing. Run by
tests/sharded/test_distillation_fsdp2.py.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from lightning.pytorch.strategies import ModelParallelStrategy  # noqa: E402
from torch import nn  # noqa: E402

from lightning_compress.core.sharding import is_dtensor, local_tensor  # noqa: E402
from lightning_compress.distillation.distillation_module import DistillationModule  # noqa: E402
from lightning_compress.distillation.teacher_cache import example_keys  # noqa: E402
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning  # noqa: E402
from lightning_compress.training.classification import ClassificationModule  # noqa: E402

torch.set_num_threads(1)
N, BATCH, EPOCHS = 64, 8, 3


def dataset() -> torch.utils.data.TensorDataset:
    """64 examples; rank 0's (even indices) 32..46 copy 0..14 and 48..54 copy 16..22 (see the module docstring)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 8, generator=g)
    x[32:48:2] = x[0:16:2]
    x[48:56:2] = x[16:24:2]
    y = torch.randint(0, 4, (N,), generator=g)
    return torch.utils.data.TensorDataset(x, y)


class Data(L.LightningDataModule):
    def train_dataloader(self) -> torch.utils.data.DataLoader:
        data = dataset()
        sampler = torch.utils.data.DistributedSampler(
            data, num_replicas=2, rank=self.trainer.global_rank, shuffle=False
        )
        return torch.utils.data.DataLoader(data, batch_size=BATCH, sampler=sampler)


class Record(Callback):
    """The example keys of every batch this rank trains on, and the loss of every step."""

    def __init__(self) -> None:
        self.keys: list[list[bytes]] = []
        self.losses: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.keys.append(example_keys(batch[0]))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
        self.losses.append(float(outputs["loss"]))


def main(out: Path, mode: str) -> None:
    L.seed_everything(0, verbose=False)
    teacher = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    student = ClassificationModule(
        nn.Sequential(nn.Linear(8, 31), nn.ReLU(), nn.Linear(31, 4)), num_classes=4,
        optimizer=partial(torch.optim.SGD, lr=0.3, momentum=0.9),
    )  # fmt: skip
    cache: Any = str(out / "cache") if mode == "cached" else False
    features = [{"student": "0", "teacher": "0"}] if mode == "features" else []  # widths 31 -> 32: a projection
    module = DistillationModule(student, teacher, temperature=2.0, alpha=0.0, teacher_cache=cache, features=features)
    gmp = GradualMagnitudePruning(0.5, end_epoch=1, update_every_n_steps=2, verbose=0)
    record = Record()
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1, timeout=timedelta(seconds=180))
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy=strategy, max_epochs=EPOCHS, callbacks=[gmp, record], logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, deterministic=True,
    )  # fmt: skip
    trainer.fit(module, datamodule=Data())
    optimizer = trainer.optimizers[0]
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    teacher_params = dict(module.teacher.named_parameters())
    cache_obj = module._cache
    saved = {
        "world_size": trainer.world_size,
        "rank": trainer.global_rank,
        "fingerprint": module.teacher_fingerprint(),
        "losses": record.losses,
        "batch_keys": record.keys,
        "student": {n: local_tensor(p).detach().clone() for n, p in module.student.named_parameters()},
        "student_dtensor": all(is_dtensor(p) for p in module.student.parameters()),
        "teacher_dtensor": all(is_dtensor(p) for p in teacher_params.values()),
        "teacher_local_shapes": {n: tuple(local_tensor(p).shape) for n, p in teacher_params.items()},
        "teacher_global_shapes": {n: tuple(p.shape) for n, p in teacher_params.items()},
        "teacher_requires_grad": any(p.requires_grad for p in teacher_params.values()),
        "teacher_grads": [n for n, p in teacher_params.items() if p.grad is not None],
        "teacher_in_optimizer": [n for n, p in teacher_params.items() if id(p) in in_optimizer],
        "teacher_optimizer_state": [n for n, p in teacher_params.items() if p in optimizer.state],
        "optimizer_params": len(in_optimizer),
        "student_params": len(list(module.student.parameters())),
        "teacher_in_state_dict": [k for k in module.state_dict() if "teacher" in k],
        "projections": [(n, is_dtensor(p), id(p) in in_optimizer) for n, p in module.projections.named_parameters()],
        "gmp_num_pruned": gmp.masks.num_pruned(),
        "gmp_total": sum(layout.global_numel for layout in gmp.masks.layouts),
        "cache": None
        if cache_obj is None
        else {
            "keys": cache_obj.keys(),
            "own": cache_obj.keys(own=True),
            "hits": cache_obj.hits,
            "misses": cache_obj.misses,
            "collective_runs": cache_obj.collective_runs,
            "file": str(cache_obj.file(trainer.global_rank)),
        },  # fmt: skip
    }
    (out / mode).mkdir(exist_ok=True)
    torch.save(saved, out / mode / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    for run_mode in (
        "cached",
        "plain",
        "features",
    ):  # the second Trainer reuses the processes and process group of the first
        main(Path(sys.argv[1]), run_mode)
