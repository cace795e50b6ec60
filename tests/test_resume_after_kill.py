"""Resume after a real SIGKILL, for every compression callback: a 2-epoch run killed in its second epoch (a child
process kills itself: no exception, no hook, no ``finally`` runs) and resumed from its last checkpoint ends bit for
bit where an uninterrupted run ends: weights, buffers (BatchNorm statistics, observer ranges, scales), masks, the
N:M dense copy, the QAT phase and the distillation teacher cache (read back from the killed run's files).

The runs are in tests/resume_after_kill_runs.py. The in-process crash-and-resume tests of each callback (an exception
mid-epoch) are in the callbacks' own test modules; these add the kill of a real process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from resume_after_kill_runs import CONFIGS, run

SCRIPT = Path(__file__).with_name("resume_after_kill_runs.py")
# GMP and QAT INT8 in the fast suite; each further configuration costs a child process (a few seconds of imports)
SLOW = {"nm_fixed", "nm_dynamic", "one_shot", "qat_int4", "distillation_cache"}


def _kill_run(name: str, folder: Path) -> Path:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    step = str(CONFIGS[name].kill_step)
    done = subprocess.run([sys.executable, str(SCRIPT), name, str(folder), step], capture_output=True, text=True,
                          timeout=600, env=env)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, f"{name}: exit {done.returncode}\n{done.stderr[-3000:]}"
    last = folder / "checkpoints" / "last.ckpt"
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["epoch=0.ckpt", "last.ckpt"]
    saved = torch.load(last, weights_only=True)
    assert saved["epoch"] == 0 and 0 < saved["global_step"] < CONFIGS[name].kill_step
    return last


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CONFIGS])
def test_a_killed_run_resumed_from_its_last_checkpoint_ends_where_an_uninterrupted_one_ends(
    name: str, tmp_path: Path
) -> None:
    last = _kill_run(name, tmp_path / "killed")
    straight = run(name, tmp_path / "straight")
    resumed = run(name, tmp_path / "killed", ckpt_path=last)

    assert resumed["global_step"] == straight["global_step"] > CONFIGS[name].kill_step
    a, b = straight["state"], resumed["state"]
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), f"{name}: {key} differs"
    for one, other in zip(straight["callbacks"], resumed["callbacks"]):
        assert one.is_final and other.is_final, name
        assert one.describe_state() == other.describe_state()
        masks = getattr(one, "masks", None)
        if masks is not None:
            for x, y in zip(masks.masks, other.masks.masks):
                assert torch.equal(x, y), f"{name}: masks differ"
        for x, y in zip(getattr(one, "_dense", None) or [], getattr(other, "_dense", None) or []):
            assert torch.equal(x, y), f"{name}: the N:M dense copy differs"
    if (
        name == "distillation_cache"
    ):  # the resumed run served every teacher output of its epoch from the killed run's files
        cache = resumed["module"]._cache
        assert len(cache) == 64 and cache.hits == 64 and cache.misses == 0
        assert straight["module"]._cache.misses == 64  # the uninterrupted run computed them in its first epoch
