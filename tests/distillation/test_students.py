"""Students built from teachers: copied layers compute what they computed in the teacher."""

from __future__ import annotations

import pytest
import torch

from lightning_compress.distillation.students import layer_subset_student, small_cnn_student, student_layers
from lightning_compress.models import SmallCNN

transformers = pytest.importorskip("transformers")


def tiny_bert(layers: int = 4, num_labels: int = 3) -> transformers.BertForSequenceClassification:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
        num_labels=num_labels,
    )
    return transformers.BertForSequenceClassification(config).eval()


def batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 100, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_student_layers() -> None:
    assert student_layers(6, every=2) == [1, 3, 5]
    assert student_layers(6, every=3) == [2, 5]
    assert student_layers(6, every=1) == [0, 1, 2, 3, 4, 5]
    assert student_layers(12, layers=[0, 2, 4, 7, 9, 11]) == [0, 2, 4, 7, 9, 11]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of `layers` or `every`"),
        ({"layers": [1], "every": 2}, "exactly one of `layers` or `every`"),
        ({"every": 0}, r"`every` must be an int in \[1, 6\].*got 0"),
        ({"layers": [3, 1]}, r"`layers` must be increasing, distinct layer indices in \[0, 5\], got \[3, 1\]"),
        ({"layers": [6]}, r"in \[0, 5\], got \[6\]"),
        ({"layers": []}, "got \\[\\]"),
    ],
)
def test_bad_layer_choices(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        student_layers(6, **kwargs)


def test_copied_layers_compute_what_they_did_in_the_teacher() -> None:
    teacher = tiny_bert(layers=4)
    student = layer_subset_student(teacher, layers=[1, 3])
    assert student.training  # made to be trained
    student.eval()
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    assert teacher.config.num_hidden_layers == 4  # untouched
    x = {"input_ids": batch()["input_ids"]}  # no padding: a layer called without a mask sees what it saw in the model
    with torch.no_grad():
        t = teacher(**x, output_hidden_states=True)
        s = student(**x, output_hidden_states=True)
    # embeddings copied
    torch.testing.assert_close(s.hidden_states[0], t.hidden_states[0], rtol=0, atol=0)
    # student layer j applied to the teacher's input of layer layers[j] gives the teacher's output of that layer
    for j, i in enumerate([1, 3]):
        with torch.no_grad():
            out_s = student.bert.encoder.layer[j](t.hidden_states[i])
            out_t = teacher.bert.encoder.layer[i](t.hidden_states[i])
        out_s = out_s[0] if isinstance(out_s, tuple) else out_s
        out_t = out_t[0] if isinstance(out_t, tuple) else out_t
        torch.testing.assert_close(out_s, out_t, rtol=0, atol=0)
        torch.testing.assert_close(out_t, t.hidden_states[i + 1], rtol=1e-5, atol=1e-5)
    # pooler and classifier copied
    for name in ("bert.pooler.dense.weight", "classifier.weight", "classifier.bias"):
        assert torch.equal(student.state_dict()[name], teacher.state_dict()[name]), name
    # the student's own layer 0 is the teacher's layer 1
    assert torch.equal(
        student.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[1].output.dense.weight
    )
    assert (
        student.bert.encoder.layer[0].output.dense.weight.data_ptr()
        != teacher.bert.encoder.layer[1].output.dense.weight.data_ptr()
    )


def test_keeping_every_layer_reproduces_the_teacher() -> None:
    teacher = tiny_bert(layers=2)
    student = layer_subset_student(teacher, every=1).eval()
    x = batch()
    with torch.no_grad():
        torch.testing.assert_close(student(**x).logits, teacher(**x).logits, rtol=0, atol=0)


def test_label_count_must_match_the_teacher() -> None:
    with pytest.raises(
        ValueError, match="`num_classes` must equal the teacher's label count config.num_labels=3, got 2"
    ):
        layer_subset_student(tiny_bert(), every=2, num_classes=2)
    assert layer_subset_student(tiny_bert(), every=2, num_classes=3).config.num_labels == 3


def test_small_cnn_student_copies_the_task_shape() -> None:
    teacher = SmallCNN(channels=(64, 128), hidden=256)
    student = small_cnn_student(teacher, channels=(8, 16), hidden=32)
    assert student(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert [m.out_channels for m in student.features if isinstance(m, torch.nn.Conv2d)] == [8, 16]
    digits = small_cnn_student(SmallCNN(num_classes=4, image_size=8, channels=(16, 32)), channels=(4, 8), hidden=8)
    assert digits(torch.zeros(1, 1, 8, 8)).shape == (1, 4)
    with pytest.raises(TypeError, match="`teacher` must be a SmallCNN, got Linear"):
        small_cnn_student(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
