"""Missing, empty, truncated and foreign files given to every loader: a FileNotFoundError or ValueError that names
the file and says what was found, never a raw torch / zip / safetensors traceback; a flipped byte in a compressed file
is an error, never a changed value."""

from __future__ import annotations

import random
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from crafted_files import float_program_bytes

from lightning_compress.cli.model_spec import load_model
from lightning_compress.cli.report import load_for_report
from lightning_compress.cli.report import main as report_main
from lightning_compress.core.checkpoints import read_state_dict
from lightning_compress.distillation.teacher import load_teacher
from lightning_compress.distillation.teacher_cache import TeacherCache
from lightning_compress.export.compressed_format import load_compressed, save_compressed
from lightning_compress.models import SmallCNN
from lightning_compress.pruning.structured.serialization import load_pruned, save_pruned
from lightning_compress.quantization.serialization import load_quantized

FOUND = {
    "empty": ("empty file",),
    "random": ("binary data",),
    "foreign_zip": ("zip archive",),
    "text": ("text file",),
    "json": ("JSON file",),
    "truncated": ("truncated", "damaged"),
}


def _bad(kind: str, path: Path, valid: bytes) -> Path:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(b"\x13\x37" + random.Random(0).randbytes(500))
    elif kind == "foreign_zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes/readme.txt", "not a model")
    elif kind == "text":
        path.write_text("name,value\n1,2\n")
    elif kind == "json":
        path.write_text('{"model": "resnet18", "epochs": 3}')
    elif kind == "truncated":
        path.write_bytes(valid[: len(valid) // 2])
    return path


def _state_file(tmp_path: Path) -> bytes:
    torch.save({"state_dict": {f"model.{k}": v for k, v in SmallCNN().state_dict().items()}}, tmp_path / "v.ckpt")
    return (tmp_path / "v.ckpt").read_bytes()


def _compressed(tmp_path: Path) -> bytes:
    save_compressed(SmallCNN().state_dict(), tmp_path / "v.lc.safetensors")
    return (tmp_path / "v.lc.safetensors").read_bytes()


# loader name -> (suffix of the file, the valid file's bytes, the call)
LOADERS: dict[str, tuple[str, Callable[[Path], bytes], Callable[[Path], object]]] = {
    "load_compressed": (".lc.safetensors", _compressed, load_compressed),
    "load_quantized": (".pt2", lambda tmp: float_program_bytes(), lambda p: load_quantized(p, compile=False)),
    "load_teacher": (".ckpt", _state_file, lambda p: load_teacher(p, teacher_model=SmallCNN())),
    "read_state_dict": (".ckpt", _state_file, read_state_dict),
    "load_model --checkpoint": (".ckpt", _state_file,
                                lambda p: load_model("lightning_compress.models:SmallCNN", str(p))),
    "load_model --model": (".pt", lambda tmp: float_program_bytes(), lambda p: load_model(str(p))),
    "load_model --model .pt2": (".pt2", lambda tmp: float_program_bytes(), lambda p: load_model(str(p))),
    "lc-report": (".ckpt", _state_file, lambda p: load_for_report(str(p))),
}  # fmt: skip


@pytest.mark.parametrize("kind", FOUND)
@pytest.mark.parametrize("loader", LOADERS)
def test_a_bad_file_is_a_clear_error(tmp_path: Path, loader: str, kind: str) -> None:
    suffix, valid, call = LOADERS[loader]
    path = _bad(kind, tmp_path / f"bad{suffix}", valid(tmp_path))
    with pytest.raises(ValueError) as err:
        call(path)
    message = str(err.value)
    assert str(path) in message, message
    assert any(word in message for word in FOUND[kind]), message
    assert "must be" in message or "expected" in message, message  # what was expected


@pytest.mark.parametrize("loader", LOADERS)
def test_a_missing_file_is_named(tmp_path: Path, loader: str) -> None:
    suffix, _, call = LOADERS[loader]
    path = tmp_path / f"missing{suffix}"
    with pytest.raises(FileNotFoundError) as err:
        call(path)
    assert str(path) in str(err.value) and "no such file" in str(err.value)


def test_lc_report_exits_2_naming_a_missing_file(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(tmp_path / "nothing.ckpt")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "nothing.ckpt" in err and "`target`" in err and "--model" not in err


@pytest.mark.parametrize("kind", FOUND)
def test_a_pruned_folder_with_bad_weights(tmp_path: Path, kind: str) -> None:
    folder = save_pruned(SmallCNN(channels=(4, 8), hidden=16), tmp_path / "m")
    weights = folder / "model.safetensors"
    _bad(kind, weights, weights.read_bytes())
    with pytest.raises(ValueError) as err:
        load_pruned(folder)
    assert str(weights) in str(err.value) and any(w in str(err.value) for w in FOUND[kind]), str(err.value)


@pytest.mark.parametrize("kind", ["text", "json", "empty"])
def test_a_pruned_folder_with_a_bad_structure(tmp_path: Path, kind: str) -> None:
    folder = save_pruned(SmallCNN(channels=(4, 8), hidden=16), tmp_path / "m")
    _bad(kind, folder / "structure.json", b"")
    with pytest.raises(ValueError, match="structure.json") as err:
        load_pruned(folder)
    assert str(folder / "structure.json") in str(err.value)


@pytest.mark.parametrize("kind", [*FOUND, "flipped"])
def test_a_bad_teacher_cache_file_is_ignored_with_a_warning(tmp_path: Path, kind: str) -> None:
    cache = TeacherCache(tmp_path, "fp")
    with torch.no_grad():
        cache.logits(torch.randn(10, 4), torch.nn.Linear(4, 3))
    path = cache.save()
    data = bytearray(path.read_bytes())
    if kind == "flipped":
        data[-5] ^= 0x10
        path.write_bytes(bytes(data))
    else:
        _bad(kind, path, bytes(data))
    with pytest.warns(RuntimeWarning, match="ignored") as record:
        assert TeacherCache(tmp_path, "fp").load() == 0
    assert str(path) in str(record[0].message)


def test_a_teacher_cache_file_of_another_teacher_or_width_is_ignored(tmp_path: Path) -> None:
    other = TeacherCache(tmp_path / "other", "another")
    with torch.no_grad():
        other.logits(torch.randn(5, 4), torch.nn.Linear(4, 3))
    planted = tmp_path / "teacher-logits-fp.rank0.safetensors"
    planted.write_bytes(other.save().read_bytes())  # renamed to this teacher's name: the fingerprint inside differs
    with pytest.warns(RuntimeWarning, match="teacher 'another'"):
        assert TeacherCache(tmp_path, "fp").load() == 0
    planted.unlink()
    wide = TeacherCache(tmp_path, "fp")
    with torch.no_grad():
        wide.logits(torch.randn(5, 4), torch.nn.Linear(4, 7))  # a file of 7 logits per example ...
        wide.save()
        cache = TeacherCache(tmp_path, "fp")
        assert cache.load() == 5
        with pytest.warns(RuntimeWarning, match="another width"):  # ... for a teacher of 3: dropped, never served
            out = cache.logits(torch.randn(2, 4), torch.nn.Linear(4, 3))
    assert out.shape == (2, 3) and len(cache) == 2


def test_every_flipped_byte_of_a_compressed_file_is_caught(tmp_path: Path) -> None:
    w = torch.randn(16, 16)
    w[torch.rand(16, 16) < 0.8] = 0.0
    path = tmp_path / "m.lc.safetensors"
    save_compressed({"w": w, "b": torch.randn(16), "i8": torch.randn(8, 16)}, path, int8=lambda n, t: n == "i8")
    data = path.read_bytes()
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 1 << (i % 8)
        path.write_bytes(bytes(flipped))
        with pytest.raises(ValueError) as err:
            load_compressed(path)
        assert str(path) in str(err.value), (i, str(err.value))
    path.write_bytes(data)
    assert torch.equal(load_compressed(path)["w"], w)
