"""A process killed (SIGKILL) in the middle of writing a file leaves the previous file byte for byte.

The writer runs in a forked child (``fork`` shares the parent's imports: no new interpreter to start) whose ``open`` in
``core.files`` writes half of the first large block, syncs it, reports ``STALLED`` and sleeps: the kill then lands
mid-write, deterministically. What may remain besides the target is
a temporary file named ``.<target name>.<random>.tmp``, which no loader reads (the decision documented in
``core.files``); the tests check both. One more test kills an unpatched writer at an arbitrary moment: the target is
then either the previous file or the complete new one, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import lightning_compress.core.files as files
from lightning_compress.distillation.teacher_cache import TeacherCache
from lightning_compress.export.compressed_format import load_compressed, save_compressed
from lightning_compress.quantization import convert_to_int8, prepare_qat, save_quantized


class _Stalling:
    """A file whose first large write stops half-way: the half is synced, then the writer reports and sleeps."""

    def __init__(self, f: Any, report: int) -> None:
        self.f, self.report = f, report

    def write(self, data: Any) -> int:
        data = memoryview(data).cast("B")
        if len(data) > 4096:
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            os.fsync(self.f.fileno())
            os.write(self.report, b"STALLED\n")
            time.sleep(600)
        return self.f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def __enter__(self) -> _Stalling:
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self.f.__exit__(*exc)


def _in_child(write: Callable[[], None], stall: bool, report: int) -> None:
    """Runs in the forked child only, which never returns to pytest."""
    try:
        torch.set_num_threads(1)  # as DataLoader workers do after a fork
        if stall:
            real_open = open
            files.open = lambda *args, **kwargs: _Stalling(real_open(*args, **kwargs), report)
        os.write(report, b"WRITING\n")
        write()
        os.write(report, b"DONE\n")
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        os.write(report, f"ERROR {err!r}\n".encode())
    finally:
        os._exit(0)


def _kill(write: Callable[[], None], stall: bool = True, delay: float = 0.0, timeout: float = 120.0) -> str:
    """Forks a writer (the parent's modules and tensors, no new interpreter), SIGKILLs it once it reports ``STALLED``
    (or ``delay`` seconds after it starts writing); returns the last line it reported."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _in_child(write, stall, write_fd)
    os.close(write_fd)
    lines = []
    try:
        with os.fdopen(read_fd) as reports:
            wanted = "STALLED" if stall else "WRITING"
            while not lines or lines[-1] not in (wanted, "DONE", "") and not lines[-1].startswith("ERROR"):
                ready, _, _ = select.select([reports], [], [], timeout)
                assert ready, f"the writer reported nothing in {timeout} s: {lines}"
                lines.append(reports.readline().strip())
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert lines[-1] == wanted, lines
    return lines[-1]


def _leftovers(folder: Path, target: Path) -> list[Path]:
    """Files beside ``target``; each must be a clearly named temporary file of it."""
    others = [p for p in folder.iterdir() if p != target]
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.[^/]+\.tmp$")
    assert all(pattern.match(p.name) for p in others), [p.name for p in others]
    return others


def test_save_compressed_killed_mid_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "model.lc.safetensors"
    previous = {"w": torch.randn(256, 256)}
    save_compressed(previous, path)
    before = path.read_bytes()
    new = {"w": torch.randn(512, 512)}
    _kill(lambda: save_compressed(new, path))
    assert path.read_bytes() == before
    assert torch.equal(load_compressed(path)["w"], previous["w"])
    leftovers = _leftovers(tmp_path, path)
    assert leftovers and 0 < leftovers[0].stat().st_size  # the half-written temporary file, never read


def test_save_quantized_killed_mid_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    path.write_bytes(b"the previous model")  # what was there must survive, whatever it is
    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    prepared = prepare_qat(nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)), x)
    with torch.no_grad():
        prepared(x)
    converted = convert_to_int8(prepared.eval(), compile=False)
    _kill(lambda: save_quantized(converted, path, x))
    assert path.read_bytes() == b"the previous model"
    _leftovers(tmp_path, path)


def test_teacher_cache_killed_mid_write_keeps_the_previous_file(tmp_path: Path) -> None:
    teacher = torch.nn.Linear(8, 50)
    cache = TeacherCache(tmp_path, "fp")
    with torch.no_grad():
        cache.logits(torch.randn(40, 8), teacher)
        path = cache.save()
        before = path.read_bytes()
        bigger = TeacherCache(tmp_path, "fp")
        bigger.logits(torch.randn(4000, 8), teacher)
    _kill(bigger.save)
    assert path.read_bytes() == before
    _leftovers(tmp_path, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the leftover temporary file is not even looked at
        assert TeacherCache(tmp_path, "fp").load() == 40


def test_a_kill_at_any_moment_leaves_the_old_or_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "big.lc.safetensors"
    save_compressed({"w": torch.ones(8, 8)}, path)
    before = path.read_bytes()
    state = {f"w{i}": torch.full((512, 512), float(i)) for i in range(24)}
    for delay in (0.0, 0.05, 0.3):  # before, during or after the write: no patched file, a real kill
        _kill(lambda: save_compressed(state, path), stall=False, delay=delay)
        if path.read_bytes() != before:  # the kill came after the rename: the new file, complete
            loaded = load_compressed(path)
            assert sorted(loaded) == sorted(state) and float(loaded["w23"][0, 0]) == 23.0
        _leftovers(tmp_path, path)
