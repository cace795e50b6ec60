"""The default selection of one-shot methods: the output head and weights tied to an embedding stay dense (a selected
tied weight warns naming both uses); stored block calls drop the key/value cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_compress.pruning.one_shot.prune import one_shot_prune
from lightning_compress.pruning.one_shot.sequential_calibration import without_cache


def _tiny_llama(tied: bool = True) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _windows() -> torch.Tensor:
    return torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("tied", [True, False])
def test_one_shot_prune_leaves_the_output_head_dense_by_default(tied: bool) -> None:
    lm = _tiny_llama(tied)
    embedding = lm.model.embed_tokens.weight.detach().clone()
    result = one_shot_prune(lm, list(_windows()[:, None]), method="wanda", sparsity=0.5)
    assert "lm_head.weight" not in result.masks and len(result.masks) == 14
    reason = result.skipped["lm_head.weight"]
    assert reason.startswith("left out by default: the output head")
    assert ("model.embed_tokens.weight (tied)" in reason) == tied
    assert torch.equal(lm.model.embed_tokens.weight, embedding)


def test_selecting_a_tied_weight_warns_naming_both_uses() -> None:
    lm = _tiny_llama(True)
    with pytest.warns(UserWarning, match=r"lm_head\.weight is the same tensor as model\.embed_tokens\.weight"):
        result = one_shot_prune(lm, list(_windows()[:, None]), method="magnitude", sparsity=0.5, ignore=())
    assert "lm_head.weight" in result.masks
    assert float((lm.model.embed_tokens.weight == 0).float().mean()) == 0.5  # the embedding was pruned with it


def test_the_ignore_patterns_name_modules() -> None:
    lm = _tiny_llama(False)
    result = one_shot_prune(lm, None, method="magnitude", sparsity=0.5, ignore=["lm_head", "*.mlp.down_proj"])
    assert sorted(result.skipped) == ["lm_head.weight", "model.layers.0.mlp.down_proj.weight",
                                      "model.layers.1.mlp.down_proj.weight"]  # fmt: skip
    with pytest.raises(ValueError, match=r"`ignore` must be 'auto' or a list"):
        one_shot_prune(lm, None, method="magnitude", sparsity=0.5, ignore=5)


def test_nan_weights_are_refused_before_pruning_naming_the_layer() -> None:
    net = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    with torch.no_grad():
        net[1].weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"refusing one-shot sparsegpt pruning: .*1\.weight \(0 NaN, 1 Inf of 16\)"):
        one_shot_prune(net, [torch.randn(4, 8)], method="sparsegpt", sparsity=0.5)


def test_stored_block_calls_drop_the_key_value_cache() -> None:
    from transformers import DynamicCache

    kwargs = {"use_cache": True, "past_key_values": DynamicCache(), "cache": DynamicCache(), "position_ids": 3}
    assert without_cache(kwargs) == {"use_cache": False, "past_key_values": None, "cache": None, "position_ids": 3}


def test_block_sequential_pruning_of_a_decoder_matches_a_clean_forward() -> None:
    """Each block re-runs on stored calls; with the cache dropped, a block's stored output equals a fresh forward."""
    lm = _tiny_llama(False)
    result = one_shot_prune(lm, list(_windows()[:, None]), method="sparsegpt", sparsity=0.5)
    assert result.blocks == "model.layers" and all(torch.isfinite(p).all() for p in lm.parameters())
