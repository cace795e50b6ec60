"""GradualMagnitudePruning under FSDP2 (Lightning's ``ModelParallelStrategy``, 2 CPU processes, gloo) against plain
sharded training: the step time, as issue 21 asks (the mean over all steps, mask updates included, and the
steady-state median), runs interleaved in a rotating order and repeated; the median of per-repeat ratios.

The MLP of ``benchmark.py`` (512-2048-2048-10, every Linear and the network ``fully_shard``-ed over a data-parallel
mesh of 2), batch 64 per process, SGD with momentum, 3 epochs; GMP prunes 50 % globally within epoch 0 with an update
every 10 steps (the distributed radix select: histograms all-reduced, no weight gathered). One thread per process.
ModelPruning is left out: ``torch.nn.utils.prune`` reparametrises the weights, which FSDP2's ``DTensor`` parameters
do not allow.

Lightning launches the second process by running this script again (so every fit runs in both); rank 0 prints.

    .venv/bin/python experiments/gmp_vs_modelpruning/sharded_timing.py                      # ~1.5 min on 2 quiet cores
    .venv/bin/python experiments/gmp_vs_modelpruning/sharded_timing.py --repeats 2 --batches 12   # smoke run, ~1 min
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark import MLP, EpochEndTimer, StepTimer  # noqa: E402

from lightning_compress.core.files import atomic_write_text  # noqa: E402
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning  # noqa: E402

EPOCHS = 3


class ShardedMLP(MLP):
    """The benchmark's MLP, every Linear and the network sharded over the data-parallel mesh."""

    def configure_model(self) -> None:
        mesh = self.device_mesh["data_parallel"]
        for layer in self.net:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(self.net, mesh=mesh)


def time_run(method: str, data: torch.utils.data.DataLoader, batches: int) -> dict[str, float]:
    torch.manual_seed(0)
    timer, ends = StepTimer(), EpochEndTimer()
    callbacks: list[Callback] = [timer]
    gmp = GradualMagnitudePruning(0.5, end_epoch=1, update_every_n_steps=10, verbose=0)
    if method == "gmp":
        callbacks.append(gmp)
    callbacks.append(ends)
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1, timeout=timedelta(seconds=300))
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy=strategy, max_epochs=EPOCHS, callbacks=callbacks, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(ShardedMLP(), data)
    return {
        "median_ms": statistics.median(timer.times[batches:]) * 1e3,
        "mean_all_ms": (ends.ends[-1] - timer.first) / len(timer.times) * 1e3,
        "schedule_mean_ms": (ends.ends[0] - timer.first) / batches * 1e3,
        "rank": trainer.global_rank,
        "sparsity": gmp.masks.sparsity() if gmp.masks is not None else 0.0,  # of the whole model: 0.5 for GMP
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=4, help="interleaved repeats, even for a balanced order (4)")
    parser.add_argument("--batches", type=int, default=30, help="batches per epoch and process (default 30)")
    parser.add_argument("--json", default=None, help="also write the results to this file (rank 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # two processes on two cores
    g = torch.Generator().manual_seed(0)
    n = 2 * 64 * args.batches  # the distributed sampler gives each process half
    x, y = torch.randn(n, 512, generator=g), torch.randint(0, 10, (n,), generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    methods = ["plain", "gmp"]
    warm = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[: 2 * 64 * 4], y[: 2 * 64 * 4]), batch_size=64)
    time_run("gmp", warm, 4)  # untimed: the first fit's one-time costs (process group, allocator, threads)
    per_repeat: list[dict[str, dict[str, float]]] = []
    rank = 0
    for r in range(args.repeats):
        order = methods[r % 2 :] + methods[: r % 2]
        per_repeat.append({m: time_run(m, data, args.batches) for m in order})
        row = per_repeat[-1]
        rank = int(row["plain"]["rank"])
        if rank == 0:
            print(
                f"  [fsdp2 mlp b64/rank] repeat {r}: mean over all steps: plain {row['plain']['mean_all_ms']:.2f} ms,"
                f" gmp {row['gmp']['mean_all_ms'] / row['plain']['mean_all_ms']:.3f}x; steady median: plain"
                f" {row['plain']['median_ms']:.2f} ms, gmp {row['gmp']['median_ms'] / row['plain']['median_ms']:.3f}x",
                flush=True,
            )
    if rank != 0:
        return

    def ratio(key: str) -> float:
        return statistics.median(r["gmp"][key] / r["plain"][key] for r in per_repeat)

    result: dict[str, Any] = {
        "config": {
            **vars(args),
            "epochs": EPOCHS,
            "processes": 2,
            "threads_per_process": 1,
            "torch": torch.__version__,
            "lightning": L.__version__,
        },  # fmt: skip
        "plain_mean_all_ms": statistics.median(r["plain"]["mean_all_ms"] for r in per_repeat),
        "gmp_ratio_mean_all_steps": ratio("mean_all_ms"),
        "gmp_ratio_mean_schedule_epoch": ratio("schedule_mean_ms"),
        "gmp_ratio_steady_median": ratio("median_ms"),
        "gmp_final_sparsity": per_repeat[-1]["gmp"]["sparsity"],
        "per_repeat": per_repeat,
    }
    met = "met" if result["gmp_ratio_mean_all_steps"] <= 1.05 else "NOT met"
    print(
        f"FSDP2 (2 processes, gloo), MLP 512-2048-2048-10, batch 64 per process: mean step over all steps (mask updates"
        f" included) / plain: GradualMagnitudePruning {result['gmp_ratio_mean_all_steps']:.3f}x (issue 21 target <="
        f" 1.05x: {met}); schedule epoch {result['gmp_ratio_mean_schedule_epoch']:.3f}x; steady-state median"
        f" {result['gmp_ratio_steady_median']:.3f}x (plain {result['plain_mean_all_ms']:.2f} ms per step); GMP's final"
        f" sparsity {result['gmp_final_sparsity']:.4f}"
    )
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
