"""DistillationModule with an FSDP2-sharded teacher: the inference_mode trap of torch 2.14 (an FSDP2 module that once
ran under inference_mode fails at later forwards) is avoided by running sharded teachers under no_grad."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("teacher_inference_mode_run.py")
ROOT = Path(__file__).resolve().parents[2]


def test_sharded_teacher_runs_repeatedly_without_grads(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PORT": "29547"}
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout[-2000:] + proc.stderr[-3000:]
