"""Two CPU processes (forked, gloo, one thread each), the same small block model and the same 5 calibration batches
on both: one-shot SparseGPT, Wanda, GPTQ and AWQ with the calibration split across the ranks (``distributed="auto"``:
rank 0 runs batches 0, 2, 4 and rank 1 batches 1, 3), the statistics handed to each layer, the layers each rank
processed when the processing is split too, and the bad inputs; each rank saves what it computed to
``<out>/rank<r>.pt``. Run by tests/sharded/test_data_parallel_calibration.py:

    python tests/sharded/data_parallel_calibration_run.py OUT
    python tests/sharded/data_parallel_calibration_run.py OUT ddp   # OneShotPruning under Lightning's DDP (2 ranks)

The ``ddp`` mode fits a LightningModule around the same model with ``OneShotPruning(method="sparsegpt")`` under
``strategy="ddp"`` (Lightning starts the second process), counts the calls of the first layer during the pruning (in
``on_fit_start``: each rank runs only its share of the batches) and saves each rank's masks and weights.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lightning_compress.pruning.one_shot.calibration import InputStatistics
from lightning_compress.pruning.one_shot.prune import one_shot_prune
from lightning_compress.pruning.one_shot.sequential_calibration import LayerCalibration, calibrate_sequentially
from lightning_compress.quantization.weight_only.quantize import one_shot_quantize

BATCHES = 5


class Block(nn.Module):
    """A residual MLP block: ``x + fc2(relu(fc1(x)))``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


class BlockNet(nn.Module):
    """A 16 -> 32 embedding Linear, three repeated blocks (calibrated one after another), a 32 -> 4 head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(16, 32)
        self.layers = nn.ModuleList(Block(32) for _ in range(3))
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def batches() -> list[torch.Tensor]:
    """5 batches of 12 samples (uneven shares over 2 ranks: 36 and 24 tokens)."""
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(12, 16, generator=gen) for _ in range(BATCHES)]


def statistics(model: nn.Module, data: list[Any], distributed: Any = "auto") -> dict[str, dict[str, Any]]:
    """Each layer's statistics as handed to ``process`` (a pass that changes no weight)."""
    seen: dict[str, dict[str, Any]] = {}

    def record(name: str, s: InputStatistics) -> None:
        seen[name] = {"tokens": s.tokens, "local_tokens": s.local_tokens, "hessian": s.hessian().clone(),
                      "norms": s.input_norms().clone(), "abs_mean": s.input_abs_mean().clone()}  # fmt: skip

    layers = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    calibration = LayerCalibration(layers, hessian=True, process=record, abs_mean=True, distributed=distributed)
    calibrate_sequentially(model, data, lambda m, b: m(b), list(layers), calibration, "layers")
    return seen


def dealt(model: nn.Module, data: list[Any]) -> dict[str, Any]:
    """Which layers this rank processed itself, and the ``broadcast(name, src)`` calls, when the processing is split."""
    processed: list[str] = []
    sources: list[tuple[str, int]] = []
    layers = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    calibration = LayerCalibration(layers, hessian=False, process=lambda name, s: processed.append(name),
                                   broadcast=lambda name, src: sources.append((name, src)))  # fmt: skip
    calibrate_sequentially(model, data, lambda m, b: m(b), list(layers), calibration, "layers")
    return {"processed": processed, "sources": sources}


def results(distributed: Any = "auto") -> dict[str, Any]:
    """What each method computes on :class:`BlockNet` and :func:`batches` (also run by the test in one process)."""
    out: dict[str, Any] = {"stats": statistics(BlockNet(), batches(), distributed)}
    for method in ("sparsegpt", "wanda"):
        model = BlockNet()
        result = one_shot_prune(model, batches(), method=method, sparsity=0.5, ignore=(), distributed=distributed)
        out[method] = {"masks": result.masks, "weights": dict(model.state_dict()), "ranks": result.ranks,
                       "batches": result.calibration_batches}  # fmt: skip
    for method in ("gptq", "awq"):
        model, quantized = one_shot_quantize(BlockNet(), batches(), method=method, bits=4, group_size=16, ignore=(),
                                             distributed=distributed)  # fmt: skip
        out[method] = {
            name: {"weight": q.weight.clone(), "scale": q.scale, "zero": q.zero, "input_scale": q.input_scale}
            for name, q in quantized.layers.items()
        }
        out[f"{method}_ranks"] = quantized.ranks
    return out


def error_of(fn: Any) -> str:
    try:
        fn()
    except ValueError as err:
        return str(err)
    return ""


def main(rank: int, out: str, port: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        saved = results()
        saved["opted_out"] = statistics(BlockNet(), batches(), distributed=False)
        _, alone = one_shot_quantize(BlockNet(), batches(), method="gptq", bits=4, group_size=16, ignore=(),
                                     distributed=False)  # fmt: skip
        weights = {name: q.weight.clone() for name, q in alone.layers.items()}
        saved["gptq_opted_out"] = {"ranks": alone.ranks, "weights": weights}
        saved["dealt"] = dealt(BlockNet(), batches())
        saved["too_few"] = error_of(lambda: one_shot_prune(BlockNet(), batches()[:1], method="wanda", sparsity=0.5))
        uneven = batches()[: 3 + rank]  # 3 batches on rank 0, 4 on rank 1
        saved["uneven"] = error_of(lambda: one_shot_prune(BlockNet(), uneven, method="wanda", sparsity=0.5))
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        sharded = BlockNet()
        fully_shard(sharded, mesh=init_device_mesh("cpu", (2,)))  # FSDP2: DTensor row shards
        saved["sharded"] = error_of(lambda: one_shot_prune(sharded, batches(), method="sparsegpt", sparsity=0.5))
        torch.save(saved, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def ddp(out: str) -> None:
    """OneShotPruning at fit start under Lightning's DDP on 2 CPU processes; each rank saves what it pruned."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from lightning_compress.pruning.one_shot.one_shot_pruning import OneShotPruning

    class Lit(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = BlockNet()
            self.calls = 0
            self.net.embed.register_forward_pre_hook(lambda *_: setattr(self, "calls", self.calls + 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            return self.net(batch).sum() * 0.0

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    class Save(Callback):
        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            masks = pruning._masks
            assert masks is not None
            torch.save({"calls": pl_module.calls, "masks": dict(zip(masks.names, (m.clone() for m in masks.masks))),
                        "weights": {k: v.clone() for k, v in pl_module.net.state_dict().items()}},
                       Path(out) / f"ddp{trainer.global_rank}.pt")  # fmt: skip

    torch.set_num_threads(1)
    pruning = OneShotPruning(method="sparsegpt", sparsity=0.5, calibration_batches=BATCHES, dataloader=batches(),
                             ignore=(), verbose=0)  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[pruning, Save()])  # fmt: skip
    trainer.fit(Lit(), train_dataloaders=torch.utils.data.DataLoader(torch.cat(batches()), batch_size=12))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__" and sys.argv[2:] == ["ddp"]:
    ddp(sys.argv[1])
elif __name__ == "__main__":
    mp.start_processes(main, args=(sys.argv[1], free_port()), nprocs=2, join=True, start_method="fork")
