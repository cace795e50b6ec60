"""The catalog of bad inputs: what each case does, who owns the behaviour, and what a clear message must hold.

``must`` is a tuple of groups of alternatives (case-insensitive substrings): a message is clear when every group has
one of its alternatives in it. Groups name (1) the argument or file, (2) the bad value or what was found, (3) what is
allowed or what to do. API cases run ``code`` (with ``torch``, ``nn``, ``lc`` = ``lightning_compress``, ``FIX`` = the
fixtures folder and ``TMP`` = the case's own folder); a ``check`` (an expression) says what is wrong when the code ran
without an error. CLI cases run ``python -m lightning_compress.cli.<cli> <args>`` in their folder; ``{FIX}``,
``{TMP}`` and ``{MINILM}`` (the offline MiniLM folder) are filled in.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fixtures import TINY_TRAIN


@dataclass(frozen=True)
class Case:
    id: str
    area: str  # api, lc-train, lc-bench, lc-report, lc-plot, lc-oneshot
    kind: str  # value, type, file, crafted, config, device, shape, data, result
    owner: str  # the file whose behaviour it is
    what: str
    must: tuple[tuple[str, ...], ...]
    code: str = ""
    check: str = ""
    cli: str = ""
    args: tuple[str, ...] = ()
    cli_check: Optional[Callable[[Path, Path, str], Optional[str]]] = None
    late: Optional[Callable[[Path], bool]] = None
    may_succeed: bool = False
    setup: str = ""
    timeout: float = 60


ALLOWED = ("must ", "can be", "expected", "allowed", "one of", "should be", "needs", "need ", "use ", "pass ",
           "set ", "give ", "instead", "at least", "valid values", "available", "choose from", "did you mean",
           "write ")  # fmt: skip
FOUND = ("empty", "0 bytes", "truncated", "damaged", "corrupt", "incomplete", "not a ", "unknown format", "unrecogni",
         "cannot be read", "could not be read", "cannot read", "can't read", "unreadable", "holds", "found", "is a ",
         "looks like", "invalid", "not valid", "failed")  # fmt: skip
EXPECTED = ("expected", "must be", "should be", "checkpoint", "state dict", "state_dict", "torch.save",
            "save_compressed", "save_quantized", "safetensors", "allow_pickle", "allow-pickle", "written by", "pass ",
            "use ", "give ")  # fmt: skip
NOT_THERE = ("no such", "not exist", "does not exist", "doesn't exist", "not found", "must be an existing")
PICKLE = ("pickle", "code", "unsafe", "weights_only", "global")
OPT_IN = ("allow_pickle", "allow-pickle", "trust", "weights_only", "safetensors", "state dict", "only load")
META = (("meta",), ("load", "to_empty", "materiali", "values"))
NAN_TODO = ("fix", "refus", "finite", "filter_fn", "diverg", "damaged")
CHECKSUM = ("checksum", "corrupt", "damaged", "mismatch", "digest", "sha", "changed")


def files(name: str) -> tuple[tuple[str, ...], ...]:
    """A damaged or foreign file: named, what was found, what was expected."""
    return ((name,), FOUND, EXPECTED)


def crafted(name: str) -> tuple[tuple[str, ...], ...]:
    return ((name,), PICKLE, OPT_IN)


def value(name: str, bad: str | tuple[str, ...], allowed: tuple[str, ...] = ALLOWED) -> tuple[tuple[str, ...], ...]:
    return ((name,), (bad,) if isinstance(bad, str) else bad, allowed)


# ----------------------------------------------------------------------------------------------- result checks
def trained(folder: Path) -> bool:
    """Whether a run logged a training step (so an error came after training started)."""
    for metrics in folder.rglob("metrics.csv"):
        with metrics.open() as f:
            if any(row.get("train/loss") for row in csv.DictReader(f)):
                return True
    return False


def resumed_earlier_run(tmp: Path, fix: Path, output: str) -> Optional[str]:
    if re.search(r"Restor\w+ .*2000-01-01_00-00-00", output):
        return None
    return "started from scratch: nothing was restored from the earlier run outputs/train/2000-01-01_00-00-00"


def _checkpoint_sparsity(path: Path) -> float:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() >= 2]
    return 1 - sum(int(w.count_nonzero()) for w in weights) / sum(w.numel() for w in weights)


def tested_sparsity_matches(tmp: Path, fix: Path, output: str) -> Optional[str]:
    """The model ``trainer.test`` scored must have the sparsity the run's logs end on (what a sweep table pairs with
    its test metrics), not an early checkpoint's."""
    tested = re.findall(r"Loaded model weights from the checkpoint at (\S+\.ckpt)", output)
    path = Path(tested[-1]) if tested else tmp / "run" / "checkpoints" / "last.ckpt"  # none: the final model
    logged = []
    for metrics in (tmp / "run").rglob("metrics.csv"):
        with metrics.open() as f:
            logged += [float(r["compress/sparsity"]) for r in csv.DictReader(f) if r.get("compress/sparsity")]
    if not logged or not path.is_file():
        return "no compress/sparsity logged, or no checkpoint to compare"
    actual = _checkpoint_sparsity(path)
    if abs(actual - logged[-1]) < 0.005:
        return None
    return (
        f"test metrics come from {path.name} at sparsity {actual:.2%}, but the run logged compress/sparsity"
        f" {logged[-1]:.2%} (a sweep table pairs the two)"
    )


def names_old_and_new(tmp: Path, fix: Path, output: str) -> Optional[str]:
    for line in output.splitlines():
        if "final_sparsity" in line and "0.9" in line and "0.5" in line:
            return None
    return "resumed with final_sparsity changed 0.9 -> 0.5; no message names the change"


def wrote(relative: str) -> Callable[[Path, Path, str], Optional[str]]:
    return lambda tmp, fix, output: None if (tmp / relative).is_file() else f"exited 0 but wrote no {relative}"


def exited_zero(what: str) -> Callable[[Path, Path, str], Optional[str]]:
    return lambda tmp, fix, output: f"exited 0: {what}"


# --------------------------------------------------------------------------------------------------- the cases
TRAIN = (*TINY_TRAIN, "hydra.run.dir={TMP}/run")
QUICK_BENCH = ("--input-shape", "2,1,8,8", "--paths", "fp32 eager", "--warmup", "1", "--repeats", "2", "--sparsities",
               "0.5", "--no-plot", "--out", "{TMP}/bench")  # fmt: skip
TINY = "{FIX}/tiny.py:build"
CNN = "from lightning_compress.models import SmallCNN\n"
LIGHTNING = """
import lightning as L
from torch.utils.data import DataLoader, TensorDataset
QUIET = dict(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
             enable_model_summary=False)
"""


# a teacher cache that ignores a damaged or foreign file, with a warning naming it, is right too
PLANTED = """import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    added = lc.TeacherCache(FIX / "%s", fingerprint="f00d").load()
"""
IGNORED_BY_NAME = (
    'None if added == 0 and any("teacher-logits-f00d" in str(w.message) for w in caught)'
    ' else f"loaded {added} rows from a planted file, no error or warning naming it"'
)


