"""ExportCallback in a Trainer (the deployed model's metrics logged and selected on, an unexportable model failing
before training) and lc-export over an lc-train run folder (exit status 2 on a user error)."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from runtimes import needs, run_elsewhere
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_compress.export import ExportCallback, load_onnx
from lightning_compress.models import SmallCNN
from lightning_compress.training.classification import ClassificationModule

pytestmark = needs("onnx", "onnxruntime", "onnxscript")

QUIET = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)


def _data(n: int = 96, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.3
    x[torch.arange(n), 0, y % 8, y // 8 * 4] += 3.0  # a class-dependent bright pixel: learnable in a few steps
    return DataLoader(TensorDataset(x, y), batch_size=32)


def _module(network: nn.Module | None = None) -> ClassificationModule:
    torch.manual_seed(0)
    network = network or SmallCNN(channels=(8, 16), hidden=32, image_size=8)
    return ClassificationModule(network, num_classes=10, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))


def test_the_callback_logs_onnx_runtime_metrics_that_a_checkpoint_selects_on(tmp_path) -> None:
    callback = ExportCallback(formats=["onnx"], every_n_epochs=1, dirpath=tmp_path / "exports", verbose=0)
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_onnx/acc", mode="max", save_top_k=1)
    trainer = L.Trainer(max_epochs=3, callbacks=[callback, best], default_root_dir=tmp_path, **QUIET)
    module = _module()
    trainer.fit(module, _data(), _data(seed=1))
    logged = trainer.callback_metrics
    assert "val_onnx/acc" in logged and "val/acc" in logged
    # the fp32 ONNX graph computes what the network does: the same predictions on every validation image
    assert float(logged["val_onnx/acc"]) == pytest.approx(float(logged["val/acc"]), abs=1 / 96)
    assert float(logged["val_onnx/acc"]) > 0.2  # trained: chance is 0.1
    assert best.best_model_score is not None and float(best.best_model_score) == callback.metrics["val_onnx/acc"]
    exported = sorted(p.relative_to(tmp_path / "exports").as_posix() for p in (tmp_path / "exports").rglob("*.onnx"))
    assert exported == ["epoch=002/model.onnx"]  # the previous epoch's export removed (keep_all=False)
    x = next(iter(_data(seed=1)))[0]
    out = run_elsewhere("""
import onnxruntime as ort
s = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
result = {"out": torch.from_numpy(s.run(["logits"], {"input": inputs["x"].numpy()})[0])}
""", tmp_path / "exports" / "epoch=002", x=x)["out"]  # fmt: skip
    with torch.no_grad():
        assert torch.allclose(out, module.model.eval()(x), atol=1e-4)


@torch.library.custom_op("lc_export_cb_test::odd", mutates_args=())
def _odd(x: torch.Tensor) -> torch.Tensor:
    return x.cos()


@_odd.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class _Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _odd(self.body(x))


def test_an_unexportable_model_fails_the_run_before_training(tmp_path) -> None:
    module = _module(_Odd())
    before = {k: v.clone() for k, v in module.state_dict().items()}
    callback = ExportCallback(formats=["onnx"], dirpath=tmp_path / "exports", verbose=0)
    trainer = L.Trainer(max_epochs=1, callbacks=[callback], default_root_dir=tmp_path, **QUIET)
    with pytest.raises(RuntimeError, match=r"cannot be deployed as 'onnx'.*lc_export_cb_test\.odd"):
        trainer.fit(module, _data(), _data(seed=1))
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())  # no step was taken
    assert not (tmp_path / "exports").exists()


def test_lc_export_over_an_lc_train_run_folder(tmp_path, capsys) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
    from omegaconf import OmegaConf
    from test_train import FAST, compose_train

    from lightning_compress.cli.export import main
    from lightning_compress.cli.train import train

    run = tmp_path / "run"
    cfg = compose_train(["experiment=digits_cnn", "trainer.max_epochs=1", "logger=csv", *FAST], run)
    train(cfg)
    (run / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    out = tmp_path / "model.onnx"
    assert main([str(run), "--format", "onnx", "--input-shape", "2,1,8,8", "--output", str(out)]) == 0
    assert f"wrote onnx {out}" in capsys.readouterr().out
    assert load_onnx(out)(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    # user errors: exit 2 with the reason, nothing written
    assert main([str(run), "--format", "onnx", "--input-shape", "2,1,8,8", "--output", str(out)]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main([str(run), "--format", "hf-compressed-tensors", "--output", str(tmp_path / "hf")]) == 2
    assert "transformers models" in capsys.readouterr().err and not (tmp_path / "hf").exists()
    assert main([str(tmp_path / "missing"), "--format", "onnx", "--input-shape", "2,1,8,8",
                 "--output", str(tmp_path / "m.onnx")]) == 2  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main([str(run), "--format", "tflite", "--output", str(tmp_path / "m.tflite")])
    assert info.value.code == 2
