"""Test-wide settings (offline, two threads, quiet Lightning) and the helpers several test modules share: the quiet
Trainer settings `QUIET`, the small `TinyNet` the mask callbacks train, its data `loader` and `fit`.

pytest imports this file as the module ``conftest`` with ``tests/`` on ``sys.path``, so test modules in every
subfolder write ``from conftest import QUIET, TinyNet, fit, loader``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

# Nothing may download in tests: Hugging Face libraries read only what is installed.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import lightning as L  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from torch import nn  # noqa: E402

THREADS = 2
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True, scope="module")
def _same_threads_in_every_module() -> Iterator[None]:
    """Each test module starts on ``THREADS`` threads, whatever an earlier module set: the resume tests compare a
    child process (``THREADS`` threads) with this one bit for bit, and another thread count changes float sums."""
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


@pytest.fixture
def run_ddp_script(tmp_path):
    """``run_ddp_script("name.py")`` runs ``tests/name.py tmp_path`` in a fresh interpreter (a script that starts 2 CPU
    DDP processes and saves ``rank<r>.pt`` files there), asserts it succeeded and returns the loaded files by rank."""

    def run(script: str) -> list[dict]:
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).with_name(script)), str(tmp_path)],
            capture_output=True, text=True, timeout=600, env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    return run


# Trainer settings for the small CPU runs of the tests: no logger, bar, summary or checkpoints; deterministic.
QUIET: dict[str, Any] = dict(
    accelerator="cpu",
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    enable_checkpointing=False,
    deterministic=True,
    num_sanity_val_steps=0,
)


def assert_pruned_are_zero(callback: Any) -> int:
    """Asserts that the weights ``callback.masks`` masks out are exactly zero; 1 if it checked, 0 before any masks."""
    if callback is None or callback.masks is None:
        return 0
    for name, p, m in zip(callback.masks.names, callback.masks.params, callback.masks.masks):
        assert (p.detach()[~m] == 0).all(), f"a pruned weight of {name} is non-zero"
    return 1


class TinyNet(L.LightningModule):
    """A conv and two linears on the 8 features of `loader`; no dropout, so that runs are deterministic.

    What differs between the test modules is set by class attributes, in a subclass:

    - ``kernel_size`` / ``padding`` of the ``Conv1d(1, 4)``; ``fc1`` takes its flattened output (kernel 3, padding 1:
      ``Linear(32, 24)``; kernel 4, padding 2: ``Linear(36, 24)``, every reduction dim a multiple of 4).
    - ``watch``: the attribute a test sets to the mask callback it checks (``model.pruning = pruning``). Before
      gradient clipping, the gradients of its masked weights must be zero (for a callback with a ``policy``, only
      when that is ``"fixed"``); with manual optimisation, its masked weights must be zero after each optimizer's step.
    """

    kernel_size: int = 3
    padding: int = 1
    watch: str = "pruning"

    def __init__(self, optimizer: str = "sgd", manual: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, self.kernel_size, padding=self.padding)  # (B, 1, 8) -> (B, 4, positions)
        self.fc1 = nn.Linear(4 * (8 + 2 * self.padding - self.kernel_size + 1), 24)
        self.fc2 = nn.Linear(24, 4)
        self.optimizer = optimizer
        self.automatic_optimization = not manual
        self.training_steps_run = 0
        setattr(self, self.watch, None)
        self.clip_checks = 0

    @property
    def watched(self) -> Optional[Callback]:
        return getattr(self, self.watch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x.unsqueeze(1))).flatten(1)
        return self.fc2(torch.relu(self.fc1(h)))

    def training_step(self, batch: Any, batch_idx: int) -> Optional[torch.Tensor]:
        self.training_steps_run += 1
        x, y = batch
        if self.automatic_optimization:
            return nn.functional.cross_entropy(self(x), y)
        for opt in self.optimizers():
            opt.zero_grad()
            self.manual_backward(nn.functional.cross_entropy(self(x), y))
            opt.step()
            assert_pruned_are_zero(self.watched)  # after each optimizer's step, inside the step
        return None

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_acc", (self(x).argmax(-1) == y).float().mean())

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        s = self.watched
        if s is not None and s.masks is not None and getattr(s, "policy", "fixed") == "fixed":
            for p, m in zip(s.masks.params, s.masks.masks):
                assert p.grad is None or (p.grad[~m] == 0).all(), "grads of pruned weights must be zero before clipping"
            self.clip_checks += 1
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> Any:
        if not self.automatic_optimization:
            return [
                torch.optim.SGD([*self.conv.parameters(), *self.fc1.parameters()], lr=0.05, momentum=0.9),
                torch.optim.Adam(self.fc2.parameters(), lr=0.01),
            ]
        if self.optimizer == "adamw":
            return torch.optim.AdamW(self.parameters(), lr=0.01, weight_decay=0.1)
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def loader(n: int = 64, batch_size: int = 8) -> torch.utils.data.DataLoader:
    """``n`` samples of 8 features (seeded), 4 classes: the signs of the sums of the first and last 4 features."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, :4].sum(1) > 0).long() + 2 * (x[:, 4:].sum(1) > 0).long()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def fit(model: L.LightningModule, callbacks: list[Callback], max_epochs: int = 3, **kwargs: Any) -> L.Trainer:
    """Fits ``model`` on `loader` with the `QUIET` settings (``kwargs`` override them)."""
    trainer = L.Trainer(max_epochs=max_epochs, callbacks=callbacks, **{**QUIET, **kwargs})
    trainer.fit(model, loader())
    return trainer
