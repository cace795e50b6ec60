"""Crafted files run no code on any load path: each test hands a loader a file whose unpickling would create a marker
file, asserts the load is refused with a clear error naming the file, and that the marker does not exist; the control
(the explicit opt-in, or torch's own loader) shows the same file does create it."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import pytest
import torch
from crafted_files import PT2_ATTACKS, crafted_pickle_bytes, crafted_pt2, crafted_torch_file, float_program_bytes

from lightning_compress.cli.model_spec import load_model
from lightning_compress.cli.report import load_for_report
from lightning_compress.cli.report import main as report_main
from lightning_compress.core.checkpoints import UnsafeLoadWarning
from lightning_compress.distillation.teacher import load_teacher
from lightning_compress.distillation.teacher_cache import TeacherCache
from lightning_compress.export.compressed_format import LEGACY_FORMAT, load_compressed
from lightning_compress.models import SmallCNN
from lightning_compress.pruning.structured.serialization import load_pruned, save_pruned
from lightning_compress.quantization.serialization import load_quantized


def _ckpt(marker_object):
    return {"state_dict": {"model.features.0.weight": marker_object}, "epoch": 1}


WRAPS = {"whole_object": lambda m: m, "inside_a_checkpoint": _ckpt}


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code-ran.marker"


@contextlib.contextmanager
def no_unsafe_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsafeLoadWarning)
        yield


# ----------------------------------------------------------------------------------------------------- the teacher
@pytest.mark.parametrize("wrap", WRAPS)
def test_teacher_path_never_falls_back_to_unpickling(tmp_path: Path, marker: Path, wrap: str) -> None:
    path = crafted_torch_file(tmp_path / "teacher.pt", marker, WRAPS[wrap])
    with no_unsafe_warning(), pytest.raises(ValueError, match="allow_pickle=True") as err:
        load_teacher(path, teacher_model=SmallCNN())
    assert str(path) in str(err.value) and "io.open" in str(err.value)  # the global it would have called
    assert not marker.exists()


def test_teacher_opt_in_unpickles_with_a_warning(tmp_path: Path, marker: Path) -> None:
    path = crafted_torch_file(tmp_path / "teacher.pt", marker)
    with pytest.warns(UnsafeLoadWarning, match="teacher.pt"), pytest.raises(ValueError):
        load_teacher(path, allow_pickle=True)  # unpickles (the control), then finds no module
    assert marker.exists()


# ------------------------------------------------------------------------------------------------ load_quantized
@pytest.mark.parametrize("how", PT2_ATTACKS)
def test_pt2_with_pickled_entries_is_refused(tmp_path: Path, marker: Path, how: str) -> None:
    path = crafted_pt2(tmp_path / "model.pt2", marker, how)
    with pytest.raises(ValueError, match="allow_pickle=True") as err:
        load_quantized(path, compile=False)
    assert str(path) in str(err.value)
    assert not marker.exists()
    with contextlib.suppress(Exception):  # the control: torch's own loader runs the crafted entry
        torch.export.load(path)
    assert marker.exists()


def test_plain_program_loads_without_the_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "float.pt2"
    path.write_bytes(float_program_bytes())
    with no_unsafe_warning():
        model = load_quantized(path, compile=False)
    assert model(torch.randn(2, 4)).shape == (2, 3)


# ------------------------------------------------------------------------------------------------------- lc-report
@pytest.mark.parametrize("name", ["model.pt", "last.ckpt", "old.lcz"])
def test_lc_report_checks_the_format_before_unpickling(tmp_path: Path, marker: Path, capsys, name: str) -> None:
    wrap = {"model.pt": WRAPS["whole_object"], "last.ckpt": _ckpt,
            "old.lcz": lambda m: {"format": LEGACY_FORMAT, "tensors": {"w": m}}}[name]  # fmt: skip
    path = crafted_torch_file(tmp_path / name, marker, wrap)
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(path) in err and "--allow-pickle" in err
    assert not marker.exists()


@pytest.mark.parametrize("how", PT2_ATTACKS)
def test_lc_report_refuses_a_crafted_pt2(tmp_path: Path, marker: Path, how: str) -> None:
    path = crafted_pt2(tmp_path / "m.pt2", marker, how)
    with pytest.raises(ValueError, match="would unpickle or run"):
        load_for_report(str(path))
    assert not marker.exists()


# ------------------------------------------------------------------------------------------- model specs (lc-bench)
def test_model_spec_file_needs_allow_pickle(tmp_path: Path, marker: Path) -> None:
    path = crafted_torch_file(tmp_path / "model.pt", marker)
    with pytest.raises(ValueError, match="allow_pickle=True") as err:
        load_model(str(path))
    assert str(path) in str(err.value) and not marker.exists()
    with pytest.warns(UnsafeLoadWarning), pytest.raises(ValueError, match="not a pickled nn.Module"):
        load_model(str(path), allow_pickle=True)  # the control: the opt-in unpickles
    assert marker.exists()


@pytest.mark.parametrize("how", PT2_ATTACKS)
def test_model_spec_pt2_is_inspected(tmp_path: Path, marker: Path, how: str) -> None:
    with pytest.raises(ValueError, match="would unpickle or run"):
        load_model(str(crafted_pt2(tmp_path / "m.pt2", marker, how)))
    assert not marker.exists()


def test_model_spec_checkpoint_is_never_unpickled(tmp_path: Path, marker: Path) -> None:
    path = crafted_torch_file(tmp_path / "x.ckpt", marker, _ckpt)
    with pytest.raises(ValueError, match="x.ckpt"):
        load_model("lightning_compress.models:SmallCNN", str(path), allow_pickle=True)  # not even with the opt-in
    assert not marker.exists()


def _run_folder(tmp_path: Path, model_yaml: str) -> Path:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / ".hydra" / "config.yaml").write_text(f"model:\n{model_yaml}\ndata:\n  _target_: torch.nn.Identity\n")
    return run


def test_run_folder_with_a_malicious_checkpoint(tmp_path: Path, marker: Path) -> None:
    run = _run_folder(tmp_path, "  _target_: lightning_compress.models.SmallCNN\n  num_classes: 10")
    crafted_torch_file(run / "checkpoints" / "last.ckpt", marker, _ckpt)
    with pytest.raises(ValueError, match="last.ckpt"):
        load_model(str(run))
    assert not marker.exists()


MALICIOUS_CONFIGS = {
    "a_builtin": ("  _target_: builtins.open\n  _args_: ['{m}', 'w']", "model._target_"),
    "torch_load": ("  _target_: torch.load\n  f: '{m}'", "model._target_"),
    "torch_hub": ("  _target_: torch.hub.load\n  repo_or_dir: x/y\n  model: z", "model._target_"),
    "nested": ("  _target_: torch.nn.Sequential\n  _args_:\n    - _target_: builtins.open\n      _args_: ['{m}', 'w']",
               "model._args_[0]._target_"),
    "deep_kwarg": ("  _target_: lightning_compress.models.SmallCNN\n  channels:\n    _target_: os.system\n"
                   "    _args_: ['touch {m}']", "model.channels._target_"),
    "remote_code": ("  _target_: transformers.AutoModel.from_pretrained\n  pretrained_model_name_or_path: x\n"
                    "  trust_remote_code: true", "model.trust_remote_code"),
    "allow_pickle": ("  _target_: lightning_compress.load_teacher\n  source: t.pt\n  allow_pickle: true",
                     "model.allow_pickle"),
    "decoded": ("  _target_: torch.nn.Sequential\n  _args_:\n"
                "    - \"${{oc.decode:'{{_target_: builtins.open, _args_: [{m}, w]}}'}}\"",
                "model._args_[0]._target_"),
}  # fmt: skip


@pytest.mark.parametrize("case", MALICIOUS_CONFIGS)
def test_run_folder_config_may_build_only_models(tmp_path: Path, marker: Path, case: str) -> None:
    yaml, key = MALICIOUS_CONFIGS[case]
    run = _run_folder(tmp_path, yaml.format(m=marker))
    with pytest.raises(ValueError) as err:
        load_model(str(run))
    message = str(err.value)
    assert key in message and "config.yaml" in message, message
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------------ lc-oneshot
def test_oneshot_ckpt_is_read_safely_before_any_work(tmp_path: Path, marker: Path, capsys) -> None:
    from lightning_compress.cli.oneshot import main as oneshot_main

    path = crafted_torch_file(tmp_path / "last.ckpt", marker, _ckpt)
    with pytest.raises(SystemExit) as exit_info:
        oneshot_main([str(tmp_path / "no-model-needed"), "--ckpt", str(path), "--sparsity", "0.5"])
    assert exit_info.value.code == 2 and str(path) in capsys.readouterr().err
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------- teacher cache
def test_planted_pickle_in_the_teacher_cache_is_ignored(tmp_path: Path, marker: Path) -> None:
    cache = TeacherCache(tmp_path, "abc123")
    cache.file().write_bytes(crafted_pickle_bytes(marker))  # the name anyone can compute, a pickle inside
    with pytest.warns(RuntimeWarning, match="ignored"):
        assert cache.load() == 0
    assert not marker.exists()


# -------------------------------------------------------------------------------------------- compressed, pruned
def test_old_lcz_pickle_is_refused(tmp_path: Path, marker: Path) -> None:
    path = crafted_torch_file(tmp_path / "m.lcz", marker, lambda m: {"format": LEGACY_FORMAT, "tensors": {"w": m}})
    with pytest.raises(ValueError, match="allow_pickle") as err:
        load_compressed(path)
    assert str(path) in str(err.value) and not marker.exists()


@pytest.mark.parametrize("target", ["builtins.open", "os.system", "torch.load"])
def test_pruned_folder_builds_only_allowed_architectures(tmp_path: Path, marker: Path, target: str) -> None:
    folder = save_pruned(SmallCNN(channels=(4, 8), hidden=16), tmp_path / "small")
    structure = (folder / "structure.json").read_text()
    (folder / "structure.json").write_text(
        structure.replace('"lightning_compress.models.cnn.SmallCNN"', f'"{target}"', 1)
    )
    with pytest.raises(ValueError, match="is not allowed") as err:
        load_pruned(folder)
    assert target in str(err.value) and "structure.json" in str(err.value)
    assert not marker.exists()
