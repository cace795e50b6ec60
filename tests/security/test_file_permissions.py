"""Files and folders the library writes get the permissions of a new file under the umask (a group-shared cache
folder works for the group), not mkstemp's 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lightning_compress.core.files import atomic_folder, atomic_write_text
from lightning_compress.distillation.teacher_cache import TeacherCache
from lightning_compress.export.compressed_format import save_compressed
from lightning_compress.models import SmallCNN
from lightning_compress.pruning.structured.serialization import save_pruned


@pytest.fixture
def umask() -> Iterator[object]:
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_permissions_follow_the_umask(tmp_path: Path, umask, mask: int, file_mode: int, dir_mode: int) -> None:
    umask(mask)
    assert _mode(Path(atomic_write_text(tmp_path / "report.json", "{}"))) == file_mode
    save_compressed({"w": torch.zeros(4, 4)}, tmp_path / "m.lc.safetensors")
    assert _mode(tmp_path / "m.lc.safetensors") == file_mode
    cache = TeacherCache(tmp_path / "cache", "fp")
    with torch.no_grad():
        cache.logits(torch.randn(3, 4), torch.nn.Linear(4, 2))
    assert _mode(cache.save()) == file_mode
    folder = save_pruned(SmallCNN(channels=(4, 8), hidden=16), tmp_path / "pruned")
    assert _mode(folder) == dir_mode
    assert {_mode(p) for p in folder.iterdir()} == {file_mode}


def test_a_folder_is_swapped_in_whole(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("half")
        raise RuntimeError("crash while writing")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # the old folder, untouched
    with atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # replaced, nothing of the old one mixed in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary sibling left
