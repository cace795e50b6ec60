"""lc-train runs that must not go silently wrong: mistyped config values and a monitor no module logs are caught
before training, ``ckpt_path=last`` resumes the newest run of the task, and the summary describes the tested weights."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest
import torch
from test_train import FAST, compose_train

from lightning_compress.cli.resume import resolve_ckpt_path
from lightning_compress.cli.train import train
from lightning_compress.cli.train_config import check_train_config, precision_values

DIGITS = ["experiment=digits_cnn", "logger=csv", *FAST]


def test_a_non_integer_epoch_count_names_the_key_before_anything_is_built(tmp_path: Path) -> None:
    cfg = compose_train([*DIGITS, "trainer.max_epochs=abc"], tmp_path)
    with pytest.raises(
        ValueError, match=r"^lc-train config: `trainer.max_epochs` must be an int >= -1 or null, got 'abc'$"
    ):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "csv").exists()


def test_every_mistyped_trainer_argument_is_listed_at_once(tmp_path: Path) -> None:
    bad = {
        "seed": ("x", "`seed` must be an int or null, got 'x'"),
        "+trainer.max_steps": ("2.5", "`trainer.max_steps` must be an int >= -1 (-1: no limit), got 2.5"),
        "trainer.devices": ("zero", '`trainer.devices` must be an int >= 1, -1 (all), "auto"'),
        "trainer.precision": ("17", "`trainer.precision` can be 64, 32, 16, "),
        "trainer.accumulate_grad_batches": ("0", "`trainer.accumulate_grad_batches` must be an int >= 1, got 0"),
        "trainer.gradient_clip_val": ("-1", "`trainer.gradient_clip_val` must be a number >= 0 or null, got -1"),
        "+trainer.limit_train_batches": ("1.5", "`trainer.limit_train_batches` must be an int >= 0 (batches), a float"),
        "+trainer.val_check_interval": ("often", "`trainer.val_check_interval` must be an int >= 1 (batches)"),
        "monitor_mode": ("maximum", "`monitor_mode` can be min or max, got 'maximum'"),
    }
    cfg = compose_train([*DIGITS, *(f"{key}={value}" for key, (value, _) in bad.items())], tmp_path)
    with pytest.raises(ValueError) as err:
        check_train_config(cfg)
    message = str(err.value)
    for key, (_, expected) in bad.items():
        assert expected in message, key
    assert message.count("; ") == len(bad) - 1  # one message, each problem once


@pytest.mark.parametrize(
    "override",
    [
        "trainer.precision=bf16-mixed",
        "trainer.precision=32",
        "trainer.devices=auto",
        "trainer.devices='0,1'",
        "trainer.devices=[0,1]",
        "trainer.max_epochs=null",
        "+trainer.max_steps=-1",
        "+trainer.val_check_interval=0.5",
        "+trainer.val_check_interval=25",
        "+trainer.val_check_interval='00:00:05:00'",
        "+trainer.limit_val_batches=0",
        "+trainer.limit_train_batches=0.25",
        "trainer.gradient_clip_val=1",
        "seed=null",
    ],
)
def test_values_lightning_accepts_pass(override: str, tmp_path: Path) -> None:
    check_train_config(compose_train([*DIGITS, override], tmp_path))


def test_precision_values_come_from_lightning() -> None:
    values = precision_values()
    assert {"bf16-mixed", "16-mixed", "32-true", 32, "64"} <= set(values) and 17 not in values


def test_a_monitor_no_module_logs_is_caught_before_training(tmp_path: Path) -> None:
    cfg = compose_train([*DIGITS, "monitor=acc"], tmp_path)
    with pytest.raises(ValueError, match=r"`monitor` names 'acc', which no module of this run logs during fit \(did"
                                         r" you mean 'val/acc'\?\); ClassificationModule logs train/loss, val/loss,"
                                         r" val/acc"):  # fmt: skip
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()
    cfg = compose_train([*DIGITS, "monitor=val/loss", "monitor_mode=min", "trainer.max_epochs=1"], tmp_path / "ok")
    assert train(cfg) is not None  # a declared metric is fine


# -------------------------------------------------------------------------------------------------- ckpt_path=last
def test_ckpt_path_last_without_an_earlier_run_says_where_it_looked(tmp_path: Path) -> None:
    run = tmp_path / "outputs" / "train" / "2024-01-02_00-00-00"
    with pytest.raises(FileNotFoundError, match=r"no run has a last checkpoint: nothing matches .*outputs/train/\*/"):
        resolve_ckpt_path("last", str(run))
    with pytest.raises(FileNotFoundError, match=r"`ckpt_path` must be a checkpoint file or 'last', got '.*nope.ckpt'"):
        resolve_ckpt_path(str(tmp_path / "nope.ckpt"), str(run))
    assert resolve_ckpt_path(None, str(run)) is None


def test_ckpt_path_last_picks_the_newest_run_and_in_a_sweep_the_same_job(tmp_path: Path) -> None:
    runs = tmp_path / "outputs" / "train"
    for i, name in enumerate(["2024-01-01_00-00-00", "2024-01-03_00-00-00", "2024-01-02_00-00-00"]):
        (runs / name / "checkpoints").mkdir(parents=True)
        (runs / name / "checkpoints" / "last.ckpt").write_bytes(b"x")
        os.utime(runs / name / "checkpoints" / "last.ckpt", (time.time() + i, time.time() + i))
    here = runs / "2024-01-04_00-00-00"
    assert resolve_ckpt_path("last", str(here)) == str(runs / "2024-01-02_00-00-00" / "checkpoints" / "last.ckpt")
    sweeps = tmp_path / "multirun" / "train"
    for sweep in ("a", "b"):
        for job in ("0", "1"):
            (sweeps / sweep / job / "checkpoints").mkdir(parents=True)
            (sweeps / sweep / job / "checkpoints" / "last.ckpt").write_bytes(b"x")
    os.utime(sweeps / "a" / "1" / "checkpoints" / "last.ckpt", (time.time() + 9, time.time() + 9))
    found = resolve_ckpt_path("last", str(sweeps / "c" / "1"), multirun=True)
    assert found == str(sweeps / "a" / "1" / "checkpoints" / "last.ckpt")


def test_ckpt_path_last_resumes_the_latest_run_of_the_task(tmp_path: Path) -> None:
    runs = tmp_path / "outputs" / "train"
    train(compose_train([*DIGITS, "trainer.max_epochs=1"], runs / "2024-01-01_00-00-00"))
    first = runs / "2024-01-01_00-00-00" / "checkpoints" / "last.ckpt"
    assert torch.load(first, weights_only=True)["epoch"] == 0

    second = runs / "2024-01-02_00-00-00"
    train(compose_train([*DIGITS, "trainer.max_epochs=2", "ckpt_path=last"], second))
    summary = json.loads((second / "summary.json").read_text())
    assert summary["resumed from"] == str(first)
    with (second / "csv" / "metrics.csv").open() as f:
        epochs = {row["epoch"] for row in csv.DictReader(f) if row.get("train/loss")}
    assert epochs == {"1"}  # the resumed run trained the second epoch only
    assert torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
