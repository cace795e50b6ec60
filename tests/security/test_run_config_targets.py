"""What a file may ask the library to build (core.safe_targets), and a run folder that passes the check loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_compress.cli.model_spec import load_model
from lightning_compress.core.safe_targets import check_target, check_tree
from lightning_compress.models import SmallCNN

ALLOWED = [
    "torch.nn.Linear",
    "torch.nn.Sequential",
    "lightning_compress.models.SmallCNN",
    "lightning_compress.models.torchvision_model",
    "lightning_compress.models.huggingface_classifier",
    "lightning_compress.load_teacher",
    "lightning_compress.pruned_student",
    "lightning_compress.layer_subset_student",
    "lightning_compress.data.MNIST5kDataModule",
    "transformers.BertForSequenceClassification",
    "transformers.AutoModelForSequenceClassification.from_pretrained",
]
REFUSED = {
    "torch.load": "builds no model",
    "torch.jit.load": "builds no model",
    "torch.hub.load": "torch.hub",
    "os.system": "package 'os'",
    "builtins.eval": "package 'builtins'",
    "subprocess.run": "package 'subprocess'",
    "torch.nn.modules.module.__builtins__": "private",
    "lightning_compress.export.load_compressed": "builds no model",
    "lightning_compress.core.checkpoints.load_pickled": "builds no model",
    "torch.Tensor": "no nn.Module",
    "torch.optim.SGD": "no nn.Module",
}


@pytest.mark.parametrize("target", ALLOWED)
def test_model_builders_are_allowed(target: str) -> None:
    pytest.importorskip(target.split(".")[0])
    assert callable(check_target(target, "model._target_"))


@pytest.mark.parametrize("target", REFUSED)
def test_other_callables_are_refused_naming_key_and_target(target: str) -> None:
    with pytest.raises(ValueError) as err:
        check_target(target, "model.teacher._target_")
    assert f"model.teacher._target_ = {target!r}" in str(err.value) and REFUSED[target] in str(err.value)


def test_nested_targets_and_forbidden_keys_are_found() -> None:
    ok = {"_target_": "torch.nn.Sequential", "_args_": [{"_target_": "torch.nn.Linear", "in_features": 2,
                                                          "out_features": 2}]}  # fmt: skip
    check_tree(ok, "model")
    with pytest.raises(ValueError, match=r"model\.kwargs\.inner\[1\]\._target_ = 'os\.system'"):
        check_tree({"_target_": "torch.nn.Identity", "kwargs": {"inner": [{}, {"_target_": "os.system"}]}}, "model")
    with pytest.raises(ValueError, match=r"model\.cfg\.trust_remote_code = True"):
        check_tree({"_target_": "torch.nn.Identity", "cfg": {"trust_remote_code": True}}, "model")
    check_tree({"_target_": "torch.nn.Identity", "trust_remote_code": False}, "model")  # false is fine
    with pytest.raises(ValueError, match=r"model\.allow_pickle = False is not allowed in a file"):
        check_tree({"_target_": "lightning_compress.load_teacher", "allow_pickle": False}, "model")


def test_a_run_folder_that_passes_the_check_loads(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / ".hydra" / "config.yaml").write_text(
        "paths:\n  output_dir: ${hydra:runtime.output_dir}\n"  # resolvable only in a Hydra run: never resolved here
        "model:\n  _target_: lightning_compress.models.SmallCNN\n  num_classes: 10\n  channels: [4, 8]\n  hidden: 16\n"
    )
    torch.manual_seed(0)
    trained = SmallCNN(channels=(4, 8), hidden=16).eval()
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}}, run / "checkpoints" / "last.ckpt"
    )
    loaded = load_model(str(run)).eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded(x), trained(x))
