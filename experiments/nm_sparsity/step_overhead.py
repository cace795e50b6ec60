"""Training-step cost of NMSparsity (fixed, dynamic) over plain training, on CPU.

The 512-2048-2048-10 MLP of experiments/gmp_vs_modelpruning at batch 64, SGD with momentum, 2:4 from the first step;
the three runs are interleaved and repeated; per run the median step time after 10 warm-up steps, then the median of
the per-repeat ratios to plain training.

    .venv/bin/python experiments/nm_sparsity/step_overhead.py            # about 2 minutes on 2 cores
"""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from lightning_compress.sparsity.nm_sparsity import NMSparsity

QUIET = dict(
    accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False
)


class MLP(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


class StepTimer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._start)


def median_step(policy: Optional[str], steps: int = 60) -> float:
    L.seed_everything(0, verbose=False)
    x, y = torch.randn(steps * 64, 512), torch.randint(0, 10, (steps * 64,))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    timer = StepTimer()
    callbacks: list[Callback] = [timer]
    if policy is not None:
        callbacks.insert(0, NMSparsity(policy=policy, verbose=0))
    L.Trainer(max_epochs=1, callbacks=callbacks, **QUIET).fit(MLP(), data)
    return statistics.median(timer.times[10:])


def main() -> None:
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    ratios: dict[str, list[float]] = {"fixed": [], "dynamic": []}
    for repeat in range(3):
        plain = median_step(None)
        for policy in ratios:
            ratios[policy].append(median_step(policy) / plain)
        latest = ", ".join(f"{p} x{r[-1]:.3f}" for p, r in ratios.items())
        print(f"repeat {repeat}: plain {1e3 * plain:.1f} ms/step, {latest}", flush=True)
    medians = ", ".join(f"{p} x{statistics.median(r):.3f}" for p, r in ratios.items())
    print(f"median step time over plain training: {medians}")


if __name__ == "__main__":
    main()
