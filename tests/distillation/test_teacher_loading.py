"""Teachers from files without unpickling: checkpoints, state dicts and safetensors into an architecture, Hugging Face
and pruned-model folders without remote code; a whole pickled module only with allow_pickle, which warns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lightning_compress.core.checkpoints import UnsafeLoadWarning
from lightning_compress.distillation.distillation_module import DistillationModule
from lightning_compress.distillation.teacher import load_teacher
from lightning_compress.models import SmallCNN
from lightning_compress.pruning.structured.channels import remove_channels
from lightning_compress.pruning.structured.serialization import save_pruned


def _cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(channels=(4, 8), hidden=16).eval()


X = torch.randn(2, 1, 28, 28)


def test_a_safetensors_state_dict_loads_into_the_architecture(tmp_path: Path) -> None:
    cnn = _cnn()
    save_file(cnn.state_dict(), tmp_path / "teacher.safetensors")
    loaded = load_teacher(tmp_path / "teacher.safetensors", teacher_model=SmallCNN(channels=(4, 8), hidden=16))
    assert torch.equal(loaded(X), cnn(X)) and not loaded.training


def test_a_pickled_module_needs_allow_pickle(tmp_path: Path) -> None:
    cnn = _cnn()
    torch.save(cnn, tmp_path / "cnn.pt")
    with pytest.raises(ValueError, match="allow_pickle=True") as err:
        load_teacher(tmp_path / "cnn.pt")
    assert "SmallCNN" in str(err.value)  # the classes it would import
    with pytest.warns(UnsafeLoadWarning, match="cnn.pt"):
        assert torch.equal(load_teacher(tmp_path / "cnn.pt", allow_pickle=True)(X), cnn(X))


def test_distillation_module_passes_allow_pickle_and_does_not_save_it(tmp_path: Path) -> None:
    torch.save(_cnn(), tmp_path / "cnn.pt")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        DistillationModule(SmallCNN(channels=(2, 4), hidden=8), str(tmp_path / "cnn.pt"), num_classes=10)
    with pytest.warns(UnsafeLoadWarning):
        module = DistillationModule(SmallCNN(channels=(2, 4), hidden=8), str(tmp_path / "cnn.pt"), num_classes=10,
                                    allow_pickle=True)  # fmt: skip
    assert "allow_pickle" not in module.hparams  # a checkpoint never turns it on


def test_a_pruned_model_folder_is_a_teacher(tmp_path: Path) -> None:
    small = remove_channels(_cnn(), {"features.0": [0, 3]}).eval()
    save_pruned(small, tmp_path / "pruned")
    assert torch.equal(load_teacher(tmp_path / "pruned")(X), small(X))


def test_a_hugging_face_folder_loads_without_remote_code(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16)  # fmt: skip
    bert = transformers.BertForSequenceClassification(config).eval()
    bert.save_pretrained(tmp_path / "bert")
    data = json.loads((tmp_path / "bert" / "config.json").read_text())
    data["auto_map"] = {"AutoModelForSequenceClassification": "evil.EvilModel"}  # code the folder asks to run
    (tmp_path / "bert" / "config.json").write_text(json.dumps(data))
    (tmp_path / "bert" / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    ids = torch.randint(0, 50, (2, 6))
    loaded = load_teacher(tmp_path / "bert")
    assert type(loaded) is transformers.BertForSequenceClassification
    assert torch.equal(loaded(input_ids=ids).logits, bert(input_ids=ids).logits)


def test_a_folder_without_a_config_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no config.json"):
        load_teacher(tmp_path / "empty")
