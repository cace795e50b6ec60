"""The INT8 ONNX exports of ExportCallback and lc-export calibrated on training data (``export(calibration_data=)``):
the projection conv before the residual add of a small residual CNN runs as QLinearConv (no ConvInteger) and the add
as QLinearAdd; the callback draws its calibration batches from the training loader (never the validation data), and
lc-export from the training split of a run folder's data set or of ``--data``."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from runtimes import needs
from test_onnx_export import _Residual
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_compress.export import ExportCallback, ort_kernels
from lightning_compress.quantization.ptq import quantize
from lightning_compress.quantization.qat import QuantizationAwareTraining
from lightning_compress.training.classification import ClassificationModule

pytestmark = needs("onnx", "onnxruntime", "onnxscript")

export_module = importlib.import_module("lightning_compress.export.export")  # the package's `export` is the function

QUIET = dict(
    accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False
)


def _loader(n: int, seed: int, scale: float = 1.0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 8, 8, generator=g) * scale, torch.randint(0, 5, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16)


def test_the_callback_calibrates_an_int8_onnx_export_on_training_batches(tmp_path, monkeypatch) -> None:
    seen: list = []
    real_export = export_module.export

    def spy(model, path, format="onnx", **kwargs):
        seen.append((format, kwargs.get("calibration_data")))
        return real_export(model, path, format, **kwargs)

    monkeypatch.setattr(export_module, "export", spy)
    torch.manual_seed(0)
    module = ClassificationModule(_Residual(), num_classes=5, optimizer=lambda p: torch.optim.Adam(p, lr=1e-3))
    qat = QuantizationAwareTraining(evaluate_quantized=False, compile_int8=False, verbose=0)
    callback = ExportCallback(formats=["onnx"], dirpath=tmp_path / "exports", calibration_batches=3, verbose=0)
    train, val = _loader(64, 0), _loader(32, 1, scale=50.0)  # validation inputs far off: never calibrated on
    trainer = L.Trainer(max_epochs=1, callbacks=[qat, callback], default_root_dir=tmp_path, **QUIET)
    trainer.fit(module, train, val)
    assert len(seen) == 2  # the check at fit start and the epoch's export
    train_x = train.dataset.tensors[0]
    for fmt, calibration in seen:
        assert fmt == "onnx" and len(calibration) == 3
        assert all(torch.equal(b, train_x[16 * i : 16 * (i + 1)]) for i, b in enumerate(calibration))
    kernels = ort_kernels(tmp_path / "exports" / "epoch=000" / "model.onnx")
    assert kernels.ops["ConvInteger"] == 0 and kernels.ops["QLinearAdd"] == 1, kernels.summary()
    assert kernels.integer["QLinearConv"] == 3 and kernels.float_count == 0, kernels.summary()
    assert "val_onnx/acc" in trainer.callback_metrics


def test_a_float_model_is_exported_without_calibration_data(tmp_path, monkeypatch) -> None:
    seen: list = []
    real_export = export_module.export
    monkeypatch.setattr(
        export_module, "export", lambda m, p, f="onnx", **kw: seen.append(kw) or real_export(m, p, f, **kw)
    )
    module = ClassificationModule(_Residual(), num_classes=5, optimizer=lambda p: torch.optim.Adam(p, lr=1e-3))
    callback = ExportCallback(formats=["onnx"], dirpath=tmp_path / "exports", check_on_fit_start=False, verbose=0)
    L.Trainer(max_epochs=1, limit_train_batches=1, callbacks=[callback], **QUIET).fit(
        module, _loader(16, 0), _loader(16, 1)
    )
    assert len(seen) == 1 and seen[0]["calibration_data"] is None


@pytest.mark.parametrize("value", [33, -1, True, "8", 2.0])
def test_calibration_batches_is_validated(value) -> None:
    with pytest.raises(ValueError, match=r"`calibration_batches` must be an int in 0\.\.32"):
        ExportCallback(calibration_batches=value)
    with pytest.raises(ValueError, match=r"(?s)`every_n_epochs`.*`calibration_batches`"):
        ExportCallback(every_n_epochs=0, calibration_batches=value)


def _residual_int8() -> tuple[nn.Module, torch.Tensor]:
    """The residual CNN of test_onnx_export on one channel (the 8x8 digits), post-training quantized."""
    torch.manual_seed(0)
    net = _Residual()
    net.stem[0] = nn.Conv2d(1, 8, 3, padding=1)
    x = torch.rand(64, 1, 8, 8) * 16
    return quantize(net.eval(), x, calibration_batches=2, batch_size=32, compile=False), x


def test_lc_export_calibrates_an_int8_program_on_a_training_split(tmp_path, capsys) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
    from omegaconf import OmegaConf
    from test_train import FAST, compose_train

    from lightning_compress.cli.export import calibration_batches, main
    from lightning_compress.quantization.serialization import save_quantized

    run = tmp_path / "run"  # the folder of an lc-train run on the digits, lc-quantize's program written into it
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose_train(["experiment=digits_cnn", *FAST], run), run / ".hydra" / "config.yaml")
    batches = calibration_batches(str(run), None, [], 3)
    assert len(batches) == 3 and all(b.shape == (64, 1, 8, 8) for b in batches)  # digits: batches of 64, no labels
    assert calibration_batches(str(tmp_path / "x.pt2"), None, [], 3) is None  # neither a run nor --data
    int8, x = _residual_int8()
    (run / "ptq_int8").mkdir()
    program = run / "ptq_int8" / "model_int8.pt2"
    save_quantized(int8, program, x[:2])
    common = ["--format", "onnx", "--input-shape", "2,1,8,8", "--calibration-batches", "4"]

    out = tmp_path / "run.onnx"
    assert main([str(program), *common, "--output", str(out)]) == 0, capsys.readouterr().err
    kernels = ort_kernels(out)
    assert kernels.ops["ConvInteger"] == 0 and kernels.ops["QLinearAdd"] == 1, kernels.summary()
    assert "pass --data" not in capsys.readouterr().out

    bare = tmp_path / "bare.pt2"  # no run around it: ConvInteger and a warning without --data
    shutil.copy(program, bare)
    with pytest.warns(UserWarning, match="ConvInteger"):
        assert main([str(bare), *common, "--output", str(tmp_path / "bare.onnx")]) == 0
    assert "1 ConvInteger: pass --data" in capsys.readouterr().out
    assert ort_kernels(tmp_path / "bare.onnx").ops["ConvInteger"] == 1
    assert main([str(bare), *common, "--data", "digits", "--output", str(tmp_path / "data.onnx")]) == 0
    assert ort_kernels(tmp_path / "data.onnx").ops["ConvInteger"] == 0

    # user errors: exit 2 with the reason, nothing written
    bad = str(tmp_path / "bad.onnx")
    assert main([str(bare), *common, "--calibration-batches", "0", "--data", "nosuch", "--output", bad]) == 2
    err = capsys.readouterr().err
    assert "`--calibration-batches` must be an int in 1..32" in err and "`--data`" in err and "nosuch" in err
    fp16 = ["--format", "onnx-fp16", "--input-shape", "2,1,8,8", "--data", "digits", "--output", bad]
    assert main([str(bare), *fp16]) == 2 and "calibrates an INT8 model exported to onnx" in capsys.readouterr().err
    assert not Path(bad).exists()


def test_a_run_folder_override_is_typed_as_on_hydras_command_line(tmp_path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
    from omegaconf import OmegaConf
    from test_train import FAST, compose_train

    from lightning_compress.cli.export import calibration_batches

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose_train(["experiment=digits_cnn", *FAST], run), run / ".hydra" / "config.yaml")
    batches = calibration_batches(str(run), None, ["data.batch_size=16"], 2)  # the int 16, not the string '16'
    assert [b.shape[0] for b in batches] == [16, 16]
