"""The INT4 / INT8 weight-only modules: packing round-trips exactly, the kernels agree with the de-quantized matmul,
the modules save and load through safetensors, and a whole model swaps its layers and reloads."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from lightning_compress.quantization.weight_only.grid import dequantize, grid_parameters, quantize
from lightning_compress.quantization.weight_only.packing import pack_int4, unpack_int4
from lightning_compress.quantization.weight_only.quantize import one_shot_quantize
from lightning_compress.quantization.weight_only.weight_only_file import load_weight_only, save_weight_only
from lightning_compress.quantization.weight_only.weight_only_linear import (
    Int4WeightOnlyLinear,
    Int8WeightOnlyLinear,
    to_weight_only_,
)


def test_int4_packing_round_trips_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (48, 96), generator=g, dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.shape == (48, 48) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed), codes)
    with pytest.raises(ValueError, match="0..15"):
        pack_int4(torch.full((2, 2), 16, dtype=torch.uint8))


@pytest.mark.parametrize("group_size", [32, 64, 192, None], ids=["g32", "g64", "g192", "per-channel"])
@pytest.mark.parametrize("bits", [4, 3, 2])
def test_int4_module_reads_back_its_codes_exactly(group_size, bits: int) -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(32, 192, generator=g)
    scale, zero = grid_parameters(w, bits, group_size, symmetric=False)
    codes = quantize(w, scale, zero, bits)
    layer = Int4WeightOnlyLinear.from_codes(codes, scale, zero, group_size, bits=bits)
    assert layer.kernel == "cpu_int4pack"
    assert torch.equal(layer.codes(), codes)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float32, 1e-5)])
@pytest.mark.parametrize("out_features", [48, 20], ids=["kernel", "fallback"])
def test_int4_module_equals_the_dequantized_matmul(dtype: torch.dtype, tol: float, out_features: int) -> None:
    g = torch.Generator().manual_seed(2)
    w = torch.randn(out_features, 128, generator=g)
    bias = torch.randn(out_features, generator=g)
    scale, zero = grid_parameters(w, 4, 64)
    codes = quantize(w, scale, zero, 4)
    layer = Int4WeightOnlyLinear.from_codes(codes, scale, zero, 64, bias=bias, dtype=dtype)
    assert layer.kernel == ("cpu_int4pack" if out_features % 16 == 0 else "dequantized")
    x = torch.randn(5, 7, 128, generator=g)
    ref = x @ dequantize(codes, scale, zero).T + bias
    out = layer(x)
    assert out.shape == (5, 7, out_features) and out.dtype == x.dtype
    assert float((out - ref).abs().max()) <= tol * float(ref.abs().max())


def test_int8_module_equals_the_dequantized_matmul() -> None:
    g = torch.Generator().manual_seed(3)
    lin = nn.Linear(64, 32)
    _, result = one_shot_quantize(nn.Sequential(lin), None, method="rtn", bits=8, group_size=None)
    layer = Int8WeightOnlyLinear.from_quantized(lin, result.layers["0"], dtype=torch.float32)
    x = torch.randn(6, 64, generator=g)
    assert layer.kernel == "int8pack" and layer.weight_int8.dtype == torch.int8
    assert torch.allclose(layer(x), lin(x), atol=1e-5)  # lin holds the de-quantized weight


def _tied_lm() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_a_quantized_lm_runs_on_int4_kernels_and_reloads_from_safetensors(tmp_path, method: str) -> None:
    lm = _tied_lm()
    tokens = torch.randint(0, 128, (6, 24), generator=torch.Generator().manual_seed(4))
    lm, result = one_shot_quantize(lm, tokens, method=method, bits=4, group_size=32)
    assert "lm_head" in result.skipped and len(result.layers) == 14  # 7 Linear per block, the tied head stays float
    reference = lm(tokens[:2]).logits
    to_weight_only_(lm, result, dtype=torch.float32)
    assert isinstance(lm.model.layers[1].mlp.down_proj, Int4WeightOnlyLinear)
    assert isinstance(lm.lm_head, nn.Linear) and lm.lm_head.weight is lm.model.embed_tokens.weight
    out = lm(tokens[:2]).logits
    assert torch.allclose(out, reference, atol=1e-4)
    path = tmp_path / "lm.safetensors"
    size = save_weight_only(lm, path)
    assert size == os.path.getsize(path)
    with open(path, "rb") as f:
        assert b"pickle" not in f.read(64)  # a safetensors header, no pickle
    again = load_weight_only(_tied_lm(), path)
    assert torch.equal(again(tokens[:2]).logits, out)
    assert again.lm_head.weight is again.model.embed_tokens.weight  # still tied after loading


def test_load_refuses_a_file_of_another_kind_or_shape(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="is not a weight-only model file"):
        load_weight_only(_tied_lm(), path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_weight_only(_tied_lm(), tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="holds no Int4WeightOnlyLinear"):
        save_weight_only(_tied_lm(), tmp_path / "x.safetensors")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_int4_module_on_cuda_equals_the_dequantized_matmul() -> None:
    w = torch.randn(64, 128, device="cuda")
    scale, zero = grid_parameters(w, 4, 64)
    codes = quantize(w, scale, zero, 4)
    layer = Int4WeightOnlyLinear.from_codes(codes, scale, zero, 64)
    x = torch.randn(3, 128, device="cuda", dtype=torch.bfloat16)
    ref = x.float() @ dequantize(codes, scale, zero).T
    assert layer.kernel == "cuda_int4pack"
    assert float((layer(x).float() - ref).abs().max()) <= 2e-2 * float(ref.abs().max())
