"""The planner on a causal LM: the perplexity metric, the memory target's arithmetic, and the walk choosing INT4
weight-only when memory is the target (a tiny random Llama built offline, a tiny token stream)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lightning_compress.analysis.perplexity import perplexity
from lightning_compress.planner.budget import Budget, Measurement
from lightning_compress.planner.language_model import bf16_weight_bytes, lm_windows, weight_bytes
from lightning_compress.planner.measurer import BenchMeasurer
from lightning_compress.planner.walk import compress

transformers = pytest.importorskip("transformers")


def tiny_llama(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=True)  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()


def tiny_stream(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 96, (16 * 32,), generator=g)


def test_lm_windows_are_disjoint_first_calibrate_last_evaluate():
    tokens = torch.arange(100)
    train, val = lm_windows(tokens, window=10, calibration_windows=3, eval_windows=4, batch_size=3)
    assert [t.shape for t in train] == [torch.Size([1, 10])] * 3 and train[2][0, 0].item() == 20
    assert [v.shape[0] for v in val] == [3, 1] and val[0][0, 0].item() == 60 and val[-1][0, -1].item() == 99
    with pytest.raises(ValueError, match="holds 10 whole windows of 10 tokens .* fewer than 6 calibration \\+ 5"):
        lm_windows(tokens, window=10, calibration_windows=6, eval_windows=5)
    with pytest.raises(ValueError, match="`window`"):
        lm_windows(tokens, window=1)


def test_weight_bytes_count_tied_tensors_once_and_bf16_reference():
    lm = tiny_llama()
    params = {p.data_ptr(): p.numel() for p in lm.parameters()}  # the tied head is the embedding's tensor
    assert lm.lm_head.weight.data_ptr() == lm.model.embed_tokens.weight.data_ptr()
    assert weight_bytes(lm) == 4 * sum(params.values())  # fp32, no persistent buffer
    assert bf16_weight_bytes(lm) == 2 * sum(params.values())
    half = tiny_llama().to(torch.bfloat16)
    assert weight_bytes(half) == bf16_weight_bytes(lm)
    counter = nn.Module()
    counter.register_buffer("steps", torch.zeros(3, dtype=torch.int64))
    assert bf16_weight_bytes(counter) == weight_bytes(counter) == 24  # integer tensors keep their size


def test_weight_bytes_ratio_budget_arithmetic():
    budget = Budget(max_ppl_increase=0.1, weight_bytes_ratio=0.35)
    base = Measurement(metric=10.0, weight_bytes=400, bf16_weight_bytes=200)
    assert budget.shortfalls(Measurement(metric=10.99, weight_bytes=70), base) == []  # +9.9 %, 0.35x
    assert budget.shortfalls(Measurement(metric=11.5, weight_bytes=71), base) == [
        "perplexity +15.00 % > +10 %",
        "weights 0.355x the bf16 weight bytes > 0.35x",
    ]
    assert budget.shortfalls(Measurement(metric=9.0), base) == ["weight bytes not measured"]  # lower ppl: fine
    assert budget.shortfalls(base, base) == ["weights 2.000x the bf16 weight bytes > 0.35x"]  # the fp32 model
    assert budget.drop_points(Measurement(metric=12.0), base) == pytest.approx(20.0) and budget.allowed_drop == 10


def test_budget_refuses_both_or_neither_quality_bound():
    with pytest.raises(ValueError, match="exactly one of `max_drop` .* and `max_ppl_increase`"):
        Budget(max_drop=1, max_ppl_increase=0.1, size_ratio=0.5)
    with pytest.raises(ValueError, match="exactly one of"):
        Budget(weight_bytes_ratio=0.35)
    with pytest.raises(ValueError) as err:
        Budget(max_ppl_increase=-0.1, weight_bytes_ratio=2.5)
    assert "`max_ppl_increase`" in str(err.value) and "`weight_bytes_ratio`" in str(err.value)


def test_measurer_perplexity_matches_perplexity_and_times_nothing():
    lm = tiny_llama()
    _, val = lm_windows(tiny_stream(), window=32, calibration_windows=4, eval_windows=6, batch_size=4)
    measurer = BenchMeasurer(lm, val, val[0][:1], metric="perplexity", checks=None, time=False)
    m = measurer.measure(lm, 1000, "fp32")
    expected = perplexity(lm, torch.cat(val)).perplexity
    assert m.metric == pytest.approx(expected) and 50 < m.metric < 200  # a random 96-token model: near 96
    assert m.latency_ms is None and m.speedup is None
    worse = tiny_llama()
    with torch.no_grad():
        worse.lm_head.weight.mul_(8.0)  # sharper random logits: a worse perplexity
    assert measurer.measure(worse, 1000).metric > m.metric


def test_walk_with_a_memory_target_chooses_int4_weight_only(tmp_path):
    lm = tiny_llama()
    data = lm_windows(tiny_stream(), window=32, calibration_windows=4, eval_windows=6)
    budget = Budget(max_ppl_increase=0.05, weight_bytes_ratio=0.5)
    result = compress(lm, data, budget, tmp_path, metric="perplexity", checks=None, progress=False, plot=False,
                      export_formats=())  # fmt: skip
    records = {r.step: r for r in result.records}
    assert records["ptq_int8"].status == "skipped" and "causal LM" in records["ptq_int8"].reason
    assert records["qat_int8"].status == "skipped"
    # GPTQ with searched ranges, and (the target is weight bytes) the embedding int8 per row, the tied head sharing it
    assert result.met and result.chosen.name == "int4_gptqr_emb8" and result.chosen.step == "int4_weight_only"
    assert result.chosen.details["search_ranges"] is True and "searched ranges" in result.chosen.note
    assert result.chosen.details["int8_embedding"] == {"embedding": "model.embed_tokens", "tied_head": "lm_head"}
    assert "nm24" not in records or records["nm24"].status == "skipped"  # stops at the first that meets
    m, base = result.chosen.measurement, result.baseline
    # the arithmetic, by hand: every Linear but the tied head is INT4 g64 (codes 1/2 byte, fp32 scale, uint8 zero),
    # the embedding int8 (V x D once) + its fp32 row scales + the head's bf16 row scales, the norms bf16
    linear = [mod for name, mod in lm.named_modules() if isinstance(mod, nn.Linear) and name != "lm_head"]
    int4 = sum(x.weight.numel() // 2 + x.weight.numel() // 64 * 5 for x in linear)
    vocab, width = lm.get_input_embeddings().weight.shape
    rest = sum(p.numel() for n, p in lm.named_parameters() if "norm" in n) * 2 + vocab * width + vocab * (4 + 2)
    assert m.weight_bytes == int4 + rest
    assert base.bf16_weight_bytes == 2 * sum(p.numel() for p in lm.parameters())
    assert m.weight_bytes / base.bf16_weight_bytes < 0.5
    assert m.metric == pytest.approx(perplexity(result.model, torch.cat(data[1])).perplexity)
    assert abs(m.metric / base.metric - 1) < 0.05 and not math.isclose(m.metric, base.metric, rel_tol=1e-9)
    table = (tmp_path / "candidates.csv").read_text().splitlines()
    assert table[0].startswith("candidate,step,perplexity,increase %,") and "x bf16 weights" in table[0]
    state = json.loads((tmp_path / "planner_state.json").read_text())
    assert state["budget"]["weight_bytes_ratio"] == 0.5
    assert (tmp_path / "chosen" / "model.safetensors").is_file()
    # the chosen file reads back (safetensors, no pickle) into the same model: int8 embedding, shared codes
    from lightning_compress.planner.candidates import load_artifact

    back = load_artifact("int4", tmp_path / "chosen" / "model.safetensors", lm)
    assert back.lm_head.weight_int8.data_ptr() == back.model.embed_tokens.weight_int8.data_ptr()
    assert weight_bytes(back) == m.weight_bytes
    ids = torch.cat(data[1])[:1]
    with torch.no_grad():
        assert torch.equal(back(ids).logits, result.model(ids).logits)


def test_walk_refuses_a_metric_that_does_not_fit_the_budget(tmp_path):
    lm = tiny_llama()
    data = lm_windows(tiny_stream(), window=32, calibration_windows=4, eval_windows=6)
    with pytest.raises(ValueError, match="metric='perplexity' needs a budget with `max_ppl_increase`"):
        compress(lm, data, Budget(max_drop=1, weight_bytes_ratio=0.5), tmp_path, metric="perplexity")
    with pytest.raises(ValueError, match="`max_ppl_increase` goes with metric='perplexity'"):
        compress(lm, data, Budget(max_ppl_increase=0.1, weight_bytes_ratio=0.5), tmp_path, metric="accuracy")
    bad = ([torch.zeros(1, 32, dtype=torch.long)], [torch.randn(2, 32)])
    with pytest.raises(ValueError, match='metric="perplexity" needs validation batches of token ids'):
        compress(lm, bad, Budget(max_ppl_increase=0.1, weight_bytes_ratio=0.5), tmp_path, metric="perplexity")
