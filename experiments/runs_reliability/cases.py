"""Bad-input and silent-result cases of the runs part of issue 16 (lc-train config values, lc-bench options and a
busy machine, callback resume with another configuration, NaN / Inf weights), each classified:

* clear: an error before any work whose message names the argument, key or file;
* vague: an error that does not name it, a traceback, or one raised only after training started;
* silent: no error at all (a run from scratch, an exit status 0, a result computed from NaNs).

Run against a source tree (see README.md): ``PYTHONPATH=<tree> .venv/bin/python cases.py <tree>``; prints JSON.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TREE = Path(sys.argv[1])
sys.path.insert(0, str(TREE / "tests"))
import warnings  # noqa: E402

warnings.filterwarnings("ignore")
import logging  # noqa: E402

logging.disable(logging.CRITICAL)

import lightning as L  # noqa: E402
import torch  # noqa: E402
from conftest import QUIET, TinyNet, loader  # noqa: E402
from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(2)
TMP = Path(tempfile.mkdtemp())
RESULTS: list[tuple[str, str, str]] = []


def record(case: str, outcome: str, message: str) -> None:
    RESULTS.append(
        (case.replace(str(TMP), "<tmp>"), outcome, " ".join(message.replace(str(TMP), "<tmp>").split())[:160])
    )


def classify(case: str, fn, names: tuple[str, ...], started=lambda: False) -> None:
    try:
        fn()
    except BaseException as err:  # noqa: BLE001
        msg = f"{type(err).__name__}: {err}"
        if isinstance(err, SystemExit):
            msg = f"exit {err.code}"
        clear = all(n in msg for n in names) and not started()
        record(case, "clear" if clear else "vague", msg)
        return
    record(case, "silent", "no error")


# ------------------------------------------------------------------------------------------------------ lc-train
def train_case(case: str, overrides: list[str], names: tuple[str, ...]) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from lightning_compress.cli.train import CONFIG_DIR, train

    out = TMP / "outputs" / "train" / case
    GlobalHydra.instance().clear()
    fast = ["trainer.enable_progress_bar=false", "~callbacks.progress_bar", "~callbacks.model_summary"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(
            "train",
            overrides=["experiment=digits_cnn", "trainer.max_epochs=1", "logger=csv", *fast, *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    started = lambda: (out / "checkpoints").exists() or (out / "csv" / "metrics.csv").exists()  # noqa: E731

    def run() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            train(cfg)

    classify(f"lc-train {' '.join(overrides)}", run, names, started)


for override, names in [
    ("trainer.max_epochs=abc", ("max_epochs",)),
    ("trainer.max_epochs=2.5", ("max_epochs",)),
    ("+trainer.max_steps=2.5", ("max_steps",)),
    ("trainer.devices=zero", ("devices",)),
    ("trainer.precision=17", ("precision",)),
    ("trainer.accumulate_grad_batches=0", ("accumulate_grad_batches",)),
    ("trainer.gradient_clip_val=-1", ("gradient_clip_val",)),
    ("+trainer.limit_train_batches=1.5", ("limit_train_batches",)),
    ("+trainer.val_check_interval=often", ("val_check_interval",)),
    ("seed=x", ("seed",)),
    ("monitor=acc", ("monitor",)),
    ("monitor_mode=maximum", ("monitor_mode",)),
    ("ckpt_path=last", ("ckpt_path",)),
    (f"ckpt_path={TMP}/missing.ckpt", ("missing.ckpt",)),
]:
    train_case(override.split("=")[0].lstrip("+"), [override], names)

# ------------------------------------------------------------------------------------------------------ lc-bench
from lightning_compress.cli import bench as bench_cli  # noqa: E402

builder = TMP / "tiny.py"
builder.write_text("import torch\ndef build():\n    torch.manual_seed(0)\n    return torch.nn.Linear(16, 16)\n")


def bench_case(args: list[str], names: tuple[str, ...], expect_exit_nonzero: bool = True) -> None:
    out = TMP / "bench" / str(len(RESULTS))
    base = [
        "--model",
        f"{builder}:build",
        "--input-shape",
        "2,16",
        "--paths",
        "fp32 eager",
        "csr",
        "--sparsities",
        "0.9",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--device",
        "cpu",
        "--no-plot",
        "--out",
        str(out),
    ]
    err = io.StringIO()

    def run() -> None:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = bench_cli.main([*base, *args])
        if code:
            raise SystemExit(code)

    before = len(RESULTS)
    classify(f"lc-bench {' '.join(args)}", run, ())
    case, outcome, msg = RESULTS[before]
    text = err.getvalue()
    if outcome != "silent":
        named = all(n in text for n in names) and "Traceback" not in text
        RESULTS[before] = (
            case,
            "clear" if named else "vague",
            " ".join((text.strip().splitlines() or [msg])[-1].replace(str(TMP), "<tmp>").split())[:160],
        )


for args, names in [
    (["--repeats", "0"], ("--repeats",)),
    (["--warmup", "-1"], ("--warmup",)),
    (["--input-shape", "2,a"], ("--input-shape",)),
    (["--sparsities", "1.5"], ("--sparsities",)),
    (["--input-shape", "2,32"], ("--input-shape",)),
    (["--threads", "0"], ("--threads",)),
    (["--tokens", "0"], ("--tokens",)),
    (["--latency-budget-ms", "-1"], ("--latency-budget-ms",)),
    (["--device", "cuda"], ("cuda",)),
    (["--model", "not_a_model_name"], ("not_a_model_name",)),
]:
    bench_case(args, names)

# a busy machine: other processes keep 1.5 of 2 CPUs busy (the /proc/stat reader is faked where it exists)
try:
    from lightning_compress.bench import machine_load

    START = time.monotonic()

    def _busy() -> machine_load.CpuTimes:
        now, own = time.monotonic(), time.process_time()
        return machine_load.CpuTimes(now, own + 1.5 * (now - START), own, 2)

    machine_load.read_cpu_times = _busy
    have_checks = True
except ImportError:
    have_checks = False
    # the base tree has no load check: run a real busy loop instead
import subprocess  # noqa: E402

loops = [] if have_checks else [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
try:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = bench_cli.main(
            [
                "--model",
                f"{builder}:build",
                "--input-shape",
                "2,16",
                "--paths",
                "fp32 eager",
                "csr",
                "--sparsities",
                "0.9",
                "--warmup",
                "0",
                "--repeats",
                "3",
                "--device",
                "cpu",
                "--no-plot",
                "--out",
                str(TMP / "busy"),
            ]
        )
    text = out.getvalue()
    if code != 0 and "Refusing to advise" in text and "other processes used" in text:
        record("lc-bench on a busy machine", "clear", f"exit {code}; advice refused with the figures")
    else:
        record("lc-bench on a busy machine", "silent", f"exit {code}; advice given: {text.count('  - ')} lines")
finally:
    for loop in loops:
        loop.kill()

# ----------------------------------------------------------------------------------------- callbacks: resume, NaN
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning  # noqa: E402
from lightning_compress.pruning.one_shot.one_shot_pruning import OneShotPruning  # noqa: E402
from lightning_compress.quantization.qat import QuantizationAwareTraining  # noqa: E402
from lightning_compress.sparsity.nm_sparsity import NMSparsity  # noqa: E402
from lightning_compress.training.classification import ClassificationModule  # noqa: E402

CKPT = {**QUIET, "enable_checkpointing": True}


class Stop(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def first(callback, model=None) -> Path:
    folder = TMP / f"first{len(RESULTS)}"
    L.seed_everything(0)
    L.Trainer(max_epochs=2, callbacks=[callback, ModelCheckpoint(dirpath=folder, save_last=True), Stop()], **CKPT).fit(
        model or TinyNet(), loader()
    )
    return folder / "last.ckpt"


def resume(ckpt, callback, model=None) -> None:
    L.Trainer(max_epochs=2, callbacks=[callback], **QUIET).fit(model or TinyNet(), loader(), ckpt_path=ckpt)


def gmp(**kw):
    return GradualMagnitudePruning(
        **{"final_sparsity": 0.9, "end_epoch": 2, "update_every_n_steps": 3, "verbose": 0, **kw}
    )


def mlp():
    torch.manual_seed(0)
    return ClassificationModule(nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4)), 4)


def big(module, fqn):
    return isinstance(module, nn.Linear) and module.in_features % 16 == 0


def int4(**kw):
    return QuantizationAwareTraining("int4_weight_only", group_size=16, filter_fn=big, verbose=0, **kw)


for case, make_first, make_second, names, model in [
    (
        "GMP resume final_sparsity 0.9 -> 0.8",
        lambda: gmp(),
        lambda: gmp(final_sparsity=0.8),
        ("final_sparsity",),
        TinyNet,
    ),
    (
        "GMP resume update_every_n_steps 3 -> 5",
        lambda: gmp(),
        lambda: gmp(update_every_n_steps=5),
        ("update_every_n_steps",),
        TinyNet,
    ),
    (
        "NMSparsity resume policy fixed -> dynamic",
        lambda: NMSparsity(policy="fixed", ramp_epochs=1.5, verbose=0),
        lambda: NMSparsity(policy="dynamic", ramp_epochs=1.5, verbose=0),
        ("policy",),
        TinyNet,
    ),
    (
        "OneShotPruning resume calibration_batches 2 -> 4",
        lambda: OneShotPruning("wanda", sparsity=0.5, calibration_batches=2, verbose=0),
        lambda: OneShotPruning("wanda", sparsity=0.5, calibration_batches=4, verbose=0),
        ("calibration_batches",),
        TinyNet,
    ),
    ("QAT resume start_epoch 0.5 -> 0", lambda: int4(start_epoch=0.5), lambda: int4(), ("start_epoch",), mlp),
]:
    ckpt = first(make_first(), model())
    classify(case, lambda: resume(ckpt, make_second(), model()), names)


def poisoned():
    model = TinyNet()
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    return model


def fit(model, callbacks, epochs=2):
    L.Trainer(max_epochs=epochs, callbacks=callbacks, **QUIET).fit(model, loader())


for case, callback in [
    ("GMP on a NaN weight", gmp()),
    ("NMSparsity fixed on a NaN weight", NMSparsity(policy="fixed", verbose=0)),
    ("NMSparsity dynamic on a NaN weight", NMSparsity(policy="dynamic", verbose=0)),
]:
    classify(case, lambda: fit(poisoned(), [callback]), ("fc1.weight",))


def qat_nan():
    module = mlp()
    with torch.no_grad():
        module.model[2].weight[0, 0] = float("nan")
    fit(module, [int4()], 1)


classify("QAT int4 prepare on a NaN weight", qat_nan, ("2.weight",))


def qat_convert_inf():
    qat = int4(evaluate_quantized=False)
    module = mlp()
    fit(module, [qat], 1)
    with torch.no_grad():
        module.model[2].weight[0, 0] = float("inf")
    qat.convert()


classify("QAT convert with an Inf weight", qat_convert_inf, ("2.weight",))

counts = {k: sum(1 for _, o, _ in RESULTS if o == k) for k in ("clear", "vague", "silent")}
print(json.dumps({"tree": str(TREE), "counts": counts, "cases": RESULTS}, indent=1))