def api(id: str, kind: str, owner: str, what: str, code: str, must, **kw) -> Case:  # noqa: A002
    return Case(id, "api", kind, owner, what, must, code=code, **kw)


def cli(id: str, area: str, kind: str, owner: str, what: str, args: tuple[str, ...], must, **kw) -> Case:  # noqa: A002
    return Case(id, area, kind, owner, what, must, cli=area.removeprefix("lc-"), args=args, **kw)


GMP, NM = "pruning/gradual_magnitude_pruning.py", "sparsity/nm_sparsity.py"
CLS, DIST = "training/classification.py", "distillation/distillation_module.py"
SPEC, BENCH, REPORT, PLOT = "cli/model_spec.py", "cli/bench.py", "cli/report.py", "analysis/run_logs.py"
TRAIN_PY, ONESHOT = "cli/train.py", "cli/oneshot.py"
FORMAT, SERIAL, TEACHER = "export/compressed_format.py", "quantization/serialization.py", "distillation/teacher.py"

CASES: list[Case] = [
    # ---------------------------------------------------------------- API: constructors (values and types)
    api("api-gmp-sparsity-1.5", "value", GMP, "GradualMagnitudePruning(final_sparsity=1.5)",
        "lc.GradualMagnitudePruning(final_sparsity=1.5)", value("final_sparsity", "1.5")),
    api("api-gmp-sparsity-str", "type", GMP, 'GradualMagnitudePruning(final_sparsity="0.9")',
        'lc.GradualMagnitudePruning(final_sparsity="0.9")', value("final_sparsity", ("'0.9'", "str"))),
    api("api-gmp-every-float", "type", GMP, "GradualMagnitudePruning(update_every_n_steps=2.5)",
        "lc.GradualMagnitudePruning(0.5, update_every_n_steps=2.5)", value("update_every_n_steps", "2.5")),
    api("api-gmp-start-bool", "type", GMP, "GradualMagnitudePruning(start_epoch=True)",
        "lc.GradualMagnitudePruning(0.5, start_epoch=True)", value("start_epoch", ("True", "bool"))),
    api("api-gmp-schedule", "value", GMP, 'GradualMagnitudePruning(schedule="cubical")',
        'lc.GradualMagnitudePruning(0.5, schedule="cubical")', value("schedule", "cubical", ("cubic",))),
    api("api-gmp-scope-none", "type", GMP, "GradualMagnitudePruning(scope=None)",
        "lc.GradualMagnitudePruning(0.5, scope=None)", value("scope", "None", ("global",))),
    api("api-nm-n-equals-m", "value", NM, "NMSparsity(n=4, m=4)", "lc.NMSparsity(n=4, m=4)",
        (("`n`", "n="), ("4",), ALLOWED)),
    api("api-nm-n-str", "type", NM, 'NMSparsity(n="2", m=4)', 'lc.NMSparsity(n="2", m=4)',
        (("`n`", "n="), ("'2'", "str"), ALLOWED)),
    api("api-qat-scheme", "value", "quantization/qat.py", 'QuantizationAwareTraining(scheme="int3")',
        'lc.QuantizationAwareTraining(scheme="int3")', value("scheme", "int3", ("int8",))),
    api("api-cls-metrics-str", "type", CLS, 'ClassificationModule(metrics="acc")',
        'lc.ClassificationModule(nn.Linear(4, 3), num_classes=3, metrics="acc")',
        value("metrics", "'acc'", ("list", "["))),
    api("api-cls-classes-float", "type", CLS, "ClassificationModule(num_classes=2.5)",
        "lc.ClassificationModule(nn.Linear(4, 3), num_classes=2.5)", value("num_classes", "2.5")),
    api("api-cls-metric-unknown", "value", CLS, 'ClassificationModule(metrics=["accuracy"])',
        'lc.ClassificationModule(nn.Linear(4, 3), num_classes=3, metrics=["accuracy"])',
        value("metrics", "accuracy", ("f1", "one of", "can be", "must be"))),
    api("api-distill-alpha", "value", DIST, "DistillationModule(alpha=2)",
        CNN + "lc.DistillationModule(SmallCNN(image_size=8), SmallCNN(image_size=8), num_classes=10, alpha=2)",
        value("alpha", "2", ("[0, 1]", "in [0"))),
    api("api-distill-features-str", "type", DIST, 'DistillationModule(features="features.0")',
        CNN + 'lc.DistillationModule(SmallCNN(image_size=8), SmallCNN(image_size=8), num_classes=10,'
        ' features="features.0")', value("features", ("'features.0'", "str"), ("list",))),
    api("api-distill-temperature-0", "value", DIST, "DistillationModule(temperature=0)",
        CNN + "lc.DistillationModule(SmallCNN(image_size=8), SmallCNN(image_size=8), num_classes=10, temperature=0)",
        value("temperature", "0", ("> 0", "positive"))),
    api("api-distill-student-meta", "device", DIST, "DistillationModule with a student on the meta device",
        CNN + 'with torch.device("meta"):\n    student = SmallCNN(image_size=8)\n'
        "lc.DistillationModule(student, SmallCNN(image_size=8), num_classes=10)", (("student",), *META)),
    api("api-distill-teacher-meta", "device", DIST, "DistillationModule with a teacher on the meta device",
        CNN + 'with torch.device("meta"):\n    teacher = SmallCNN(image_size=8)\n'
        "lc.DistillationModule(SmallCNN(image_size=8), teacher, num_classes=10)", (("teacher",), *META)),
    # ---------------------------------------------------------------- API: data modules and models
    api("api-digits-batch-0", "value", "data/split_data_module.py", "DigitsDataModule(batch_size=0)",
        "from lightning_compress.data import DigitsDataModule\nDigitsDataModule(batch_size=0)",
        value("batch_size", "0")),
    api("api-digits-batch-float", "type", "data/split_data_module.py", "DigitsDataModule(batch_size=32.0)",
        "from lightning_compress.data import DigitsDataModule\nDigitsDataModule(batch_size=32.0)",
        value("batch_size", "32.0")),
    api("api-digits-fraction-str", "type", "data/digits.py", 'DigitsDataModule(val_fraction="0.1")',
        'from lightning_compress.data import DigitsDataModule\nDigitsDataModule(val_fraction="0.1")',
        value("val_fraction", ("'0.1'", "str"))),
    api("api-digits-fraction-tiny", "data", "data/digits.py",
        "DigitsDataModule(val_fraction=0.0001): no validation image",
        "from lightning_compress.data import DigitsDataModule\ndm = DigitsDataModule(val_fraction=0.0001)\ndm.setup()",
        value("val_fraction", ("0.0001", "0 of", "no image", "empty")),
        check='f"the validation split holds {len(dm.val_dataset)} images"'),
    api("api-mnist-sizes", "value", "data/mnist.py", "MNIST5kDataModule(val_size=4000, test_size=1000)",
        "from lightning_compress.data import MNIST5kDataModule\nMNIST5kDataModule(val_size=4000, test_size=1000)",
        value("val_size", ("4000", "5000"), ("below", "must be", "leave"))),
    api("api-cnn-channels-int", "type", "models/cnn.py", "SmallCNN(channels=16)", CNN + "SmallCNN(channels=16)",
        value("channels", "16", ("sequence", "list"))),
    api("api-cnn-channels-str", "type", "models/cnn.py", 'SmallCNN(channels="16,32")',
        CNN + 'SmallCNN(channels="16,32")', value("channels", "'16,32'", ("sequence", "list"))),
    api("api-cnn-image-size", "value", "models/cnn.py", "SmallCNN(image_size=30)", CNN + "SmallCNN(image_size=30)",
        value("image_size", "30", ("divisible",))),
    api("api-cnn-input-size", "shape", "models/cnn.py", "SmallCNN(image_size=8) called on 28x28 images",
        CNN + "SmallCNN(image_size=8)(torch.randn(2, 1, 28, 28))", value("input", "28", ("image_size", "8x8", "8, 8"))),
    api("api-cnn-input-channels", "shape", "models/cnn.py", "SmallCNN(in_channels=1) called on 3-channel images",
        CNN + "SmallCNN(image_size=8)(torch.randn(2, 3, 8, 8))", value("input", "3", ("in_channels", "1 channel"))),
    api("api-cnn-input-dtype", "shape", "models/cnn.py", "SmallCNN called on int64 images",
        CNN + "SmallCNN(image_size=8)(torch.zeros(2, 1, 8, 8, dtype=torch.long))",
        value("input", ("long", "int64"), ("float",))),
    api("api-glue-task", "value", "data/glue.py", 'GLUEDataModule(task="sst3")',
        'from lightning_compress.data import GLUEDataModule\nGLUEDataModule(task="sst3")',
        value("task", "sst3", ("sst2",))),
    api("api-torchvision-name", "value", "models/torchvision_model.py", 'torchvision_model("resnet19")',
        'from lightning_compress.models import torchvision_model\ntorchvision_model("resnet19")',
        value("name", "resnet19", ("resnet18",))),
    api("api-hf-folder-missing", "file", "models/huggingface.py", "huggingface_classifier(<no such folder>)",
        'from lightning_compress.models import huggingface_classifier\nhuggingface_classifier(FIX / "gone_model")',
        (("gone_model",), (*NOT_THERE, "could not load"), ("config.json", "folder", "pass "))),
    # ---------------------------------------------------------------- API: pure functions
    api("api-magnitude-1.5", "value", "pruning/magnitude.py", "magnitude_mask(w, 1.5)",
        "lc.magnitude_mask(torch.randn(4, 4), 1.5)", value("sparsity", "1.5", ("[0, 1]", "in [0"))),
    api("api-magnitude-str", "type", "pruning/magnitude.py", 'magnitude_mask(w, "0.5")',
        'lc.magnitude_mask(torch.randn(4, 4), "0.5")', value("sparsity", ("'0.5'", "str"))),
    api("api-magnitude-nan", "data", "pruning/magnitude.py", "magnitude_mask of a weight holding a NaN",
        'w = torch.tensor([float("nan"), 1.0, 2.0, 3.0])\nmask = lc.magnitude_mask(w, 0.5)',
        (("nan",), ("weight",), NAN_TODO),
        check='"the NaN is kept and a finite weight pruned" if bool(mask[0]) else "the NaN pruned without an error"'),
    api("api-global-tensor", "type", "pruning/magnitude.py", "global_magnitude_masks(<a tensor, not a list>, 0.5)",
        "masks = lc.global_magnitude_masks(torch.randn(4, 4), 0.5)",
        value("weights", ("Tensor",), ("list", "sequence", "[")),
        check='f"a 4x4 tensor was read as {len(masks)} separate weights (one per row)"'),
    api("api-global-meta", "device", "pruning/magnitude.py", "global_magnitude_masks of a meta tensor",
        'lc.global_magnitude_masks([torch.empty(4, 4, device="meta")], 0.5)', (("weights",), *META)),
    api("api-nm-shape", "shape", "sparsity/nm_masks.py", "nm_mask of a (4, 6) weight with m=4",
        "lc.nm_mask(torch.randn(4, 6), 2, 4)", (("6",), ("m=4", "multiple of 4"), ("(4, 6)", "shape"))),
    api("api-nm-n-float", "type", "sparsity/nm_masks.py", "nm_mask(w, n=2.0, m=4)",
        "lc.nm_mask(torch.randn(4, 8), n=2.0, m=4)", (("`n`", "n="), ("2.0",), ALLOWED)),
    api("api-nm-nan", "data", "sparsity/nm_masks.py", "nm_mask of a weight holding a NaN",
        'w = torch.randn(2, 8)\nw[0, 0] = float("nan")\nmask = lc.nm_mask(w, 2, 4)', (("nan",), ("weight",), NAN_TODO),
        check="f\"the NaN is {'kept' if bool(mask[0, 0]) else 'pruned'} without an error\""),
    api("api-nm-list", "type", "sparsity/nm_masks.py", "nm_mask(<a list>, 2, 4)",
        "lc.nm_mask([[1.0, 2.0, 3.0, 4.0]], 2, 4)", value("weight", "list", ("tensor",))),
    api("api-schedule-end", "value", "pruning/schedule.py", "sparsity_at_step(end_step < start_step)",
        "lc.sparsity_at_step(5, start_step=10, end_step=5, initial=0.0, final=0.5)",
        value("end_step", "5", (">=", "start_step"))),
    api("api-schedule-step-str", "type", "pruning/schedule.py", 'sparsity_at_step("5", ...)',
        'lc.sparsity_at_step("5", 0, 10, 0.0, 0.5)', value("step", ("'5'", "str"))),
    api("api-schedule-final", "value", "pruning/schedule.py", "sparsity_at_step(final=1.5)",
        "s = lc.sparsity_at_step(5, 0, 10, 0.0, 1.5)", value("final", "1.5", ("[0, 1)", "in [0", "below 1", "< 1")),
        check='f"returned a sparsity of {s}"'),
    api("api-warmup-steps-str", "type", "training/lr_schedule.py", 'warmup_lr(total_steps="100")',
        'opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)\nlc.warmup_lr(opt, total_steps="100")',
        value("total_steps", ("'100'", "str"))),
    api("api-warmup-steps-float", "type", "training/lr_schedule.py", "warmup_lr(total_steps=10.5)",
        "opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)\nlc.warmup_lr(opt, total_steps=10.5)",
        value("total_steps", "10.5", ("int",)), check='"accepted total_steps=10.5"'),
    api("api-warmup-negative", "value", "training/lr_schedule.py", "warmup_lr(warmup=-0.1)",
        "opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)\nlc.warmup_lr(opt, 100, warmup=-0.1)",
        value("warmup", "-0.1", (">= 0",))),
    api("api-warmup-decay", "value", "training/lr_schedule.py", 'warmup_lr(decay="exp")',
        'opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)\nlc.warmup_lr(opt, 100, decay="exp")',
        value("decay", "exp", ("linear", "cosine"))),
    api("api-kd-temperature-str", "type", "distillation/losses.py", 'kd_loss(s, t, "4")',
        'lc.kd_loss(torch.randn(4, 10), torch.randn(4, 10), "4")',
        value("temperature", ("'4'", "str"), ("> 0", "number"))),
    api("api-kd-shapes", "shape", "distillation/losses.py", "kd_loss of (4, 10) against (4, 5) logits",
        "lc.kd_loss(torch.randn(4, 10), torch.randn(4, 5), 4.0)", (("teacher",), ("(4, 5)",), ("same shape",))),
    api("api-feature-loss-kind", "value", "distillation/losses.py", 'feature_loss(kind="l1")',
        'lc.feature_loss(torch.randn(2, 3), torch.randn(2, 3), "l1")', value("kind", "l1", ("mse",))),
    api("api-report-meta", "device", "analysis/report.py", "compression_report of a meta-device model",
        'with torch.device("meta"):\n    net = nn.Sequential(nn.Linear(8, 4))\nlc.compression_report(net)',
        (("0.weight", "source", "model"), *META)),
    api("api-report-str", "type", "analysis/report.py", 'compression_report("model.pt")',
        'lc.compression_report("model.pt")', value("source", "str", ("nn.Module", "state dict"))),
    api("api-sparsity-report-meta", "device", "analysis/report.py", "sparsity_report of a meta-device model",
        'with torch.device("meta"):\n    net = nn.Sequential(nn.Linear(8, 4))\nlc.sparsity_report(net)',
        (("0.weight", "model"), *META)),
    api("api-select-filter-str", "type", "core/selection.py", 'select_layers(net, filter_fn="Linear")',
        'lc.select_layers(nn.Sequential(nn.Linear(4, 4)), filter_fn="Linear")',
        value("filter_fn", ("'Linear'", "str"), ("callable",))),
    api("api-select-skip-str", "type", "core/selection.py", 'prunable_weights(net, skip_first_conv="false")',
        'net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.Flatten(), nn.Linear(8, 2))\n'
        'names = list(lc.prunable_weights(net, skip_first_conv="false"))',
        value("skip_first_conv", ("'false'", "str"), ("bool",)),
        check="\"skip_first_conv='false' (a string) left out the first conv\" if '0.weight' not in names"
        ' else "a string accepted as a bool"'),
    api("api-select-model-str", "type", "core/selection.py", 'prunable_weights("model.pt")',
        'lc.prunable_weights("model.pt")', (("`module`", "`model`"), ("str", "'model.pt'"), ("nn.Module",))),
    api("api-find-network-str", "type", "core/target.py", 'find_network("net")', 'lc.find_network("net")',
        (("`module`",), ("str",), ("nn.Module",))),
    api("api-pack-mask-float", "type", "core/masks.py", "pack_mask(<a float tensor>)", "lc.pack_mask(torch.ones(8))",
        value("mask", "float", ("bool",))),
    api("api-pack-mask-list", "type", "core/masks.py", "pack_mask([True, False])", "lc.pack_mask([True, False])",
        value("mask", "list", ("tensor",))),
    api("api-masks-list", "type", "core/masks.py", "ParameterMasks([<a parameter>])",
        "lc.ParameterMasks([nn.Parameter(torch.ones(2, 2))])", value("params", "list", ("mapping", "dict", "name"))),
    api("api-masks-meta", "device", "core/masks.py", "ParameterMasks of a meta-device parameter",
        'm = lc.ParameterMasks({"layer.weight": nn.Parameter(torch.empty(4, 4, device="meta"))})\nm.sparsity()',
        (("layer.weight",), *META)),
    api("api-sparse-format", "value", "sparsity/sparse_layers.py", 'to_sparse_weight(w, "csc")',
        'from lightning_compress.sparsity.sparse_layers import to_sparse_weight\nto_sparse_weight(torch.eye(4), "csc")',
        value("fmt", "csc", ("csr",))),
    api("api-sparse-blocksize-0", "value", "sparsity/sparse_layers.py", 'to_sparse_weight(w, "bsr", blocksize=0)',
        "from lightning_compress.sparsity.sparse_layers import to_sparse_weight\n"
        'to_sparse_weight(torch.eye(4), "bsr", blocksize=0)', value("blocksize", "0")),
    api("api-sparse-layers-format", "value", "sparsity/sparse_layers.py", 'to_sparse_layers(net, fmt="dense")',
        "from lightning_compress.sparsity.sparse_layers import to_sparse_layers\n"
        'net, dense = to_sparse_layers(nn.Sequential(nn.Linear(4, 4)), fmt="dense")', value("fmt", "dense", ("csr",)),
        check='f"every layer left dense without an error: {dense}"'),
    api("api-semi-dtype", "value", "sparsity/semi_structured.py", "to_semi_structured_(dtype=torch.float32)",
        "lc.to_semi_structured_(nn.Sequential(nn.Linear(16, 16)), dtype=torch.float32)",
        value("dtype", "float32", ("float16", "bfloat16"))),
    api("api-units-fraction", "value", "pruning/structured/unit_gates.py", "units_to_keep(scores, 1.5)",
        "from lightning_compress.pruning.structured.unit_gates import units_to_keep\n"
        "kept = units_to_keep(torch.rand(8), 1.5)", value("fraction", "1.5", ("[0, 1)", "in [0")),
        check='f"kept {kept.numel()} of 8 units for fraction=1.5"'),
    api("api-unit-gate-0", "value", "pruning/structured/unit_gates.py", "UnitGate(layer, units=0)",
        "from lightning_compress.pruning.structured.unit_gates import UnitGate\ng = UnitGate(nn.Linear(4, 2), units=0)",
        value("units", "0"), check='"a gate of 0 units was built"'),
    api("api-gates-empty-loader", "data", "pruning/structured/unit_gates.py", "gate_importance with no batch",
        "from lightning_compress.pruning.structured.unit_gates import UnitGate, gate_importance\n"
        "net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))\n"
        'gate_importance(net, {"h": UnitGate(net[2], units=6)}, [])',
        (("dataloader",), ("no batch",), ("at least one", "calibration"))),
    api("api-oneshot-method", "value", "pruning/one_shot/prune.py", 'one_shot_prune(method="magic")',
        "net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))\n"
        'lc.one_shot_prune(net, [torch.randn(4, 8)], method="magic", sparsity=0.5)',
        value("method", "magic", ("wanda", "sparsegpt"))),
    api("api-oneshot-empty-loader", "data", "pruning/one_shot/prune.py", "one_shot_prune(wanda) with no batch",
        "net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))\n"
        'lc.one_shot_prune(net, [], method="wanda", sparsity=0.5)',
        (("dataloader", "calibration"), ("no batch", "empty", "yielded no"), ALLOWED)),
    api("api-oneshot-meta", "device", "pruning/one_shot/prune.py", "one_shot_prune of a meta-device model",
        'with torch.device("meta"):\n    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))\n'
        'lc.one_shot_prune(net, None, method="magnitude", sparsity=0.5)', (("model", "0.weight"), *META)),
    api("api-channels-empty-loader", "data", "pruning/structured/channels.py", "prune_channels with no batch",
        CNN + "lc.prune_channels(SmallCNN(image_size=8), 0.5, [])",
        (("dataloader", "calibration"), ("no batch",), ("at least one", "calibration"))),
    api("api-student-channels-str", "type", "distillation/students.py", 'small_cnn_student(channels="8,16")',
        CNN + 'lc.small_cnn_student(SmallCNN(), channels="8,16")', value("channels", "'8,16'", ("sequence", "list"))),
    api("api-layer-subset-every-0", "value", "distillation/students.py", "layer_subset_student(every=0)",
        "from transformers import BertConfig, BertForSequenceClassification\n"
        "cfg = BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,"
        " vocab_size=100)\nlc.layer_subset_student(BertForSequenceClassification(cfg), every=0)",
        value("every", "0", ("[1, 4]", "in [1"))),
    api("api-save-quantized-float", "data", SERIAL, "save_quantized of a float (not converted) model",
        'lc.save_quantized(nn.Sequential(nn.Linear(4, 2)), TMP / "float.pt2", torch.randn(2, 4))',
        (("model",), ("float", "not quantized", "not converted"), ("convert",))),
    api("api-save-compressed-meta", "device", FORMAT, "save_compressed of a meta tensor",
        'lc.save_compressed({"layer.weight": torch.empty(4, 4, device="meta")}, TMP / "meta.lcz")',
        (("layer.weight",), *META)),
    # ---------------------------------------------------------------- API: training with bad weights or data
    api("api-gmp-nan-fit", "data", GMP, "GradualMagnitudePruning fit on a model with one NaN weight",
        LIGHTNING + "net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))\n"
        'with torch.no_grad():\n    net[0].weight[0, 0] = float("nan")\n'
        "data = DataLoader(TensorDataset(torch.randn(64, 8), torch.randint(0, 2, (64,))), batch_size=16)\n"
        "gmp = lc.GradualMagnitudePruning(final_sparsity=0.5, update_every_n_steps=1)\n"
        "L.Trainer(callbacks=[gmp], **QUIET).fit(lc.ClassificationModule(net, num_classes=2), data)",
        (("nan",), ("0.weight",), NAN_TODO),
        check='f"{int(torch.isnan(net[0].weight).sum())} of {net[0].weight.numel()} weights of layer 0 are NaN"'),
    api("api-cls-empty-loader", "data", CLS, "ClassificationModule fit on an empty train loader",
        LIGHTNING + "module = lc.ClassificationModule(nn.Linear(8, 2), num_classes=2)\n"
        "trainer = L.Trainer(**QUIET)\n"
        "trainer.fit(module, DataLoader(TensorDataset(torch.randn(0, 8), torch.zeros(0, dtype=torch.long))))",
        (("dataloader", "train"), ("empty", "no batch", "zero"), ALLOWED),
        check='f"fit ran {trainer.global_step} training steps and no error"'),
    api("api-distill-empty-loader", "data", DIST, "DistillationModule (feature pairs) fit on an empty loader",
        LIGHTNING + CNN + "module = lc.DistillationModule(SmallCNN(channels=(8, 16), hidden=32, image_size=8),"
        ' SmallCNN(image_size=8), num_classes=10, features=[{"student": "features.4", "teacher": "features.4"}])\n'
        "empty = DataLoader(TensorDataset(torch.randn(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)))\n"
        "L.Trainer(**QUIET).fit(module, empty)",
        (("dataloader",), ("no batch", "empty"), ("prepare", "dataset", "at least"))),
    # ---------------------------------------------------------------- API: file loaders
    api("api-compressed-missing", "file", FORMAT, "load_compressed(<no such file>)",
        'lc.load_compressed(FIX / "gone.lcz")', (("gone.lcz",), NOT_THERE)),
    *[
        api(f"api-compressed-{tag}", "file", FORMAT, f"load_compressed of {what}",
            f'lc.load_compressed(FIX / "{name}")', files(name))
        for tag, name, what in (("empty", "blank.pt", "an empty file"), ("truncated", "cut.lcz", "a truncated file"),
                                ("random", "noise.bin", "random bytes"), ("text", "notes.txt", "a text file"),
                                ("json", "conf.json", "a JSON file"), ("zip", "other.zip", "someone else's zip"))
    ],
    api("api-compressed-crafted", "crafted", FORMAT, "load_compressed of a pickle that runs code",
        'lc.load_compressed(FIX / "crafted.lcz")', crafted("crafted.lcz")),
    api("api-compressed-flipped", "result", FORMAT, "load_compressed of a file with one flipped bit",
        'state = lc.load_compressed(FIX / "flipped.lcz")\ngood = torch.arange(1.0, 257.0).reshape(16, 16)',
        (("flipped.lcz",), CHECKSUM),
        check="f\"loaded without an error; {int((state['w'] != good).sum())} value(s) differ from what was saved\""),
    api("api-quantized-missing", "file", SERIAL, "load_quantized(<no such file>)",
        'lc.load_quantized(FIX / "gone.pt2", compile=False)', (("gone.pt2",), NOT_THERE)),
    api("api-quantized-random", "file", SERIAL, "load_quantized of random bytes",
        'lc.load_quantized(FIX / "noise.bin", compile=False)', files("noise.bin")),
    api("api-quantized-crafted", "crafted", SERIAL, "load_quantized of a .pt2 whose weight entry is a crafted pickle",
        'lc.load_quantized(FIX / "crafted.pt2", compile=False)', crafted("crafted.pt2")),
    api("api-teacher-missing", "file", TEACHER, "DistillationModule(teacher=<no such file>)",
        CNN + 'lc.DistillationModule(SmallCNN(image_size=8), FIX / "gone.ckpt", num_classes=10)',
        (("gone.ckpt",), NOT_THERE)),
    *[
        api(f"api-teacher-{tag}", "file", TEACHER, f"DistillationModule(teacher=<{what}>)",
            CNN + f'lc.DistillationModule(SmallCNN(image_size=8), FIX / "{name}", num_classes=10,'
            " teacher_model=SmallCNN(image_size=8))", files(name))
        for tag, name, what in (("empty", "blank.pt", "an empty file"), ("truncated", "cut.pt", "a truncated file"),
                                ("random", "noise.bin", "random bytes"), ("json", "conf.json", "a JSON file"))
    ],
    api("api-teacher-crafted", "crafted", TEACHER, "DistillationModule(teacher=<a pickle that runs code>)",
        CNN + 'lc.DistillationModule(SmallCNN(image_size=8), FIX / "crafted.pt", num_classes=10)',
        crafted("crafted.pt")),
    api("api-teacher-cache-random", "file", "distillation/teacher_cache.py",
        "TeacherCache.load of a planted random file",
        PLANTED % "noise_cache", (("teacher-logits-f00d",), FOUND, (*EXPECTED, "cache", "delete", "remove")),
        check=IGNORED_BY_NAME, may_succeed=True),
    api("api-teacher-cache-crafted", "crafted", "distillation/teacher_cache.py",
        "TeacherCache.load of a planted crafted pickle", PLANTED % "crafted_cache",
        (("teacher-logits-f00d",), PICKLE, (*OPT_IN, "cache", "delete", "remove")),
        check=IGNORED_BY_NAME, may_succeed=True),
    # ---------------------------------------------------------------- lc-train: config groups and overrides
    cli("train-data-unknown", "lc-train", "config", "conf/ (Hydra)", "data=nosuch", (*TRAIN, "data=nosuch"),
        value("data", "nosuch", ("available", "options", "digits"))),
    cli("train-compression-unknown", "lc-train", "config", "conf/ (Hydra)", "compression=nosuch",
        (*TRAIN, "compression=nosuch"), value("compression", "nosuch", ("available", "options", "gmp"))),
    cli("train-experiment-unknown", "lc-train", "config", "conf/ (Hydra)", "experiment=nosuch",
        (*TRAIN, "experiment=nosuch"), value("experiment", "nosuch", ("available", "options", "mnist"))),
    cli("train-logger-unknown", "lc-train", "config", "conf/ (Hydra)", "logger=nosuch", (*TRAIN, "logger=nosuch"),
        value("logger", "nosuch", ("available", "options", "csv"))),
    cli("train-max-epochs-abc", "lc-train", "type", TRAIN_PY, "trainer.max_epochs=abc",
        (*TRAIN, "trainer.max_epochs=abc"), value("max_epochs", "abc", ("int",))),
    cli("train-max-epochs-float", "lc-train", "type", TRAIN_PY, "trainer.max_epochs=1.5",
        (*TRAIN, "trainer.max_epochs=1.5"), value("max_epochs", "1.5", ("int",))),
    cli("train-seed-abc", "lc-train", "type", TRAIN_PY, "seed=abc", (*TRAIN, "seed=abc"),
        value("seed", "abc", ("int",))),
    cli("train-monitor-unknown", "lc-train", "config", TRAIN_PY, "monitor=val/nosuch (no module logs it)",
        (*TRAIN, "monitor=val/nosuch", "trainer.log_every_n_steps=1"),
        value("monitor", "val/nosuch", ("val/acc", "logged", "available")), late=lambda tmp: trained(tmp / "run")),
    cli("train-ckpt-missing", "lc-train", "file", TRAIN_PY, "ckpt_path=<no such file>",
        (*TRAIN, "ckpt_path={FIX}/gone.ckpt"), (("gone.ckpt",), NOT_THERE)),
    cli("train-ckpt-last", "lc-train", "result", TRAIN_PY, "ckpt_path=last after an earlier run of the task",
        (*TINY_TRAIN, "ckpt_path=last", "trainer.max_epochs=2"), value("ckpt_path", "last", ("resume", "path")),
        cli_check=resumed_earlier_run, may_succeed=True, setup="earlier_run"),
    cli("train-ckpt-crafted", "lc-train", "crafted", TRAIN_PY, "ckpt_path=<a checkpoint holding a crafted pickle>",
        (*TRAIN, "ckpt_path={FIX}/crafted.ckpt"), crafted("crafted.ckpt")),
    cli("train-init-missing", "lc-train", "file", TRAIN_PY, "init_from=<no such file>",
        (*TRAIN, "init_from={FIX}/gone.ckpt"), (("gone.ckpt",), NOT_THERE)),
    cli("train-init-empty", "lc-train", "file", "core/checkpoints.py", "init_from=<an empty file>",
        (*TRAIN, "init_from={FIX}/blank.pt"), files("blank.pt")),
    cli("train-init-zip", "lc-train", "file", "core/checkpoints.py", "init_from=<someone else's zip>",
        (*TRAIN, "init_from={FIX}/other.zip"), files("other.zip")),
    cli("train-init-crafted", "lc-train", "crafted", "core/checkpoints.py", "init_from=<a pickle that runs code>",
        (*TRAIN, "init_from={FIX}/crafted.pt"), crafted("crafted.pt")),
    cli("train-init-other-model", "lc-train", "file", TRAIN_PY, "init_from=<the state dict of another model>",
        (*TRAIN, "init_from={FIX}/linear_state.pt"),
        (("linear_state.pt",), ("fit", "missing", "unexpected", "size mismatch"), ("model", "architecture"))),
    cli("train-batch-size-0", "lc-train", "value", "data/split_data_module.py", "data.batch_size=0",
        (*TRAIN, "data.batch_size=0"), value("batch_size", "0")),
    cli("train-batch-size-abc", "lc-train", "type", "data/split_data_module.py", "data.batch_size=abc",
        (*TRAIN, "data.batch_size=abc"), value("batch_size", "abc")),
    cli("train-val-fraction-tiny", "lc-train", "data", "data/digits.py",
        "data.val_fraction=0.0001 (no validation image)",
        (*TRAIN, "data.val_fraction=0.0001"), value("val_fraction", ("0.0001", "0 of", "no image", "empty")),
        late=lambda tmp: trained(tmp / "run"), cli_check=exited_zero("trained with an empty validation split")),
    cli("train-channels-int", "lc-train", "type", "models/cnn.py", "model.channels=16 (a list expected)",
        (*TRAIN, "model.channels=16"), value("channels", "16", ("sequence", "list"))),
    cli("train-dropout", "lc-train", "value", "models/cnn.py", "model.dropout=1.5", (*TRAIN, "model.dropout=1.5"),
        value("dropout", "1.5")),
    cli("train-gmp-sparsity", "lc-train", "value", GMP, "compression.gmp.final_sparsity=1.5",
        (*TRAIN, "compression=gmp", "compression.gmp.final_sparsity=1.5"), value("final_sparsity", "1.5")),
    cli("train-gmp-bool", "lc-train", "type", GMP, "compression.gmp.skip_classifier=maybe",
        (*TRAIN, "compression=gmp", "compression.gmp.skip_classifier=maybe"),
        value("skip_classifier", "maybe", ("bool",))),
    cli("train-accelerator", "lc-train", "value", TRAIN_PY, "trainer.accelerator=tpu",
        (*TRAIN, "trainer.accelerator=tpu"), value("accelerator", "tpu", ("cpu", "available", "auto"))),
    cli("train-lr-negative", "lc-train", "value", TRAIN_PY, "optimizer.lr=-1", (*TRAIN, "optimizer.lr=-1"),
        (("lr", "learning rate"), ("-1",), (*ALLOWED, ">= 0", "positive"))),
    cli("train-resume-changed", "lc-train", "result", "core/mask_callback.py",
        "resume a GMP run with final_sparsity changed 0.9 -> 0.5",
        (*TRAIN, "compression=gmp", "compression.gmp.final_sparsity=0.5", "compression.gmp.update_every_n_steps=1",
         "trainer.max_epochs=3", "ckpt_path={FIX}/gmp_run/checkpoints/last.ckpt"),
        (("final_sparsity",), ("0.9",), ("0.5",)), cli_check=names_old_and_new, may_succeed=True),
    cli("train-best-ckpt-sparsity", "lc-train", "result", TRAIN_PY,
        "GMP run: the summary's sparsity against the sparsity of the checkpoint it tested",
        (*TRAIN, "compression=gmp", "compression.gmp.start_epoch=1", "compression.gmp.schedule=constant",
         "compression.gmp.final_sparsity=0.98", "trainer.max_epochs=2", "trainer.limit_train_batches=8"),
        (("checkpoint",), ("sparsity",)), cli_check=tested_sparsity_matches, may_succeed=True),
    # ---------------------------------------------------------------- lc-bench
    cli("bench-model-unknown", "lc-bench", "value", SPEC, "--model nosuchnet", ("--model", "nosuchnet", *QUICK_BENCH),
        (("nosuchnet",), ("is no", "not ", "unknown"), ("torchvision", "module:", "folder"))),
    cli("bench-model-missing", "lc-bench", "file", SPEC, "--model <no such .pt file>",
        ("--model", "{FIX}/gone.pt", *QUICK_BENCH), (("gone.pt",), (*NOT_THERE, "is no folder, file"))),
    *[
        cli(f"bench-model-{tag}", "lc-bench", "file", SPEC, f"--model <{what}>", ("--model", f"{{FIX}}/{name}",
            *QUICK_BENCH), files(name))
        for tag, name, what in (("empty", "blank.pt", "an empty file"), ("random", "noise.bin", "random bytes"),
                                ("text", "notes.txt", "a text file"))
    ],
    cli("bench-model-crafted", "lc-bench", "crafted", SPEC, "--model <a pickle that runs code>",
        ("--model", "{FIX}/crafted.pt", *QUICK_BENCH), crafted("crafted.pt")),
    cli("bench-model-crafted-pt2", "lc-bench", "crafted", SPEC, "--model <a .pt2 holding a crafted pickle>",
        ("--model", "{FIX}/crafted.pt2", *QUICK_BENCH), crafted("crafted.pt2")),
    cli("bench-run-exec-target", "lc-bench", "crafted", SPEC, "--model <a run folder whose config targets exec>",
        ("--model", "{FIX}/exec_run", *QUICK_BENCH),
        (("config.yaml", "exec_run"), ("builtins.exec",), ("nn.Module", "allowed", "refus", "only"))),
    cli("bench-run-nested-target", "lc-bench", "crafted", SPEC, "--model <a run folder with a nested eval target>",
        ("--model", "{FIX}/nested_run", *QUICK_BENCH),
        (("config.yaml", "nested_run"), ("builtins.eval",), ("nn.Module", "allowed", "refus", "only"))),
    cli("bench-run-config-random", "lc-bench", "file", SPEC, "--model <a run folder whose config.yaml is random bytes>",
        ("--model", "{FIX}/noise_run", *QUICK_BENCH), (("config.yaml",), FOUND, ("lc-train", "run folder", "yaml"))),
    cli("bench-run-no-checkpoint", "lc-bench", "file", SPEC, "--model <a run folder without checkpoints>",
        ("--model", "{FIX}/bare_run", *QUICK_BENCH), (("bare_run",), ("no checkpoint",))),
    cli("bench-checkpoint-missing", "lc-bench", "file", SPEC, "--checkpoint <no such file>",
        ("--model", TINY, "--checkpoint", "{FIX}/gone.pt", *QUICK_BENCH), (("gone.pt",), NOT_THERE)),
    cli("bench-checkpoint-crafted", "lc-bench", "crafted", SPEC, "--checkpoint <a pickle that runs code>",
        ("--model", "{FIX}/run", "--checkpoint", "{FIX}/crafted.pt", *QUICK_BENCH), crafted("crafted.pt")),
    cli("bench-checkpoint-other-model", "lc-bench", "file", SPEC, "--checkpoint <the weights of another model>",
        ("--model", "{FIX}/run", "--checkpoint", "{FIX}/linear_state.pt", *QUICK_BENCH),
        (("linear_state.pt",), ("fit", "missing", "unexpected", "size mismatch"), ("model", "architecture"))),
    cli("bench-builder-missing", "lc-bench", "value", SPEC, "--model nosuchmod:build",
        ("--model", "nosuchmod:build", *QUICK_BENCH),
        (("nosuchmod",), ("no module", "not found", "cannot import", "could not import"),
         ("--model", "module:", "PYTHONPATH", "installed"))),
    cli("bench-input-shape-abc", "lc-bench", "type", BENCH, "--input-shape 2,abc",
        ("--model", TINY, *QUICK_BENCH, "--input-shape", "2,abc"),
        (("input-shape", "input_shape", "input shape"), ("abc",), ("e.g.", "comma", "integers", "like"))),
    cli("bench-input-shape-wrong", "lc-bench", "shape", BENCH, "--input-shape 2,3,8,8 for a model taking 64 features",
        ("--model", TINY, *QUICK_BENCH, "--input-shape", "2,3,8,8"),
        (("input",), ("2, 3, 8, 8", "2,3,8,8", "192"), ALLOWED),
        cli_check=exited_zero("the model cannot take the input")),
    cli("bench-repeats-0", "lc-bench", "value", BENCH, "--repeats 0", ("--model", TINY, *QUICK_BENCH, "--repeats", "0"),
        value("repeats", "0"), cli_check=exited_zero("nothing was timed")),
    cli("bench-warmup-negative", "lc-bench", "value", BENCH, "--warmup -1",
        ("--model", TINY, *QUICK_BENCH, "--warmup", "-1"), value("warmup", "-1")),
    cli("bench-threads-0", "lc-bench", "value", BENCH, "--threads 0", ("--model", TINY, *QUICK_BENCH, "--threads", "0"),
        value("threads", "0"), cli_check=exited_zero("--threads 0 was ignored")),
    cli("bench-sparsity-1.5", "lc-bench", "value", BENCH, "--sparsities 1.5",
        ("--model", TINY, *QUICK_BENCH, "--sparsities", "1.5"), value("sparsit", "1.5")),
    cli("bench-paths-unknown", "lc-bench", "value", BENCH, "--paths warp",
        ("--model", TINY, *QUICK_BENCH, "--paths", "warp"), value("--paths", "warp", ("choose from",))),
    cli("bench-device-cuda", "lc-bench", "device", BENCH, "--device cuda on a machine without CUDA",
        ("--model", TINY, *QUICK_BENCH, "--device", "cuda"), value("cuda", "cuda", ("cpu", "available"))),
    # ---------------------------------------------------------------- lc-report
    cli("report-missing", "lc-report", "file", REPORT, "lc-report <no such file>", ("{FIX}/gone.pt",),
        (("gone.pt",), NOT_THERE, ("target", "lc-report", "checkpoint", "state dict", "model spec", "expected"))),
    *[
        cli(f"report-{tag}", "lc-report", "file", REPORT, f"lc-report <{what}>", (f"{{FIX}}/{name}",), files(name))
        for tag, name, what in (("empty", "blank.pt", "an empty file"), ("truncated", "cut.pt", "a truncated file"),
                                ("random", "noise.bin", "random bytes"), ("text", "notes.txt", "a text file"),
                                ("json", "conf.json", "a JSON file"), ("zip", "other.zip", "someone else's zip"))
    ],
    cli("report-crafted", "lc-report", "crafted", REPORT, "lc-report <a pickle that runs code>", ("{FIX}/crafted.pt",),
        crafted("crafted.pt")),
    cli("report-crafted-pt2", "lc-report", "crafted", REPORT, "lc-report <a .pt2 holding a crafted pickle>",
        ("{FIX}/crafted.pt2",), crafted("crafted.pt2")),
    cli("report-run-exec-target", "lc-report", "crafted", SPEC, "lc-report <a run folder whose config targets exec>",
        ("{FIX}/exec_run",), (("config.yaml", "exec_run"), ("builtins.exec",), ("nn.Module", "allowed", "refus"))),
    cli("report-checkpoint-random", "lc-report", "file", "core/checkpoints.py", "lc-report run --checkpoint <random>",
        ("{FIX}/run", "--checkpoint", "{FIX}/noise.bin"), files("noise.bin")),
    cli("report-flipped", "lc-report", "result", FORMAT, "lc-report of a compressed file with one flipped bit",
        ("{FIX}/flipped.lcz",), (("flipped.lcz",), CHECKSUM),
        cli_check=exited_zero("a report of the damaged values, no error")),
    cli("report-json-folder-missing", "lc-report", "file", REPORT, "--json into a folder that does not exist",
        ("{FIX}/state.pt", "--json", "{TMP}/nodir/sub/r.json"), (("r.json", "nodir"), NOT_THERE),
        cli_check=wrote("nodir/sub/r.json"), may_succeed=True),
    # ---------------------------------------------------------------- lc-plot
    cli("plot-schedule-missing", "lc-plot", "file", PLOT, "lc-plot schedule <no such folder>",
        ("schedule", "{FIX}/gone_run"), (("gone_run",), NOT_THERE)),
    cli("plot-schedule-empty", "lc-plot", "file", PLOT, "lc-plot schedule <an empty csv>",
        ("schedule", "{FIX}/blank.csv"),
        (("blank.csv",), ("empty", "no header", "0 bytes"), ("CSVLogger", "logger=csv", "lc-train", "expected"))),
    cli("plot-schedule-random", "lc-plot", "file", PLOT, "lc-plot schedule <random bytes>",
        ("schedule", "{FIX}/noise.bin"),
        (("noise.bin",), ("not a csv", "not text", "binary", "cannot be read", "utf", "decode"),
         ("metrics.csv", "CSVLogger", "expected"))),
    cli("plot-schedule-text", "lc-plot", "file", PLOT, "lc-plot schedule <a text file>",
        ("schedule", "{FIX}/notes.txt"),
        (("notes.txt",), ("no column",), ("CSVLogger", "logger=csv", "columns"))),
    cli("plot-schedule-key", "lc-plot", "value", PLOT, "lc-plot schedule run --key compress/nosuch",
        ("schedule", "{FIX}/gmp_run", "--key", "compress/nosuch"),
        (("compress/nosuch",), ("no column",), ("columns",))),
    cli("plot-schedule-unpruned", "lc-plot", "data", PLOT, "lc-plot schedule <a run that pruned nothing>",
        ("schedule", "{FIX}/run"), (("compress/sparsity",), ("no column", "not logged"), ("columns", "--key"))),
    cli("plot-schedule-out-folder", "lc-plot", "file", "cli/plot.py",
        "lc-plot schedule --out <a folder that does not exist>",
        ("schedule", "{FIX}/gmp_run", "--out", "{TMP}/nodir/s.png"), (("s.png", "nodir"), NOT_THERE),
        cli_check=wrote("nodir/s.png"), may_succeed=True),
    cli("plot-sweep-missing", "lc-plot", "file", PLOT, "lc-plot sweep <no such folder>",
        ("sweep", "{FIX}/absent_dir"),
        (("absent_dir",), NOT_THERE, ("multirun", "sweep", "-m"))),
    cli("plot-sweep-file", "lc-plot", "file", PLOT, "lc-plot sweep <a file, not a folder>",
        ("sweep", "{FIX}/notes.txt"),
        (("notes.txt",), ("not a folder", "not a directory", "is a file"), ("multirun", "sweep folder"))),
    cli("plot-sweep-single-run", "lc-plot", "value", PLOT, "lc-plot sweep <a single run, not a multirun>",
        ("sweep", "{FIX}/run"), (("/run",), ("no hydra job", "no job"), ("multirun", "-m", ".hydra"))),
    cli("plot-sweep-metric", "lc-plot", "value", "cli/plot.py", "lc-plot sweep --metric test/nosuch",
        ("sweep", "{FIX}/multirun", "--metric", "test/nosuch"), (("test/nosuch",), ("no job", "logged"), ("metric",))),
    cli("plot-no-command", "lc-plot", "value", "cli/plot.py", "lc-plot without a command", (),
        (("schedule", "what"), ("required",))),
    # ---------------------------------------------------------------- lc-oneshot
    cli("oneshot-model-missing", "lc-oneshot", "file", ONESHOT, "lc-oneshot <no such folder>",
        ("{FIX}/gone_model", "--sparsity", "0.5"), (("gone_model",), (*NOT_THERE, "could not load"),
                                                     ("folder", "config.json", "save_pretrained", "pass "))),
    cli("oneshot-nm-syntax", "lc-oneshot", "value", ONESHOT, "--nm 2x4", ("{MINILM}", "--nm", "2x4"),
        value("--nm", "2x4", ("2:4",))),
    cli("oneshot-task-unknown", "lc-oneshot", "value", "data/glue.py", "--task sst3",
        ("{MINILM}", "--sparsity", "0.5", "--task", "sst3"), value("task", "sst3", ("sst2",))),
    cli("oneshot-batch-size-0", "lc-oneshot", "value", "data/split_data_module.py", "--batch-size 0",
        ("{MINILM}", "--sparsity", "0.5", "--batch-size", "0"), value("batch_size", "0")),
    cli("oneshot-nm-invalid", "lc-oneshot", "value", "pruning/one_shot/prune.py", "--nm 4:4",
        ("{MINILM}", "--nm", "4:4", "--no-eval"), (("`n`", "n=", "--nm"), ("4",), ALLOWED), timeout=120),
    cli("oneshot-sparsity-1.5", "lc-oneshot", "value", "pruning/one_shot/prune.py", "--sparsity 1.5",
        ("{MINILM}", "--sparsity", "1.5", "--no-eval"), value("sparsity", "1.5"), timeout=120),
    cli("oneshot-calibration-0", "lc-oneshot", "value", "pruning/one_shot/prune.py", "--calibration-batches 0",
        ("{MINILM}", "--sparsity", "0.5", "--calibration-batches", "0", "--no-eval"),
        value("calibration_batches", "0"), timeout=120),
    cli("oneshot-ckpt-missing", "lc-oneshot", "file", "core/checkpoints.py", "--ckpt <no such file>",
        ("{MINILM}", "--sparsity", "0.5", "--ckpt", "{FIX}/gone.ckpt", "--no-eval"), (("gone.ckpt",), NOT_THERE),
        timeout=120),
    cli("oneshot-ckpt-crafted", "lc-oneshot", "crafted", "core/checkpoints.py", "--ckpt <a crafted pickle>",
        ("{MINILM}", "--sparsity", "0.5", "--ckpt", "{FIX}/crafted.ckpt", "--no-eval"), crafted("crafted.ckpt"),
        timeout=120),
    cli("oneshot-ckpt-other-model", "lc-oneshot", "file", "core/checkpoints.py", "--ckpt <a SmallCNN checkpoint>",
        ("{MINILM}", "--sparsity", "0.5", "--ckpt", "{FIX}/run/checkpoints/last.ckpt", "--no-eval"),
        (("last.ckpt",), ("fit", "missing", "unexpected", "size mismatch"), ("model", "architecture", "Bert")),
        timeout=120),
]  # fmt: skip

assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
