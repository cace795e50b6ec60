"""The teacher-logit cache: content keys, computing each example once, and the shared file on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_compress.distillation.teacher import module_fingerprint
from lightning_compress.distillation.teacher_cache import TeacherCache, example_keys, select_examples


class CountingTeacher(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(6, 3)
        self.calls = 0
        self.examples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.examples += len(x)
        return self.linear(x)


def test_keys_follow_content_not_position() -> None:
    x = torch.randn(5, 6)
    keys = example_keys(x)
    assert len(set(keys)) == 5 and all(len(k) == 16 for k in keys)
    assert example_keys(x.flip(0)) == keys[::-1]
    assert example_keys(x.double())[0] != keys[0]  # the dtype is part of the key


def test_dict_keys_ignore_labels_and_padding() -> None:
    ids = torch.tensor([[101, 7, 8, 102, 0, 0], [101, 9, 102, 0, 0, 0]])
    mask = (ids != 0).long()
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": torch.zeros_like(ids),
        "labels": torch.tensor([0, 1]),
    }
    short = {k: v[:, :4] for k, v in batch.items() if k != "labels"}
    other_labels = {**batch, "labels": torch.tensor([1, 0])}
    assert example_keys(batch) == example_keys(short) == example_keys(other_labels)
    assert example_keys(batch)[0] != example_keys(batch)[1]


def test_each_example_is_computed_once_across_epochs_and_orders() -> None:
    teacher, cache = CountingTeacher(), TeacherCache()
    data = torch.randn(20, 6)
    for epoch in range(3):
        order = torch.randperm(20, generator=torch.Generator().manual_seed(epoch))
        for batch in order.split(8):
            with torch.no_grad():
                out = cache.logits(data[batch], teacher)
            torch.testing.assert_close(out, teacher.linear(data[batch]), rtol=0, atol=1e-6)
    assert teacher.examples == 20  # every example once, in epoch 0 only
    assert teacher.calls == 3  # the 3 batches of epoch 0
    assert cache.hits == 40 and cache.misses == 20 and len(cache) == 20


def test_only_the_missing_examples_are_computed() -> None:
    teacher, cache = CountingTeacher(), TeacherCache()
    data = torch.randn(6, 6)
    with torch.no_grad():
        cache.logits(data[:4], teacher)
        cache.logits(data[2:], teacher)
    assert teacher.examples == 6 and teacher.calls == 2


def test_select_examples_of_dicts() -> None:
    batch = {"input_ids": torch.arange(12).view(4, 3), "attention_mask": torch.ones(4, 3)}
    assert select_examples(batch, [3, 1])["input_ids"].tolist() == [[9, 10, 11], [3, 4, 5]]


def test_disk_cache_is_shared_and_merged(tmp_path: Path) -> None:
    teacher = CountingTeacher()
    fingerprint = module_fingerprint(teacher)
    data = torch.randn(10, 6)
    with torch.no_grad():
        first = TeacherCache(tmp_path, fingerprint)
        reference = first.logits(data[:6], teacher)
        path = first.save()
        assert path == tmp_path / f"teacher-logits-{fingerprint}.rank0.safetensors" and path.is_file()
        assert first.save() is None  # nothing new

        other = TeacherCache(tmp_path, fingerprint)  # e.g. another sweep job on part of the same data
        assert other.load() == 6
        calls = teacher.calls
        torch.testing.assert_close(other.logits(data[:6], teacher), reference, rtol=0, atol=0)
        assert teacher.calls == calls
        other.logits(data[6:], teacher)
        other.save()

        third = TeacherCache(tmp_path, fingerprint)
        assert third.load() == 10
        assert TeacherCache(tmp_path, "another-teacher").load() == 0


def test_fingerprint_changes_with_the_weights() -> None:
    teacher = CountingTeacher()
    before = module_fingerprint(teacher)
    with torch.no_grad():
        teacher.linear.weight[0, 0] += 1e-3
    assert module_fingerprint(teacher) != before
    assert module_fingerprint(teacher, extra="torch.bfloat16") != module_fingerprint(teacher)


def test_a_folder_needs_a_fingerprint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`fingerprint` must name the teacher"):
        TeacherCache(tmp_path)
