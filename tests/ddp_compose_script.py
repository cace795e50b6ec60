"""Two CPU processes (gloo DDP) train a ``DistillationModule`` with ``GradualMagnitudePruning`` and a dynamic
``NMSparsity`` in one Trainer; each rank saves what it ends with to ``<out_dir>/rank<r>.pt``.

Rank 1 scales its student's weights at the start, so that masks computed locally from each rank's weights would
differ: only the broadcasts from rank 0 keep the masks the same on both ranks. Run by
``tests/test_composition_ddp.py``:

    python tests/ddp_compose_script.py OUT_DIR
"""

import functools
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from lightning_compress.distillation.distillation_module import DistillationModule
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning
from lightning_compress.sparsity.nm_sparsity import NMSparsity


def network() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))


class ScaleRank1(Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_rank == 1:
            g = torch.Generator().manual_seed(7)
            with torch.no_grad():
                for p in pl_module.student.parameters():
                    p.mul_(torch.rand(p.shape, generator=g) * 2)


def main(out_dir: Path) -> None:
    L.seed_everything(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=g)
    y = (x[:, :4].sum(1) > 0).long() + 2 * (x[:, 4:].sum(1) > 0).long()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    teacher = network()
    teacher_start = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = DistillationModule(
        network(), teacher, temperature=2.0, alpha=0.5, num_classes=4,
        optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9),
    )  # fmt: skip
    gmp = GradualMagnitudePruning(0.6, end_epoch=1, update_every_n_steps=1, verbose=0)
    nm = NMSparsity(policy="dynamic", update_every_n_steps=1, verbose=0)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, callbacks=[ScaleRank1(), gmp, nm], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, data)
    torch.save(
        {
            "world_size": trainer.world_size,
            "gmp": gmp.masks.state_dict(),
            "nm": nm.masks.state_dict(),
            "student": {k: v.detach().clone() for k, v in module.student.state_dict().items()},
            "teacher_unchanged": all(torch.equal(v, teacher_start[k]) for k, v in teacher.state_dict().items()),
            "teacher_requires_grad": any(p.requires_grad for p in teacher.parameters()),
        },
        out_dir / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
