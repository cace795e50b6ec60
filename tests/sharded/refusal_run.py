"""Two CPU processes (gloo), started by the test with the environment of an external launcher (so that Lightning kills
no rank when another raises), fit one scenario after another under ``ModelParallelStrategy``; each scenario is
expected to be refused before training, and each rank writes ``<out>/rank<r>.json``: per scenario the error (type and
message), whether ``configure_model`` ran and how many optimizer steps were taken.

    RANK=0 WORLD_SIZE=2 ... python tests/sharded/refusal_run.py OUT

Scenarios: tensor parallelism of 2 (explicit, and ``'auto'`` on 2 devices) with GMP, NMSparsity and distillation;
weights split along dimension 1 (``shard_placement_fn``) with GMP and with 2:4 N:M; a model sharded only in part with
GMP; a distillation student whose own ``configure_model`` leaves a layer whole; QAT (PT2E INT8) and PTQ under FSDP2.
Run by tests/sharded/test_refusals.py.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.strategies import ModelParallelStrategy  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402
from torch.distributed.tensor import Shard  # noqa: E402

from lightning_compress.distillation.distillation_module import DistillationModule  # noqa: E402
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning  # noqa: E402
from lightning_compress.quantization.post_training_quantization import PostTrainingQuantization  # noqa: E402
from lightning_compress.quantization.qat import QuantizationAwareTraining  # noqa: E402
from lightning_compress.sparsity.nm_sparsity import NMSparsity  # noqa: E402
from lightning_compress.training.classification import ClassificationModule  # noqa: E402

torch.set_num_threads(1)


class Net(L.LightningModule):
    """8 -> 16 -> 4, sharded in ``configure_model`` as ``layout`` says: ``"rows"`` (FSDP2's dimension 0), ``"cols"``
    (dimension 1), ``"part"`` (the first layer only)."""

    def __init__(self, layout: str = "rows") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        self.layout = layout
        self.configured = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_model(self) -> None:
        self.configured = True
        mesh = self.device_mesh["data_parallel"]
        kwargs: dict[str, Any] = {}
        if self.layout == "cols":
            kwargs["shard_placement_fn"] = lambda param: Shard(1) if param.dim() == 2 else Shard(0)
        fully_shard(self.model[0], mesh=mesh, **kwargs)
        if self.layout != "part":
            fully_shard(self.model[2], mesh=mesh, **kwargs)
            fully_shard(self.model, mesh=mesh, **kwargs)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class PartStudent(ClassificationModule):
    """A student whose own ``configure_model`` shards its first layer only."""

    def configure_model(self) -> None:
        fully_shard(self.model[0], mesh=self.device_mesh["data_parallel"])


def data() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 8, generator=g), torch.randint(0, 4, (32,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def distill(student: nn.Module) -> DistillationModule:
    teacher = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    return DistillationModule(student, teacher, alpha=0.0)


def student() -> ClassificationModule:
    return ClassificationModule(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), num_classes=4)


def part_student() -> ClassificationModule:
    return PartStudent(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), num_classes=4)


DP = {"data_parallel_size": 2, "tensor_parallel_size": 1}
TP = {"data_parallel_size": 1, "tensor_parallel_size": 2}
NM = {"filter_fn": lambda module, fqn: fqn == "model.2"}  # 16 inputs: whole groups of 4
SCENARIOS: dict[str, tuple[dict[str, Any], Callable[[], L.LightningModule], Callable[[], list[Any]]]] = {
    "tp_gmp": (TP, Net, lambda: [GradualMagnitudePruning(0.5)]),
    "auto_nm": ({}, Net, lambda: [NMSparsity(2, 4)]),  # 'auto' on 2 devices of one node: tensor parallelism of 2
    "tp_distill": (TP, lambda: distill(student()), lambda: []),
    "cols_gmp": (DP, lambda: Net("cols"), lambda: [GradualMagnitudePruning(0.5)]),
    "cols_nm": (DP, lambda: Net("cols"), lambda: [NMSparsity(2, 4, **NM)]),
    "part_gmp": (DP, lambda: Net("part"), lambda: [GradualMagnitudePruning(0.5)]),
    "part_distill": (DP, lambda: distill(part_student()), lambda: []),
    "qat": (DP, Net, lambda: [QuantizationAwareTraining(attribute="model")]),
    "ptq": (DP, Net, lambda: [PostTrainingQuantization(calibration_batches=1, attribute="model")]),
}


def run(name: str) -> dict[str, Any]:
    sizes, make_module, make_callbacks = SCENARIOS[name]
    module = make_module()
    strategy = ModelParallelStrategy(**sizes, timeout=timedelta(seconds=120))
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy=strategy, max_epochs=1, callbacks=make_callbacks(), logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )  # fmt: skip
    result: dict[str, Any] = {"error": None}
    try:
        trainer.fit(module, data())
    except Exception as err:  # every scenario is expected to raise; the test checks what
        result["error"] = f"{type(err).__name__}: {err}"
    target = module.student if isinstance(module, DistillationModule) else module
    configured = getattr(target, "configured", None)
    result["configured"] = configured if configured is not None else any(
        type(m).__name__.startswith("FSDP") for m in module.modules()
    )  # fmt: skip
    result["global_step"] = trainer.global_step
    return result


def main(out: Path) -> None:
    results = {name: run(name) for name in SCENARIOS}
    rank = int(os.environ["RANK"])
    (out / f"rank{rank}.json").write_text(json.dumps(results, indent=1))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
