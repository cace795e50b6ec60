"""Head and FFN-neuron pruning of BERT: the sliced model equals the masked original, and reloads with transformers."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
)

from lightning_compress.distillation.distillation_module import DistillationModule  # noqa: E402
from lightning_compress.models import SmallCNN  # noqa: E402
from lightning_compress.pruning.structured.pruned_bert import PrunedBertForSequenceClassification  # noqa: E402
from lightning_compress.pruning.structured.report import num_parameters  # noqa: E402
from lightning_compress.pruning.structured.serialization import load_pruned, save_pruned  # noqa: E402
from lightning_compress.pruning.structured.transformer import (  # noqa: E402
    head_gates,
    neuron_gates,
    prune_ffn_neurons,
    prune_heads,
    remove_ffn_neurons,
    remove_heads,
)
from lightning_compress.pruning.structured.unit_gates import gated  # noqa: E402

HIDDEN, HEADS, HEAD_SIZE, FFN, LAYERS = 32, 4, 8, 64, 2
L0, L1 = "bert.encoder.layer.0", "bert.encoder.layer.1"


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=32, num_labels=3)  # fmt: skip
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # weights large enough that every head and neuron matters
        for name, p in model.named_parameters():
            if "LayerNorm" not in name:
                p.normal_(0.0, 0.3)
    return model


def batch(seed: int = 1, size: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(size, 10, dtype=torch.long)
    mask[0, 7:] = 0  # padding in one sequence
    return {"input_ids": torch.randint(0, 100, (size, 10), generator=g), "attention_mask": mask,
            "labels": torch.randint(0, 3, (size,), generator=g)}  # fmt: skip


def inputs(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in b.items() if k != "labels"}


@torch.no_grad()
def logits(model: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**inputs(b)).logits


@torch.no_grad()
def zero_heads(model: BertForSequenceClassification, removed: dict[str, list[int]]) -> BertForSequenceClassification:
    """The original with heads removed by zeroing their value rows: their context vectors are then exactly 0."""
    masked = copy.deepcopy(model)
    for name, heads in removed.items():
        value = masked.get_submodule(name).attention.self.value
        for h in heads:
            value.weight[h * HEAD_SIZE : (h + 1) * HEAD_SIZE] = 0
            value.bias[h * HEAD_SIZE : (h + 1) * HEAD_SIZE] = 0
    return masked


@torch.no_grad()
def zero_neurons(model: BertForSequenceClassification, removed: dict[str, list[int]]) -> BertForSequenceClassification:
    """The original with FFN neurons removed by zeroing their pre-activation (GELU(0) = 0)."""
    masked = copy.deepcopy(model)
    for name, neurons in removed.items():
        dense = masked.get_submodule(name).intermediate.dense
        dense.weight[neurons] = 0
        dense.bias[neurons] = 0
    return masked


def test_removed_heads_equal_zeroed_heads_and_shrink_parameters() -> None:
    model, b = tiny_bert(), batch()
    small = remove_heads(model, {L0: [0, 2], L1: [1, 2, 3]})
    assert isinstance(small, PrunedBertForSequenceClassification)
    assert small.config.attention_heads_per_layer == [2, 3]
    assert small.bert.encoder.layer[0].attention.self.query.out_features == 2 * HEAD_SIZE
    assert small.bert.encoder.layer[1].attention.output.dense.in_features == 3 * HEAD_SIZE
    torch.testing.assert_close(logits(small, b), logits(zero_heads(model, {L0: [1, 3], L1: [0]}), b), rtol=0, atol=1e-5)
    per_head = 3 * (HIDDEN * HEAD_SIZE + HEAD_SIZE) + HIDDEN * HEAD_SIZE  # q, k, v rows and biases; output columns
    assert num_parameters(model) - num_parameters(small) == 3 * per_head
    assert num_parameters(model) == num_parameters(tiny_bert())  # the original is untouched


def test_removed_neurons_equal_zeroed_neurons() -> None:
    model, b = tiny_bert(), batch()
    keep = {L0: list(range(0, FFN, 2)), L1: list(range(32, FFN))}
    small = remove_ffn_neurons(model, keep)
    assert type(small) is BertForSequenceClassification and small.config.intermediate_size == 32
    removed = {L0: list(range(1, FFN, 2)), L1: list(range(32))}
    torch.testing.assert_close(logits(small, b), logits(zero_neurons(model, removed), b), rtol=0, atol=1e-5)
    assert num_parameters(model) - num_parameters(small) == LAYERS * 32 * (2 * HIDDEN + 1)


def test_gates_at_zero_equal_slicing() -> None:
    model, b = tiny_bert(), batch()
    gates = head_gates(model)
    gates[L0].values[torch.tensor([1, 3])] = 0.0
    with gated(gates.values()):
        masked = logits(model, b)
    torch.testing.assert_close(logits(remove_heads(model, {L0: [0, 2]}), b), masked, rtol=0, atol=1e-5)
    gates = neuron_gates(model)
    for gate in gates.values():
        gate.values[:16] = 0.0
    with gated(gates.values()):
        masked = logits(model, b)
    small = remove_ffn_neurons(model, {name: range(16, FFN) for name in gates})
    torch.testing.assert_close(logits(small, b), masked, rtol=0, atol=1e-5)


def test_prune_heads_removes_the_least_important_and_matches_the_gated_original() -> None:
    model, b = tiny_bert(), batch()
    with torch.no_grad():  # head 1 of layer 0 contributes nothing: its gate gradient is exactly 0
        model.bert.encoder.layer[0].attention.self.value.weight[HEAD_SIZE : 2 * HEAD_SIZE] = 0
        model.bert.encoder.layer[0].attention.self.value.bias[HEAD_SIZE : 2 * HEAD_SIZE] = 0
    small, report = prune_heads(model, 0.25, [batch(2), batch(3)])
    assert report.kind == "heads" and report.batches == 2 and report.units_removed == 2
    assert report.removed[L0] == [1] and report.scores[L0][1] == 0
    assert all(len(kept) == 3 for kept in report.kept.values())
    assert report.params_before - report.params_after == num_parameters(model) - num_parameters(small)
    gates = head_gates(model)
    for name, removed in report.removed.items():
        gates[name].values[removed] = 0.0
    with gated(gates.values()):
        masked = logits(model, b)
    torch.testing.assert_close(logits(small, b), masked, rtol=0, atol=1e-5)
    assert "Pruned 2/8 heads" in str(report)


def test_prune_ffn_neurons_matches_the_zeroed_original_and_respects_max_batches() -> None:
    model, b = tiny_bert(), batch()
    small, report = prune_ffn_neurons(model, 0.5, [batch(2), batch(3), batch(4)], max_batches=2)
    assert report.batches == 2 and small.config.intermediate_size == 32
    torch.testing.assert_close(logits(small, b), logits(zero_neurons(model, report.removed), b), rtol=0, atol=1e-5)


def test_zero_fraction_is_an_unpruned_copy() -> None:
    model, b = tiny_bert(), batch()
    small, report = prune_ffn_neurons(model, 0.0, [batch()])
    assert report.units_removed == 0 and small is not model
    torch.testing.assert_close(logits(small, b), logits(model, b), rtol=0, atol=0)


def test_head_and_neuron_pruned_bert_reloads_without_remote_code(tmp_path: Path) -> None:
    model, b = tiny_bert(), batch()
    small, _ = prune_heads(model, 0.5, [batch(2)])
    small, _ = prune_ffn_neurons(small, 0.25, [batch(2)])
    save_pruned(small, tmp_path / "saved")
    assert not list((tmp_path / "saved").glob("*.py"))  # no code travels with the weights
    assert "auto_map" not in json.loads((tmp_path / "saved" / "config.json").read_text())
    reloaded = load_pruned(tmp_path / "saved")
    assert type(reloaded) is PrunedBertForSequenceClassification
    assert [layer.attention.self.num_attention_heads for layer in reloaded.bert.encoder.layer] == [2, 2]
    assert reloaded.config.intermediate_size == 48
    torch.testing.assert_close(logits(reloaded, b), logits(small, b), rtol=0, atol=0)
    # transformers 5 ignores config.pruned_heads: plain transformers refuses the narrower layers, never loads them wrong
    with pytest.raises(RuntimeError, match="mismatch"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")


def test_save_pretrained_of_a_head_pruned_bert_ships_no_code_and_reloads_with_load_pruned(tmp_path: Path) -> None:
    model, b = tiny_bert(), batch()
    small, _ = prune_heads(model, 0.5, [batch(2)])
    small.save_pretrained(tmp_path)
    assert not (tmp_path / "pruned_bert.py").exists()
    (tmp_path / "pruned_bert.py").write_text("raise SystemExit('the folder code ran')\n")  # an older folder's copy
    reloaded = load_pruned(tmp_path)  # this library's class: the folder's .py is never run
    torch.testing.assert_close(logits(reloaded, b), logits(small, b), rtol=0, atol=0)


def test_neuron_pruned_bert_reloads_without_remote_code(tmp_path: Path) -> None:
    model, b = tiny_bert(), batch()
    small, _ = prune_ffn_neurons(model, 0.5, [batch(2)])
    small.save_pretrained(tmp_path / "plain")
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path / "plain").eval()
    torch.testing.assert_close(logits(reloaded, b), logits(small, b), rtol=0, atol=1e-6)
    save_pruned(small, tmp_path / "saved")  # the library's folder loads with plain transformers too
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    torch.testing.assert_close(logits(reloaded, b), logits(small, b), rtol=0, atol=1e-6)


def test_base_model_heads_save_and_load(tmp_path: Path) -> None:
    model = tiny_bert().bert
    assert type(model) is BertModel
    small = remove_heads(model, {"encoder.layer.1": [3]})
    save_pruned(small, tmp_path / "model")
    reloaded = load_pruned(tmp_path / "model")
    b = inputs(batch())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**b).last_hidden_state, small(**b).last_hidden_state, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log()`")
def test_pruned_student_distils_from_the_original() -> None:
    teacher = tiny_bert().requires_grad_(False)  # as load_teacher leaves it: the student must still be trainable
    student, _ = prune_heads(teacher, 0.5, [batch(2)])
    module = DistillationModule(student.train(), teacher, num_classes=3, temperature=2.0)
    loss = module.training_step(batch(5), 0)
    loss.backward()
    assert torch.isfinite(loss) and student.bert.encoder.layer[0].attention.self.query.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5, True, "0.5", None])
def test_bad_fraction(fraction: object) -> None:
    with pytest.raises(ValueError, match=r"`fraction` must be a float in \[0, 1\).*got"):
        prune_heads(tiny_bert(), fraction, [batch()])  # type: ignore[arg-type]


def test_empty_loader_unsupported_model_and_bad_keep() -> None:
    with pytest.raises(ValueError, match="`dataloader` yielded no batches"):
        prune_ffn_neurons(tiny_bert(), 0.5, [])
    with pytest.raises(ValueError, match="`model` must be a BERT-family .* got SmallCNN"):
        prune_heads(SmallCNN(), 0.5, [batch()])
    with pytest.raises(ValueError, match="`max_batches` must be None .* got 0"):
        prune_heads(tiny_bert(), 0.5, [batch()], max_batches=0)
    with pytest.raises(ValueError, match=r"`keep\['bert.encoder.layer.0'\]` must be distinct head indices in \[0, 3\]"):
        remove_heads(tiny_bert(), {L0: [0, 4]})
    with pytest.raises(ValueError, match="the same number of FFN neurons in every layer"):
        remove_ffn_neurons(tiny_bert(), {L0: [0, 1]})
    with pytest.raises(ValueError, match="do not exist"):
        remove_heads(tiny_bert(), {"encoder.layer.0": [0]})
