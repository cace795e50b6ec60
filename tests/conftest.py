"""Test-wide settings: offline, two threads, quiet Lightning."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

# Nothing may download in tests: Hugging Face libraries read only what is installed.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


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
