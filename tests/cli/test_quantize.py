"""lc-quantize: a model spec and a checkpoint, calibrated on a conf/data set, writes the INT8 model and the table."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lightning_compress.cli.quantize import main
from lightning_compress.models import SmallCNN
from lightning_compress.quantization import load_quantized


def test_lc_quantize_writes_the_int8_model_and_the_table(tmp_path: Path) -> None:
    (tmp_path / "digits_model.py").write_text(
        "from lightning_compress.models import SmallCNN\n"
        "def build():\n    return SmallCNN(channels=(8, 16), hidden=32, image_size=8)\n"
    )
    torch.manual_seed(0)
    torch.save(SmallCNN(channels=(8, 16), hidden=32, image_size=8).state_dict(), tmp_path / "weights.pt")
    out = tmp_path / "out"
    summary = main([
        f"{tmp_path / 'digits_model.py'}:build", "--checkpoint", str(tmp_path / "weights.pt"), "--data", "digits",
        "--calibration-batches", "2", "--no-latency", "--output", str(out),
    ])  # fmt: skip
    assert [row["model"] for row in summary["rows"]] == ["fp32 eager", "bf16 autocast", "INT8 (static, histogram)"]
    fp32, _, int8 = (row["accuracy"] for row in summary["rows"])
    assert 0 <= int8 <= 1 and abs(int8 - fp32) <= 0.05  # an untrained model: the INT8 copy agrees with it
    assert "| fp32 eager |" in (out / "ptq.md").read_text()
    assert json.loads((out / "ptq.json").read_text())["rows"][2]["accuracy"] == int8
    loaded = load_quantized(out / "model_int8.pt2", compile=False)
    assert loaded(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_lc_train_with_ptq_int8_then_lc_quantize_over_the_run_folder(tmp_path: Path) -> None:
    from test_train import FAST, compose_train

    from lightning_compress.cli.train import train

    overrides = ["experiment=digits_cnn", "compression=ptq_int8", "compression.ptq_int8.calibration_batches=2",
                 "compression.ptq_int8.compile_int8=false", "trainer.max_epochs=2", "logger=csv", *FAST]  # fmt: skip
    cfg = compose_train(overrides, tmp_path)
    train(cfg)
    summary = json.loads((tmp_path / "summary.json").read_text()) if (tmp_path / "summary.json").exists() else {}
    logged = (next(tmp_path.rglob("metrics.csv"))).read_text().splitlines()[0]
    assert "val_int8/acc" in logged and "test_int8/acc" in logged, (logged, summary)
    (tmp_path / ".hydra").mkdir(exist_ok=True)
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    result = main([str(tmp_path), "--calibration-batches", "2", "--no-latency"])
    assert Path(result["output"]) == tmp_path / "ptq_int8" / "model_int8.pt2"
    fp32, _, int8 = (row["accuracy"] for row in result["rows"])
    assert fp32 > 0.3 and abs(fp32 - int8) <= 0.05  # a (briefly) trained model, its INT8 copy close to it
