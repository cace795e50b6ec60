"""Bad input, as a careful user would give it, across the API and the console scripts (issue 16): every case asserts
the error type and that the message names the argument or the file (and the bad value, or what was found); crafted
files assert that no code ran.

The console scripts are called in-process through their ``main(argv)`` (``lc-train`` through ``train(cfg)``), so the
module stays fast. Cases whose behaviour is still vague in a file owned elsewhere are ``xfail(strict=True)``: they
flip (and fail the suite) when fixed, and the marker goes. The same catalog, run in fresh processes against two
checkouts and counted, is ``experiments/reliability/bad_inputs.py``.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
from torch import nn

import lightning_compress as lc
from lightning_compress.models import SmallCNN

PAYLOAD = "import os; open(os.environ['LC_BAD_MARKER'], 'w').write('code ran')"


class _Crafted:
    def __reduce__(self) -> tuple:
        return (exec, (PAYLOAD,))


@dataclass
class Files:
    """Paths of the damaged, foreign and crafted files (one set for the module), and the case's own folder."""

    root: Path
    tmp: Path = field(default=Path("."))

    def __getattr__(self, name: str) -> Path:  # files.blank -> root/blank.pt ...
        return self.root / _NAMES[name]


_NAMES = {
    "gone": "gone.pt",
    "blank": "blank.pt",
    "noise": "noise.bin",
    "notes": "notes.txt",
    "json": "conf.json",
    "zip": "other.zip",
    "crafted": "crafted.pt",
    "crafted_lcz": "crafted.lcz",
    "crafted_pt2": "crafted.pt2",
    "state": "state.pt",
    "cut": "cut.pt",
    "linear": "linear_state.pt",
    "packed": "packed.lcz",
    "flipped": "flipped.lcz",
    "cut_lcz": "cut.lcz",
    "run": "run",
    "gmp_run": "gmp_run",
    "sweep": "sweep",
    "blank_csv": "blank.csv",
    "tiny": "tiny.py",
}


