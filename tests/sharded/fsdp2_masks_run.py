"""Two CPU processes (gloo) train a small MLP under Lightning's ``ModelParallelStrategy`` (FSDP2 ``fully_shard`` of
every layer, data-parallel mesh of 2) with ``GradualMagnitudePruning`` (global, 60 %) and dynamic 2:4
``NMSparsity`` on two of its layers; each rank saves what it holds to ``<out>/rank<r>.pt``.

    python tests/sharded/fsdp2_masks_run.py OUT straight   # 2 epochs, a distributed checkpoint per epoch
    python tests/sharded/fsdp2_masks_run.py OUT kill       # the same, both ranks SIGKILL themselves at step 6
    python tests/sharded/fsdp2_masks_run.py OUT resume     # resumes OUT/checkpoints/last.ckpt to the end

The rows of every layer are split across the ranks (31 rows: 16 + 15, so uneven). Before and after each mask update
of GradualMagnitudePruning the local shards of the weights and masks are recorded, so that the test can compare the
distributed threshold with a single-process one on the same whole weights. Run by tests/sharded/test_fsdp2_masks.py.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402
from lightning.pytorch.strategies import ModelParallelStrategy  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402

from lightning_compress.core.sharding import local_tensor  # noqa: E402
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning  # noqa: E402
from lightning_compress.sparsity.nm_sparsity import NMSparsity  # noqa: E402

torch.set_num_threads(1)
KILL_STEP = 6
SPARSITY = 0.6
NM_LAYERS = ("net.0", "net.4")


class Net(L.LightningModule):
    """8 -> 31 -> 24 -> 4; ``configure_model`` shards every layer and the network over the data-parallel mesh."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 31), nn.ReLU(), nn.Linear(31, 24), nn.ReLU(), nn.Linear(24, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_model(self) -> None:
        mesh = self.device_mesh["data_parallel"]
        for layer in (self.net[0], self.net[2], self.net[4]):
            fully_shard(layer, mesh=mesh)
        fully_shard(self.net, mesh=mesh)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class Record(Callback):
    """Placed before and after the pruning callback: the local shards around each of its mask updates."""

    def __init__(self, gmp: GradualMagnitudePruning, after: bool, records: list[dict[str, Any]]) -> None:
        self.gmp, self.after, self.records = gmp, after, records

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int) -> None:
        masks, step = self.gmp.masks, trainer.global_step
        if masks is None:
            return
        if not self.after and self.gmp._due(step) and self.gmp._target(step) > self.gmp.current_sparsity:
            self.records.append(
                {
                    "step": step,
                    "before_weights": [p.detach().clone() for p in masks.local_params],
                    "before_masks": [m.clone() for m in masks.masks],
                }  # fmt: skip
            )
        elif self.after and self.records and self.records[-1]["step"] == step and "after_masks" not in self.records[-1]:
            selection = self.gmp.last_selection
            self.records[-1].update(
                after_masks=[m.clone() for m in masks.masks], target=self.gmp.current_sparsity,
                threshold=selection.threshold, pruned=selection.pruned, total=selection.total,
                bytes_all_reduced=selection.bytes_all_reduced, bytes_gather=selection.bytes_gather,
            )  # fmt: skip


class Kill(Callback):
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int) -> None:
        if trainer.global_step == KILL_STEP:
            torch.distributed.barrier()  # both ranks are past the checkpoint of epoch 0
            os.kill(os.getpid(), signal.SIGKILL)


def data() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=g)
    y = (x[:, :4].sum(1) > 0).long() + 2 * (x[:, 4:].sum(1) > 0).long()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)


def main(out: Path, mode: str) -> None:
    L.seed_everything(0, verbose=False)
    gmp = GradualMagnitudePruning(SPARSITY, end_epoch=1, update_every_n_steps=2, verbose=0)
    nm = NMSparsity(2, 4, policy="dynamic", update_every_n_steps=2, verbose=0,
                    filter_fn=lambda module, fqn: fqn in NM_LAYERS)  # fmt: skip
    records: list[dict[str, Any]] = []
    callbacks: list[Callback] = [Record(gmp, False, records), gmp, Record(gmp, True, records), nm]
    callbacks.append(ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, save_top_k=-1, filename="{epoch}"))
    if mode == "kill":
        callbacks.append(Kill())
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1, timeout=timedelta(seconds=180))
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy=strategy, max_epochs=2, callbacks=callbacks, logger=False,
        enable_progress_bar=False, enable_model_summary=False, deterministic=True, num_sanity_val_steps=0,
    )  # fmt: skip
    module = Net()
    trainer.fit(module, data(), ckpt_path=out / "checkpoints" / "last.ckpt" if mode == "resume" else None)
    optimizer = trainer.optimizers[0]
    saved = {
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "weights": {n: local_tensor(p).detach().clone() for n, p in module.named_parameters()},
        "momentum": {
            n: local_tensor(optimizer.state[p]["momentum_buffer"]).clone() for n, p in module.named_parameters()
        },  # fmt: skip
        "row_start": {n: x.row_start for n, x in zip(gmp.masks.names, gmp.masks.layouts)},
        "gmp_names": gmp.masks.names,
        "gmp_masks": [m.clone() for m in gmp.masks.masks],
        "gmp_state": gmp.state_dict(),  # collectives: every rank calls them; rank 0 gets the whole masks
        "nm_names": nm.masks.names,
        "nm_masks": [m.clone() for m in nm.masks.masks],
        "nm_dense": [d.clone() for d in nm._dense],
        "nm_state": nm.state_dict(),
        "gmp_num_pruned": gmp.masks.num_pruned(),
        "records": records,
    }
    torch.save(saved, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
