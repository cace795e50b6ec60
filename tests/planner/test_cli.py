"""``lc-compress``: bad options exit 2 before any work; the real path (real PTQ INT8, the lc-bench timer, real files)
on the digits SmallCNN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_compress.cli.compress import main

SPEC = f"{Path(__file__).with_name('digits_model.py')}:trained_cnn"


def test_bad_options_exit_2_naming_each_before_any_work(tmp_path, capsys) -> None:
    code = main([SPEC, "--max-drop", "-1", "--latency-ratio", "2", "--steps", "ptq_int8,magic", "--out",
                 str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    for text in (
        "`--max-drop` must be a number >= 0 or None, got -1.0",
        "`--latency-ratio` must be in (0, 1] or None, got 2.0",
        "--steps can name ptq_int8",
    ):
        assert text in err, err
    assert not (tmp_path / "run").exists()


def test_no_target_and_unknown_data_exit_2(tmp_path, capsys) -> None:
    assert main([SPEC, "--max-drop", "0.5", "--out", str(tmp_path / "a")]) == 2
    assert "a budget needs a target on this machine" in capsys.readouterr().err
    assert main(["no/such/run", "--max-drop", "0.5", "--size-ratio", "0.3", "--data", "digits"]) == 2
    assert "must be an lc-train run folder" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_real_walk_measures_ptq_int8_and_writes_every_output(tmp_path, capsys) -> None:
    from safetensors.torch import load_file

    from lightning_compress.data import DigitsDataModule
    from lightning_compress.models import SmallCNN
    from lightning_compress.quantization.calibration import evaluate

    out = tmp_path / "run"
    code = main([SPEC, "--data", "digits", "--max-drop", "5", "--size-mb", "10", "--steps", "ptq_int8,nm24",
                 "--calibration-batches", "2", "--repeats", "2", "--retries", "0", "--no-export", "--no-progress",
                 "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr()
    state = json.loads((out / "planner_state.json").read_text())
    dm = DigitsDataModule(batch_size=64)
    dm.setup("fit")
    fp32 = SmallCNN(num_classes=10, channels=(8, 16), hidden=32, image_size=8)
    fp32.load_state_dict(load_file(out / "candidates" / "fp32" / "model.safetensors"))
    assert state["baseline"]["metric"] == evaluate(fp32.eval(), list(dm.val_dataloader()))  # the fp32 model, exactly
    [ptq] = state["records"]  # the budget is met: nm24 is not run
    assert "nm24: not run: ptq_int8 already meets the budget" in capsys.readouterr().out
    [candidate] = ptq["candidates"]
    artifact = out / "candidates" / "ptq_int8" / "model.pt2"
    assert candidate["artifact"] == str(artifact) and candidate["measurement"]["size_bytes"] == artifact.stat().st_size
    assert candidate["measurement"]["latency_ms"] > 0 and candidate["shortfalls"] == []
    assert abs(candidate["measurement"]["metric"] - state["baseline"]["metric"]) < 0.05
    assert (out / "chosen" / "model.pt2").read_bytes() == artifact.read_bytes()
    assert {"candidates.csv", "candidates.md", "report.md", "pareto.png"} <= {p.name for p in out.iterdir()}
    assert "**Chosen: ptq_int8**" in (out / "report.md").read_text()


def test_language_model_options_are_checked_before_any_work(tmp_path, capsys) -> None:
    out = tmp_path / "lm"
    code = main([str(tmp_path / "missing"), "--metric", "perplexity", "--max-ppl-increase", "ten",
                 "--weight-bytes-ratio", "3", "--window", "1", "--text", str(tmp_path / "no.txt"),
                 "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    for text in ("`--max-ppl-increase` must be a number > 0", "`--weight-bytes-ratio` must be in (0, 2]",
                 "`model` must be a Hugging Face causal-LM folder", "`--window` must be",
                 "`--text` must be"):  # fmt: skip
        assert text in err, err
    assert main([SPEC, "--max-drop", "1", "--max-ppl-increase", "10%", "--weight-bytes-ratio", "0.35"]) == 2
    err = capsys.readouterr().err
    assert "exactly one of `--max-drop`" in err and "--max-ppl-increase (e.g. 10%) goes with --metric perplexity" in err
    assert main([str(tmp_path), "--metric", "perplexity", "--max-drop", "1", "--weight-bytes-ratio", "0.35",
                 "--gguf-file", "x.gguf"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "--metric perplexity needs it" in err and "`--gguf-file` must be a file inside" in err


def test_max_ppl_increase_reads_percent_or_fraction() -> None:
    from lightning_compress.cli.compress import _ppl_increase

    assert _ppl_increase("10%") == pytest.approx(0.1) and _ppl_increase("0.25") == 0.25
    assert _ppl_increase(None) is None and _ppl_increase("ten") == "ten"


def test_the_fine_tunes_start_at_the_runs_learning_rate(tmp_path, capsys) -> None:
    from lightning_compress.cli.compress import _run_lr

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        "model:\n  _target_: lightning_compress.models.huggingface_classifier\n  name_or_path: ${lc_offline_minilm:}\n"
        "optimizer:\n  _target_: torch.optim.AdamW\n  _partial_: true\n  lr: 5.0e-05\n"
    )
    assert _run_lr(str(run)) == 5e-5  # a MiniLM run: 5e-5, not the planner's 1e-3 default
    assert _run_lr(str(tmp_path)) is None  # no run folder
    assert main([SPEC, "--max-drop", "0.5", "--size-ratio", "0.3", "--lr", "0", "--out", str(tmp_path / "a")]) == 2
    assert "`--lr` must be a number > 0, got 0.0" in capsys.readouterr().err
