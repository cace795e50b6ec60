"""Perplexity over sliding windows of a token stream, on any causal LM."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_compress.analysis.perplexity import perplexity, token_windows


class _Uniform(nn.Module):
    """Logits all equal: perplexity is exactly the vocabulary size."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, self.vocab) + self.dummy


def test_uniform_logits_give_the_vocabulary_size_and_every_token_is_counted_once() -> None:
    ids = torch.randint(0, 50, (103,))
    result = perplexity(_Uniform(50), ids, window=20, stride=10)
    assert result.perplexity == pytest.approx(50.0) and result.tokens == 102
    disjoint = perplexity(_Uniform(50), ids, window=20)
    assert disjoint.tokens == 103 - 6 and disjoint.windows == 6  # each window's first token is context only


def test_sliding_windows_equal_the_hugging_face_loss_on_a_real_lm() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2)).eval()  # fmt: skip
    windows = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = math.exp(sum(float(lm(w[None], labels=w[None]).loss) for w in windows) / 3)
    assert perplexity(lm, windows).perplexity == pytest.approx(expected, rel=1e-5)
    assert perplexity(lm, windows.reshape(-1), window=16, batch_size=2).perplexity == pytest.approx(expected, rel=1e-5)


def test_token_windows_and_bad_input() -> None:
    assert token_windows(torch.arange(10), 3, start=-2).tolist() == [[3, 4, 5], [6, 7, 8]]
    assert token_windows(torch.arange(10), 3, count=1).tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError, match="holds 3 whole windows of 3"):
        token_windows(torch.arange(10), 3, start=2, count=2)
    with pytest.raises(ValueError, match=r"`stride` must be <= window=4, got 5; `batch_size` must be an int >= 1"):
        perplexity(_Uniform(5), torch.zeros(10, dtype=torch.long), window=4, stride=5, batch_size=0)
    with pytest.raises(ValueError, match="`tokens` must be an integer tensor"):
        perplexity(_Uniform(5), torch.zeros(10), window=4)
