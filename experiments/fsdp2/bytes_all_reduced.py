"""Bytes one global magnitude-threshold update moves under FSDP2: the all-reduced histograms of the distributed radix
select (``MagnitudeSelection.bytes_all_reduced``) against an all-gather of the weights (``bytes_gather``), and the
bytes of the packed masks a checkpoint gathers to rank 0 against each rank's shard. Two CPU processes (gloo), FSDP2
``fully_shard`` of every Linear of MLPs of growing width; a size count, not a timing.

    .venv/bin/python experiments/fsdp2/bytes_all_reduced.py  # writes experiments/fsdp2/bytes.json, prints a table
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lightning_compress.core.masks import ParameterMasks  # noqa: E402
from lightning_compress.pruning.magnitude import prune_by_magnitude_  # noqa: E402

WIDTHS = (64, 256, 1024, 4096)


def worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    rows = []
    for width in WIDTHS:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
        for layer in (net[0], net[2], net[4]):
            fully_shard(layer, mesh=mesh)
        fully_shard(net, mesh=mesh)
        params = {name: p for name, p in net.named_parameters() if name.endswith("weight")}
        masks = ParameterMasks(params)
        selection = prune_by_magnitude_(masks, 0.5)
        packed = masks.state_dict()  # a collective: the whole packed masks on rank 0
        local = sum(t.numel() for t in masks.local_params)
        row = {
            "width": width, "weights": selection.total, "ranks": world, "pruned": selection.pruned,
            "bytes_all_reduced": selection.bytes_all_reduced, "bytes_gather": selection.bytes_gather,
            "local_shard_bytes": 4 * local, "mask_bytes_local_bool": local,
            "packed_mask_bytes_gathered_to_rank0": sum(int(v.numel()) for v in packed["masks"].values()),
        }  # fmt: skip
        rows.append(row)
    if rank == 0:
        Path(out).write_text(json.dumps(rows, indent=1) + "\n")
    dist.destroy_process_group()


def main() -> None:
    out = Path(__file__).with_name("bytes.json")
    mp.spawn(worker, args=(2, 29517, str(out)), nprocs=2, join=True)
    rows = json.loads(out.read_text())
    print(
        "| width | weights | all-reduced B/update (per rank) | gather B (per rank) | ratio | packed masks to rank 0 B |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["bytes_gather"] / r["bytes_all_reduced"]
        print(f"| {r['width']} | {r['weights']:,} | {r['bytes_all_reduced']:,} | {r['bytes_gather']:,} | {ratio:.1f}x"
              f" | {r['packed_mask_bytes_gathered_to_rank0']:,} |")  # fmt: skip


if __name__ == "__main__":
    main()
