"""Two CPU processes (gloo DDP) prune one model; each rank saves its masks to ``<out_dir>/rank<r>.pt``.

Rank 1 perturbs its own weights at the start, so that magnitude masks computed locally would differ between ranks:
only the broadcast from rank 0 makes them agree. Run by ``tests/test_gradual_magnitude_pruning.py``:

    python tests/ddp_gmp_script.py OUT_DIR
"""

import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning


class Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 32), nn.Linear(32, 4)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.fc2(torch.relu(self.fc1(x))), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class PerturbRank1(Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.start = pl_module.fc1.weight.detach().clone()
        if trainer.global_rank == 1:
            with torch.no_grad():
                g = torch.Generator().manual_seed(7)
                for p in (pl_module.fc1.weight, pl_module.fc2.weight):
                    p.mul_(torch.rand(p.shape, generator=g) * 2)


def main(out_dir: Path) -> None:
    L.seed_everything(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=g)
    y = (x.sum(1) > 0).long()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    pruning = GradualMagnitudePruning(0.75, end_epoch=1, update_every_n_steps=1, verbose=0)
    perturb = PerturbRank1()
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, callbacks=[perturb, pruning], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Net(), data)
    masks = pruning.masks
    state = masks.state_dict()
    torch.save(
        {
            **state,
            "world_size": trainer.world_size,
            "pruned_zeros": sum(int((p.detach() == 0).sum()) for p in masks.params),
            "weights_differ_from_rank0_start": bool((perturb.start != 0).any()),
        },
        out_dir / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