def _metrics_csv(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("epoch,step,train/loss,compress/sparsity,test/acc\n" + "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def files_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "blank.pt").write_bytes(b"")
    (root / "blank.csv").write_bytes(b"")
    (root / "noise.bin").write_bytes(random.Random(0).randbytes(4096))
    (root / "notes.txt").write_text("These are notes, not weights.\n")
    (root / "conf.json").write_text(json.dumps({"weights": [1, 2, 3]}))
    with zipfile.ZipFile(root / "other.zip", "w") as z:
        z.writestr("readme.txt", "someone else's archive")
    torch.save(_Crafted(), root / "crafted.pt")
    shutil.copy(root / "crafted.pt", root / "crafted.lcz")
    program = torch.export.export(nn.Linear(2, 2), (torch.randn(1, 2),))
    torch.export.save(program, root / "plain.pt2")
    crafted = io.BytesIO()
    torch.save(_Crafted(), crafted)
    with zipfile.ZipFile(root / "plain.pt2") as src, zipfile.ZipFile(root / "crafted.pt2", "w") as dst:
        for info in src.infolist():  # the weight entry becomes a pickle, which torch.export.load unpickles
            data = src.read(info.filename)
            if info.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                config["config"]["weight"]["use_pickle"] = True
                data = json.dumps(config).encode()
            elif info.filename.endswith("data/weights/weight_0"):
                data = crafted.getvalue()
            dst.writestr(info.filename, data)
    torch.save(SmallCNN(channels=(16, 32), hidden=64, image_size=8).state_dict(), root / "state.pt")
    (root / "cut.pt").write_bytes((root / "state.pt").read_bytes()[: (root / "state.pt").stat().st_size // 2])
    torch.save(nn.Linear(3, 2).state_dict(), root / "linear_state.pt")
    (root / "tiny.py").write_text(
        "import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(8, 2))\n"
    )
    lc.save_compressed({"w": torch.arange(1.0, 257.0).reshape(16, 16)}, root / "packed.lcz")
    raw = bytearray((root / "packed.lcz").read_bytes())
    at = bytes(raw).find(struct.pack("<4f", 100.0, 101.0, 102.0, 103.0))
    raw[at + 2 if at >= 0 else len(raw) // 2] ^= 0x10
    (root / "flipped.lcz").write_bytes(bytes(raw))
    (root / "cut.lcz").write_bytes(bytes(raw[: len(raw) // 2]))
    (root / "run" / "csv").mkdir(parents=True)
    (root / "run" / "csv" / "metrics.csv").write_text("epoch,step,train/loss\n0,0,2.3\n0,1,2.2\n")
    _metrics_csv(root / "empty_column" / "csv" / "metrics.csv", ["0,0,2.3,,", "0,1,2.2,,", "0,1,,,0.5"])
    _metrics_csv(root / "gmp_run" / "csv" / "metrics.csv", ["0,0,2.3,0.0,", "0,1,2.2,0.5,", "0,1,,,0.5"])
    for job in ("0", "1"):
        (root / "sweep" / job / ".hydra").mkdir(parents=True)
        (root / "sweep" / job / ".hydra" / "overrides.yaml").write_text("- compression=none\n")
        _metrics_csv(root / "sweep" / job / "csv" / "metrics.csv", ["0,1,2.2,,0.5"])
    return root


@pytest.fixture
def files(files_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Files:
    monkeypatch.setenv("LC_BAD_MARKER", str(tmp_path / "CODE_RAN"))
    return Files(files_root, tmp_path)


@dataclass(frozen=True)
class Bad:
    """One bad input: ``call(files)`` must raise ``error`` with every string of ``must`` in its message."""

    id: str
    call: Callable[[Files], Any]
    error: type[BaseException] | tuple[type[BaseException], ...]
    must: tuple[str, ...]
    owner: Optional[str] = None  # a file owned elsewhere whose behaviour is still vague: xfail(strict) with the reason

    def param(self) -> Any:
        marks = [pytest.mark.xfail(strict=True, reason=f"owned by {self.owner}")] if self.owner else []
        return pytest.param(self, id=self.id, marks=marks)


def _run(files: Files, bad: Bad) -> str:
    with pytest.raises(bad.error) as info:
        bad.call(files)
    return str(info.value.args[0]) if isinstance(info.value, KeyError) and info.value.args else str(info.value)


def _opt() -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)


def _fit_on_an_empty_loader() -> None:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    empty = DataLoader(TensorDataset(torch.randn(0, 8), torch.zeros(0, dtype=torch.long)))
    trainer.fit(lc.ClassificationModule(nn.Linear(8, 2), num_classes=2), empty)


def _meta(builder: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return builder()


def _nan(shape: tuple[int, ...]) -> torch.Tensor:
    w = torch.randn(*shape)
    w.view(-1)[1] = float("nan")
    return w


def _cnn() -> SmallCNN:
    return SmallCNN(image_size=8)


def _distill(**kw: Any) -> Any:
    args = {"student": _cnn(), "teacher": _cnn(), "num_classes": 10, **kw}
    return lc.DistillationModule(**args)


def _digits(**kw: Any) -> Any:
    from lightning_compress.data import DigitsDataModule

    return DigitsDataModule(**kw)


# ------------------------------------------------------------------------------------ the API: values and types
API = [
    Bad("magnitude-sparsity-str", lambda f: lc.magnitude_mask(torch.randn(4), "0.5"), ValueError,
        ("`sparsity`", "'0.5'", "a number in [0, 1]")),
    Bad("magnitude-sparsity-1.5", lambda f: lc.magnitude_mask(torch.randn(4), 1.5), ValueError, ("`sparsity`", "1.5")),
    Bad("magnitude-nan", lambda f: lc.magnitude_mask(_nan((4,)), 0.5), ValueError, ("NaN", "`weight` (1 of 4)")),
    Bad("magnitude-weight-list", lambda f: lc.magnitude_mask([1.0, 2.0], 0.5), TypeError, ("`weight`", "list")),
    Bad("global-tensor-not-list", lambda f: lc.global_magnitude_masks(torch.randn(4, 4), 0.5), TypeError,
        ("`weights`", "Tensor of shape (4, 4)", "list")),
    Bad("global-nan-names-index", lambda f: lc.global_magnitude_masks([torch.ones(3), _nan((5,))], 0.5), ValueError,
        ("`weights[1]` (1 of 5)",)),
    Bad("global-meta", lambda f: lc.global_magnitude_masks([torch.empty(2, device="meta")], 0.5), ValueError,
        ("`weights[0]`", "meta device")),
    Bad("nm-nan", lambda f: lc.nm_mask(_nan((2, 8)), 2, 4), ValueError, ("NaN", "`weight`", "N:M")),
    Bad("nm-not-tensor", lambda f: lc.nm_mask([[1.0, 2.0, 3.0, 4.0]], 2, 4), TypeError, ("`weight`", "list")),
    Bad("nm-shape", lambda f: lc.nm_mask(torch.randn(4, 6), 2, 4), ValueError, ("(4, 6)", "m=4")),
    Bad("nm-n-float", lambda f: lc.nm_mask(torch.randn(4, 8), n=2.0, m=4), ValueError, ("`n`", "2.0")),
    Bad("partial-nm-mask-list", lambda f: lc.partial_nm_mask(torch.randn(2, 8), 2, 4, 0.5, [True]), ValueError,
        ("`current_mask`", "list")),
    Bad("schedule-step-str", lambda f: lc.sparsity_at_step("5", 0, 10, 0.0, 0.5), ValueError, ("`step`", "'5'")),
    Bad("schedule-final-1.5", lambda f: lc.sparsity_at_step(5, 0, 10, 0.0, 1.5), ValueError, ("`final`", "1.5")),
    Bad("schedule-end-before-start", lambda f: lc.sparsity_at_step(5, 10, 5, 0.0, 0.5), ValueError,
        ("`end_step`", "`start_step` (10)", "got 5")),
    Bad("warmup-steps-str", lambda f: lc.warmup_lr(_opt(), total_steps="100"), ValueError,
        ("`total_steps`", "'100'", "int >= 1")),
    Bad("warmup-steps-float", lambda f: lc.warmup_lr(_opt(), total_steps=10.5), ValueError, ("`total_steps`", "10.5")),
    Bad("warmup-not-an-optimizer", lambda f: lc.warmup_lr(None, 10), ValueError, ("`optimizer`", "NoneType")),
    Bad("warmup-decay", lambda f: lc.warmup_lr(_opt(), 10, decay="exp"), ValueError, ("`decay`", "'exp'", "cosine")),
    Bad("kd-temperature-str", lambda f: lc.kd_loss(torch.randn(2, 3), torch.randn(2, 3), "4"), ValueError,
        ("`temperature`", "'4'", "> 0")),
    Bad("kd-logits-list", lambda f: lc.kd_loss([[1.0]], torch.randn(1, 1), 2.0), TypeError,
        ("`student_logits`", "list")),
    Bad("kd-shapes", lambda f: lc.kd_loss(torch.randn(2, 3), torch.randn(2, 4), 2.0), ValueError, ("(2, 3)", "(2, 4)")),
    Bad("feature-loss-kind", lambda f: lc.feature_loss(torch.ones(2), torch.ones(2), "l1"), ValueError,
        ("`kind`", "'l1'", "mse")),
    Bad("select-filter-fn-str", lambda f: lc.select_layers(nn.Linear(2, 2), filter_fn="Linear"), ValueError,
        ("`filter_fn`", "'Linear'", "callable")),
    Bad("select-skip-str", lambda f: lc.prunable_weights(nn.Linear(2, 2), skip_first_conv="false"), ValueError,
        ("`skip_first_conv`", "'false'", "bool")),
    Bad("select-model-str", lambda f: lc.prunable_weights("model.pt"), ValueError, ("`module`", "str", "nn.Module")),
    Bad("find-network-str", lambda f: lc.find_network("net"), TypeError, ("`module`", "str", "nn.Module")),
    Bad("pack-mask-list", lambda f: lc.pack_mask([True, False]), TypeError, ("`mask`", "list")),
    Bad("masks-list", lambda f: lc.ParameterMasks([nn.Parameter(torch.ones(2))]), TypeError, ("`params`", "list")),
    Bad("masks-meta", lambda f: lc.ParameterMasks({"fc.weight": nn.Parameter(torch.empty(2, device="meta"))}),
        ValueError, ("meta device", "fc.weight")),
    Bad("masks-set-list", lambda f: lc.ParameterMasks({"w": nn.Parameter(torch.ones(2))}).set_masks({"w": [True]}),
        ValueError, ("'w'", "list")),
    Bad("report-meta", lambda f: lc.compression_report(_meta(lambda: nn.Sequential(nn.Linear(4, 2)))), ValueError,
        ("`source`", "meta device", "0.weight")),
    Bad("cls-empty-train-loader", lambda f: _fit_on_an_empty_loader(), ValueError,
        ("ClassificationModule", "train dataloader is empty (0 batches)", "limit_train_batches=0")),
    Bad("report-state-meta", lambda f: lc.compression_report({"fc.weight": torch.empty(2, 2, device="meta")}),
        ValueError, ("`source`", "meta device", "fc.weight")),
    Bad("sparsity-report-meta", lambda f: lc.sparsity_report(_meta(lambda: nn.Sequential(nn.Linear(4, 2)))),
        ValueError, ("meta device", "0.weight")),
    Bad("report-str", lambda f: lc.compression_report("model.pt"), TypeError, ("`source`", "str")),
    Bad("sparse-blocksize-0", lambda f: _sparse_layers().to_sparse_weight(torch.eye(4), "bsr", blocksize=0),
        ValueError, ("`blocksize`", "got 0")),
    Bad("sparse-layers-format", lambda f: _sparse_layers().to_sparse_layers(nn.Linear(4, 4), fmt="dense"), ValueError,
        ("`fmt`", "'dense'", "csr")),
    Bad("semi-structured-filter-str", lambda f: lc.to_semi_structured_(nn.Linear(4, 4), filter_fn="fc"), ValueError,
        ("`filter_fn`", "'fc'")),
    Bad("units-to-keep-1.5", lambda f: _gates().units_to_keep(torch.rand(8), 1.5), ValueError, ("`fraction`", "1.5")),
    Bad("unit-gate-0", lambda f: _gates().UnitGate(nn.Linear(4, 2), units=0), ValueError, ("`units`", "got 0")),
    Bad("gates-empty-loader", lambda f: _gates().gate_importance(
        nn.Linear(6, 2), {"h": _gates().UnitGate(nn.Linear(6, 2), 6)}, []), ValueError, ("`dataloader`", "no batch")),
    Bad("cnn-channels-int", lambda f: SmallCNN(channels=16), ValueError, ("`channels`", "got 16", "sequence")),
    Bad("cnn-channels-str", lambda f: SmallCNN(channels="16,32"), ValueError, ("`channels`", "got '16,32'")),
    Bad("cnn-input-size", lambda f: _cnn()(torch.randn(2, 1, 28, 28)), ValueError,
        ("(B, 1, 8, 8)", "image_size=8", "(2, 1, 28, 28)")),
    Bad("cnn-input-dtype", lambda f: _cnn()(torch.zeros(2, 1, 8, 8, dtype=torch.long)), ValueError,
        ("floating", "torch.int64")),
    Bad("student-channels-str", lambda f: lc.small_cnn_student(SmallCNN(), channels="8,16"), ValueError,
        ("`channels`", "'8,16'")),
    Bad("layer-subset-not-hf", lambda f: lc.layer_subset_student(nn.Linear(2, 2), every=1), ValueError,
        ("`teacher`", "Hugging Face", "Linear")),
    Bad("pruned-student-calibration", lambda f: lc.pruned_student(_cnn(), None, channels=0.5), ValueError,
        ("`calibration`", "NoneType")),
    Bad("digits-fraction-tiny", lambda f: _digits(val_fraction=0.0001), ValueError,
        ("`val_fraction`", "0.0001", "at least one")),
    Bad("digits-fraction-str", lambda f: _digits(val_fraction="0.1"), ValueError, ("`val_fraction`", "'0.1'")),
    Bad("digits-batch-float", lambda f: _digits(batch_size=32.0), ValueError, ("`batch_size`", "32.0")),
    Bad("split-metrics-str", lambda f: _split_data_module(metrics="acc"), ValueError, ("`metrics`", "'acc'")),
    Bad("split-task", lambda f: _split_data_module(task="classify"), ValueError, ("`task`", "'classify'")),
    Bad("torchvision-name-list", lambda f: _models().torchvision_model(["resnet18"]), ValueError, ("`name`",)),
    Bad("hf-name-none", lambda f: _models().huggingface_classifier(None), ValueError, ("`name_or_path`", "None")),
    Bad("distill-student-meta", lambda f: _distill(student=_meta(_cnn)), ValueError, ("`student`", "meta device")),
    Bad("distill-teacher-meta", lambda f: _distill(teacher=_meta(_cnn)), ValueError, ("`teacher`", "meta device")),
    Bad("distill-alpha", lambda f: _distill(alpha=2), ValueError, ("`alpha`", "2", "[0, 1]")),
    Bad("distill-features-str", lambda f: _distill(features="features.0"), ValueError, ("`features`", "features.0")),
    # constructors of other files, already clear
    Bad("gmp-sparsity-str", lambda f: lc.GradualMagnitudePruning(final_sparsity="0.9"), ValueError,
        ("`final_sparsity`", "'0.9'")),
    Bad("gmp-every-float", lambda f: lc.GradualMagnitudePruning(0.5, update_every_n_steps=2.5), ValueError,
        ("`update_every_n_steps`", "2.5")),
    Bad("nm-sparsity-n-equals-m", lambda f: lc.NMSparsity(n=4, m=4), ValueError, ("`n`", "4")),
    Bad("qat-scheme", lambda f: lc.QuantizationAwareTraining(scheme="int3"), ValueError, ("`scheme`", "int3")),
    Bad("cls-metrics-str", lambda f: lc.ClassificationModule(nn.Linear(4, 3), num_classes=3, metrics="acc"),
        ValueError, ("`metrics`", "'acc'")),
    Bad("oneshot-method", lambda f: lc.one_shot_prune(nn.Linear(8, 4), [torch.randn(2, 8)], method="magic",
                                                      sparsity=0.5), ValueError, ("`method`", "magic")),
]  # fmt: skip


def _sparse_layers() -> Any:
    from lightning_compress.sparsity import sparse_layers

    return sparse_layers


def _gates() -> Any:
    from lightning_compress.pruning.structured import unit_gates

    return unit_gates


def _models() -> Any:
    from lightning_compress import models

    return models


def _split_data_module(**kw: Any) -> Any:
    from lightning_compress.data import SplitDataModule

    return SplitDataModule(num_classes=2, batch_size=4, **kw)


@pytest.mark.parametrize("bad", [b.param() for b in API])
def test_api_bad_value_or_type_is_named(bad: Bad, files: Files) -> None:
    message = _run(files, bad)
    for text in bad.must:
        assert text in message, f"{text!r} not in {message!r}"


# ------------------------------------------------------------------------- files given to the loaders of the library
FILES_OWNER = "the file-format engineer"
FILE_CASES = [
    Bad("compressed-missing", lambda f: lc.load_compressed(f.root / "gone.lcz"), FileNotFoundError, ("gone.lcz",)),
    *[
        Bad(f"compressed-{name}", lambda f, name=name: lc.load_compressed(getattr(f, name)), ValueError,
            (_NAMES[name],))
        for name in ("blank", "cut_lcz", "noise", "notes", "json", "zip")
    ],
    Bad("compressed-flipped-bit", lambda f: lc.load_compressed(f.flipped), ValueError, ("flipped.lcz",)),
    Bad("quantized-missing", lambda f: lc.load_quantized(f.root / "gone.pt2", compile=False), FileNotFoundError,
        ("gone.pt2",)),
    Bad("quantized-random", lambda f: lc.load_quantized(f.noise, compile=False), ValueError, ("noise.bin",)),
    Bad("quantized-float-model", lambda f: lc.save_quantized(nn.Sequential(nn.Linear(4, 2)), f.tmp / "q.pt2",
                                                             torch.randn(2, 4)), ValueError, ("float",)),
    Bad("teacher-missing", lambda f: _distill(teacher=f.gone), FileNotFoundError, ("gone.pt",)),
    *[
        Bad(f"teacher-{name}", lambda f, name=name: _distill(teacher=getattr(f, name), teacher_model=_cnn()),
            ValueError, (_NAMES[name],))
        for name in ("blank", "cut", "noise", "json")
    ],
    Bad("teacher-other-model", lambda f: _distill(teacher=f.linear, teacher_model=_cnn()), ValueError,
        ("linear_state.pt", "do not fit")),
    Bad("state-dict-missing", lambda f: _checkpoints().read_state_dict(f.gone, "`init_from`"), FileNotFoundError,
        ("`init_from`", "gone.pt")),
    Bad("state-dict-zip", lambda f: _checkpoints().read_state_dict(f.zip, "`init_from`"), ValueError,
        ("`init_from`", "other.zip")),
    Bad("state-dict-other-model", lambda f: _checkpoints().load_network_weights(_cnn(), f.linear, "`--checkpoint`"),
        ValueError, ("`--checkpoint`", "linear_state.pt", "do not fit")),
]  # fmt: skip

CRAFTED = [
    Bad("crafted-teacher", lambda f: _distill(teacher=f.crafted), ValueError, ("crafted.pt",)),
    Bad("crafted-compressed", lambda f: lc.load_compressed(f.crafted_lcz), ValueError, ("crafted.lcz",)),
    Bad("crafted-quantized-pt2", lambda f: lc.load_quantized(f.crafted_pt2, compile=False), ValueError,
        ("crafted.pt2",)),
    Bad("crafted-state-dict", lambda f: _checkpoints().read_state_dict(f.crafted, "`init_from`"), ValueError,
        ("`init_from`", "crafted.pt")),
]  # fmt: skip


def _checkpoints() -> Any:
    from lightning_compress.core import checkpoints

    return checkpoints


@pytest.mark.parametrize("planted", ["crafted", "noise", "blank"])
def test_a_planted_teacher_cache_file_runs_no_code_and_is_ignored_by_name(planted: str, files: Files) -> None:
    cache = lc.TeacherCache(files.tmp / "cache", fingerprint="f00d")
    (files.tmp / "cache").mkdir()
    shutil.copy(getattr(files, planted), cache.file(0))
    with pytest.warns(RuntimeWarning, match=cache.file(0).name.replace(".", r"\.")):
        assert cache.load() == 0
    assert not (files.tmp / "CODE_RAN").exists(), "the crafted file's payload ran"


@pytest.mark.parametrize("bad", [b.param() for b in FILE_CASES])
def test_a_missing_damaged_or_foreign_file_is_named(bad: Bad, files: Files) -> None:
    message = _run(files, bad)
    for text in bad.must:
        assert text in message, f"{text!r} not in {message!r}"


@pytest.mark.parametrize("bad", [b.param() for b in CRAFTED])
def test_a_crafted_file_runs_no_code_and_is_refused_by_name(bad: Bad, files: Files) -> None:
    try:
        message = _run(files, bad)
    finally:
        ran = (files.tmp / "CODE_RAN").exists()
    assert not ran, "the crafted file's payload ran"
    for text in bad.must:
        assert text in message, f"{text!r} not in {message!r}"


# ------------------------------------------------------------------------------------- the console scripts, in-process
def _main(script: str) -> Callable[[list[str]], Any]:
    import importlib

    return importlib.import_module(f"lightning_compress.cli.{script}").main


def _plot(*argv: Any) -> Any:
    return _main("plot")([str(a) for a in argv])


def _report(*argv: Any) -> Any:
    return _main("report")([str(a) for a in argv])


def _bench(f: Files, *argv: Any) -> Any:
    quick = ["--input-shape", "2,8", "--paths", "fp32 eager", "--warmup", "1", "--repeats", "1", "--no-plot",
             "--sparsities", "0.5", "--out", str(f.tmp / "bench")]  # fmt: skip
    return _main("bench")([*quick, *(str(a) for a in argv)])


def _crafted_run(f: Files) -> Path:
    """A run folder whose config builds its data module with ``builtins.exec`` (the payload)."""
    import yaml

    run = f.tmp / "crafted_run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    config = {"model": {"_target_": "lightning_compress.models.SmallCNN", "image_size": 8, "num_classes": None},
              "data": {"_target_": "builtins.exec", "_args_": [PAYLOAD]}}  # fmt: skip
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(f.state, run / "checkpoints" / "last.ckpt")
    return run


# a console script may raise, or print its error and exit (or return) with a non-zero status
EXIT = (SystemExit, ValueError, OSError)
CLI_CASES = [
    Bad("plot-schedule-missing", lambda f: _plot("schedule", f.root / "gone_run"), SystemExit,
        ("gone_run", "does not exist")),
    Bad("plot-schedule-empty-csv", lambda f: _plot("schedule", f.blank_csv), SystemExit, ("blank.csv", "is empty")),
    Bad("plot-schedule-random-bytes", lambda f: _plot("schedule", f.noise), SystemExit,
        ("noise.bin", "not a text CSV file")),
    Bad("plot-schedule-text", lambda f: _plot("schedule", f.notes), SystemExit,
        ("notes.txt", "no column 'compress/sparsity'")),
    Bad("plot-schedule-unpruned-run", lambda f: _plot("schedule", f.run), SystemExit,
        ("no column 'compress/sparsity'", "--key")),
    Bad("plot-schedule-column-empty", lambda f: _plot("schedule", f.root / "empty_column"), SystemExit,
        ("'compress/sparsity'", "holds no value")),
    Bad("plot-schedule-key", lambda f: _plot("schedule", f.gmp_run, "--key", "compress/nosuch"), SystemExit,
        ("'compress/nosuch'", "columns like it")),
    Bad("plot-sweep-missing", lambda f: _plot("sweep", f.root / "absent_dir"), SystemExit,
        ("absent_dir", "does not exist", "multirun")),
    Bad("plot-sweep-file", lambda f: _plot("sweep", f.notes), SystemExit, ("notes.txt", "not a folder")),
    Bad("plot-sweep-single-run", lambda f: _plot("sweep", f.run), SystemExit,
        ("no Hydra job folders", "lc-plot schedule")),
    Bad("plot-sweep-metric", lambda f: _plot("sweep", f.sweep, "--metric", "test/nosuch"), SystemExit,
        ("'test/nosuch'", "--metric", "test/acc")),
    Bad("plot-no-command", lambda f: _plot(), SystemExit, ("required",)),
    Bad("oneshot-nm-syntax", lambda f: _main("oneshot")(["model", "--nm", "2x4"]), SystemExit,
        ("--nm", "'2x4'", "2:4")),
    Bad("oneshot-task", lambda f: _main("oneshot")(["model", "--sparsity", "0.5", "--task", "sst3"]), ValueError,
        ("`task`", "'sst3'", "sst2")),
    Bad("bench-paths", lambda f: _bench(f, "--model", f"{f.tiny}:build", "--paths", "warp"), SystemExit,
        ("--paths", "'warp'")),
    Bad("bench-model-missing", lambda f: _bench(f, "--model", f.gone), EXIT, ("`--model`", "gone.pt")),
    Bad("bench-checkpoint-missing", lambda f: _bench(f, "--model", f"{f.tiny}:build", "--checkpoint", f.gone),
        EXIT, ("`--checkpoint`", "gone.pt")),
    Bad("bench-model-empty-file", lambda f: _bench(f, "--model", f.blank), EXIT, ("blank.pt",)),
    Bad("bench-input-shape-abc", lambda f: _bench(f, "--model", f"{f.tiny}:build", "--input-shape", "2,abc"),
        EXIT, ("input-shape", "2,abc")),
    Bad("bench-repeats-0", lambda f: _bench(f, "--model", f"{f.tiny}:build", "--repeats", "0"), EXIT,
        ("repeats", "0")),
    Bad("report-missing", lambda f: _report(f.gone), EXIT, ("gone.pt", "no such file")),
    Bad("report-empty", lambda f: _report(f.blank), EXIT, ("blank.pt", "empty file")),
    Bad("report-random", lambda f: _report(f.noise), EXIT, ("noise.bin", "no known format")),
    Bad("report-zip", lambda f: _report(f.zip), EXIT, ("other.zip", "no torch file")),
]  # fmt: skip

CLI_CRAFTED = [
    Bad("report-crafted", lambda f: _report(f.crafted), EXIT, ("crafted.pt", "allow-pickle")),
    Bad("report-crafted-pt2", lambda f: _report(f.crafted_pt2), EXIT, ("crafted.pt2", "allow-pickle")),
    Bad("bench-model-crafted", lambda f: _bench(f, "--model", f.crafted), EXIT, ("crafted.pt", "allow-pickle")),
    Bad("run-config-exec-target", lambda f: _load_model(_crafted_run(f)), ValueError, ("config.yaml", "builtins.exec")),
]  # fmt: skip


def _load_model(spec: Path) -> Any:
    from lightning_compress.cli.model_spec import load_model

    return load_model(str(spec))


def _cli_message(bad: Bad, files: Files, capsys: pytest.CaptureFixture[str]) -> str:
    """What the user reads: the exception's message, or what the script wrote to stderr when it exited (or returned)
    with a non-zero status, which counts as a ``SystemExit``."""
    errors = bad.error if isinstance(bad.error, tuple) else (bad.error,)
    try:
        code = bad.call(files)
    except SystemExit as err:
        assert SystemExit in errors, f"exited with {err.code}: {capsys.readouterr().err}"
        assert err.code not in (0, None), "exited 0"
        return capsys.readouterr().err
    except errors as err:
        return str(err)
    assert SystemExit in errors and code not in (0, None), f"no error: returned {code!r}"
    return capsys.readouterr().err


@pytest.mark.parametrize("bad", [b.param() for b in CLI_CASES])
def test_console_script_bad_argument_or_file_is_named(bad: Bad, files: Files, capsys: pytest.CaptureFixture) -> None:
    message = _cli_message(bad, files, capsys)
    for text in bad.must:
        assert text in message, f"{text!r} not in {message!r}"


@pytest.mark.parametrize("bad", [b.param() for b in CLI_CRAFTED])
def test_console_script_runs_no_code_from_a_crafted_file(bad: Bad, files: Files, capsys: pytest.CaptureFixture) -> None:
    try:
        message = _cli_message(bad, files, capsys)
    finally:
        ran = (files.tmp / "CODE_RAN").exists()
    assert not ran, "the crafted file's payload ran"
    for text in bad.must:
        assert text in message, f"{text!r} not in {message!r}"


def test_lc_plot_makes_the_folder_of_out(files: Files) -> None:
    out = files.tmp / "new" / "folder" / "s.png"
    assert _plot("schedule", files.gmp_run, "--out", out) == 0
    assert out.stat().st_size > 0


# ----------------------------------------------------------------------------------- lc-train overrides, in-process
def _train(files: Files, *overrides: str) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from lightning_compress.cli.train import CONFIG_DIR, train

    tiny = ["data=digits", "model=cnn_digits", "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
            "+trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "~callbacks.progress_bar",
            "~callbacks.model_summary", "~logger"]  # fmt: skip
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            cfg = compose("train", overrides=[*tiny, *overrides], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(files.tmp / "run")
    return train(cfg)


def _instantiation_error() -> type[BaseException]:
    from hydra.errors import InstantiationException

    return InstantiationException


def _composition_error() -> tuple[type[BaseException], ...]:
    from hydra.errors import ConfigCompositionException, MissingConfigException

    return (ConfigCompositionException, MissingConfigException)


TRAIN_CASES = [
    Bad("train-data-unknown", lambda f: _train(f, "data=nosuch"), _composition_error(), ("data/nosuch", "digits")),
    Bad("train-model-channels-int", lambda f: _train(f, "model.channels=16"), _instantiation_error(),
        ("`channels`", "got 16")),
    Bad("train-data-val-fraction-tiny", lambda f: _train(f, "data.val_fraction=0.0001"), _instantiation_error(),
        ("`val_fraction`", "0.0001")),
    Bad("train-data-batch-size-abc", lambda f: _train(f, "data.batch_size=abc"), _instantiation_error(),
        ("`batch_size`", "'abc'")),
    Bad("train-init-from-missing", lambda f: _train(f, f"init_from={f.gone}"), FileNotFoundError,
        ("`init_from`", "gone.pt")),
    Bad("train-max-epochs-abc", lambda f: _train(f, "trainer.max_epochs=abc"), (ValueError, TypeError),
        ("max_epochs", "abc")),
    Bad("train-accelerator-tpu", lambda f: _train(f, "trainer.accelerator=tpu"), ValueError,
        ("`trainer.accelerator`", "'tpu'", "cpu", "available on this machine")),
    Bad("train-ckpt-path-crafted", lambda f: _train(f, f"ckpt_path={f.crafted}"), ValueError,
        ("`ckpt_path`", "crafted.pt", "pickled objects", "allow_pickle")),
    Bad("train-ckpt-path-blank", lambda f: _train(f, f"ckpt_path={f.blank}"), ValueError,
        ("`ckpt_path`", "blank.pt", "Lightning checkpoint", "empty file")),
]  # fmt: skip


@pytest.mark.parametrize("bad", [b.param() for b in TRAIN_CASES])
def test_lc_train_bad_override_is_named(bad: Bad, files: Files) -> None:
    try:
        message = _run(files, bad)
    finally:
        ran = (files.tmp / "CODE_RAN").exists()
    assert not ran, "a crafted file's payload ran"
    for text in bad.must:
        assert text in message, f"{text!r} not in {message!r}"
