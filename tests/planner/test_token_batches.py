"""The planner pads token batches to one length (one INT8 compile); the padding must not change a BERT's logits."""

from __future__ import annotations

import torch

from lightning_compress.planner.token_batches import describe_inputs, same_length


def _bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=3)  # fmt: skip
    return BertForSequenceClassification(config).eval()


def _batch(rows: int, length: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[0, length - 2 :] = 0  # a shorter sentence, padded by the collator
    ids = torch.randint(1, 50, (rows, length), generator=g) * mask
    return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask,
            "labels": torch.randint(0, 3, (rows,), generator=g)}  # fmt: skip


def test_padding_to_one_length_keeps_the_logits() -> None:
    model, batches = _bert(), [_batch(4, 7, 0), _batch(3, 12, 1), _batch(2, 5, 2)]
    padded = same_length(batches)
    assert {tuple(b[k].shape) for b in padded for k in ("input_ids", "token_type_ids", "attention_mask")} == {
        (4, 12), (3, 12), (2, 12)
    }  # fmt: skip
    for before, after in zip(batches, padded):
        assert torch.equal(before["labels"], after["labels"])
        assert int(after["attention_mask"].sum()) == int(before["attention_mask"].sum())
        with torch.no_grad():
            want = model(**{k: v for k, v in before.items() if k != "labels"}).logits
            got = model(**{k: v for k, v in after.items() if k != "labels"}).logits
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    text = "input_ids (4, 12), token_type_ids (4, 12), attention_mask (4, 12), labels (4,)"
    assert describe_inputs(padded[0]) == text


def test_batches_without_an_attention_mask_are_left_alone() -> None:
    images = [(torch.randn(2, 1, 4, 4), torch.zeros(2)), (torch.randn(3, 1, 4, 4), torch.zeros(3))]
    assert same_length(images) == images
    ids = [{"input_ids": torch.ones(2, 3, dtype=torch.long)}, {"input_ids": torch.ones(2, 5, dtype=torch.long)}]
    assert [tuple(b["input_ids"].shape) for b in same_length(ids)] == [(2, 3), (2, 5)]  # no mask: padding would count
    assert describe_inputs(torch.zeros(32, 1, 28, 28)) == "a tensor (32, 1, 28, 28)"
