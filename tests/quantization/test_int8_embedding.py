"""The int8 per-row embedding (and the output head tied to it): exact de-quantized rows, one shared int8 tensor,
weight bytes counted once, and the weight-only file's round trip (safetensors), on a tiny random Llama."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_compress.planner.language_model import weight_bytes
from lightning_compress.quantization.weight_only import load_weight_only, save_weight_only
from lightning_compress.quantization.weight_only.int8_embedding import Int8Embedding, int8_embedding_
from lightning_compress.quantization.weight_only.weight_only_linear import Int8WeightOnlyLinear

transformers = pytest.importorskip("transformers")


def tiny_llama(tied: bool = True) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=tied)  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()


def test_lookup_equals_the_dequantized_rows_and_the_rounding_is_per_row():
    weight = torch.randn(20, 8) * torch.linspace(0.01, 3, 20).unsqueeze(1)
    emb = Int8Embedding.from_float(weight, dtype=torch.float32)
    ids = torch.tensor([[3, 0, 19], [7, 7, 1]])
    expected = emb.weight_int8.float()[ids] * emb.scale[ids].unsqueeze(-1)
    assert torch.equal(emb(ids), expected) and emb(ids).shape == (2, 3, 8)
    assert torch.equal(emb(ids), emb.dequantized_weight()[ids])
    assert emb.weight_int8.abs().amax(dim=1).eq(127).all()  # each row uses its whole grid
    err = (emb.dequantized_weight() - weight).abs()
    assert (err <= emb.scale.unsqueeze(1) / 2 + 1e-6).all()  # at most half a step of the row's own scale
    with pytest.raises(ValueError, match="NaN or Inf"):
        Int8Embedding.from_float(torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match="`scale` must hold one value per row"):
        Int8Embedding.from_codes(torch.zeros(3, 2, dtype=torch.int8), torch.ones(2))


def test_tied_head_shares_the_codes_and_weight_bytes_count_them_once():
    lm = tiny_llama()
    vocab, width = lm.get_input_embeddings().weight.shape
    before = weight_bytes(lm)
    ids = torch.randint(0, vocab, (2, 12))
    with torch.no_grad():
        reference = lm(ids).logits
    names = int8_embedding_(lm, dtype=torch.float32)
    assert names == {"embedding": "model.embed_tokens", "tied_head": "lm_head"}
    emb, head = lm.model.embed_tokens, lm.lm_head
    assert isinstance(emb, Int8Embedding) and isinstance(head, Int8WeightOnlyLinear)
    assert head.weight_int8.data_ptr() == emb.weight_int8.data_ptr()
    assert head.scale.data_ptr() == emb.scale.data_ptr()  # fp32 compute: the row scales are one tensor too
    # the fp32 table (V x D x 4 bytes, once) -> the int8 codes once + the fp32 row scales once
    assert before - weight_bytes(lm) == vocab * width * 4 - (vocab * width + vocab * 4)
    with torch.no_grad():
        logits = lm(ids).logits
    assert logits.shape == reference.shape and (logits - reference).abs().max() < 0.05 * reference.abs().max()
    with pytest.raises(ValueError, match="no nn.Embedding input embedding"):
        int8_embedding_(lm)  # already swapped


def test_source_table_is_rounded_instead_of_the_cast_weight():
    lm = tiny_llama()
    table = lm.get_input_embeddings().weight.detach().clone()
    lm = lm.to(torch.bfloat16)
    int8_embedding_(lm, source=table)
    assert torch.equal(lm.model.embed_tokens.weight_int8, Int8Embedding.from_float(table).weight_int8)
    with pytest.raises(ValueError, match="`source` must be the embedding's shape"):
        int8_embedding_(tiny_llama(), source=table[:3])


def test_an_untied_head_stays_float():
    lm = tiny_llama(tied=False)
    assert int8_embedding_(lm)["tied_head"] is None and isinstance(lm.lm_head, nn.Linear)


def test_weight_only_file_round_trip_keeps_one_shared_tensor(tmp_path):
    lm = tiny_llama().to(torch.bfloat16)
    int8_embedding_(lm)
    path = tmp_path / "model.safetensors"
    save_weight_only(lm, path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight_int8" in keys and "lm_head.weight_int8" not in keys  # stored once
    loaded = load_weight_only(tiny_llama().to(torch.bfloat16), path)
    assert isinstance(loaded.model.embed_tokens, Int8Embedding) and isinstance(loaded.lm_head, Int8WeightOnlyLinear)
    assert loaded.lm_head.weight_int8.data_ptr() == loaded.model.embed_tokens.weight_int8.data_ptr()
    assert loaded.model.embed_tokens.scale.dtype == torch.float32
    assert weight_bytes(loaded) == weight_bytes(lm)
    ids = torch.randint(0, 96, (1, 10))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, lm(ids).logits)
