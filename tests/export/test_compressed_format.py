"""The compressed save format: bit-exact float round trips, exact int8 dequantisation, and the 1/10 size bound."""

from __future__ import annotations

import io
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lightning_compress.export.compressed_format import (
    FORMAT,
    dequantize_per_channel,
    load_compressed,
    quantize_per_channel,
    save_compressed,
)
from lightning_compress.pruning.magnitude import magnitude_mask


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return torch.equal(a.view(view), b.view(view))
    return torch.equal(a, b)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))


@torch.no_grad()
def _prune(model: nn.Module, sparsity: float) -> nn.Module:
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            mod.weight.mul_(magnitude_mask(mod.weight, sparsity))
    return model


def _torch_save_size(obj: object) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getbuffer().nbytes


def test_float_round_trip_is_bit_exact_with_special_values(tmp_path):
    w = torch.randn(64, 32)
    w[torch.rand_like(w) < 0.8] = 0.0
    w[0, :4] = torch.tensor([-0.0, float("nan"), float("inf"), -float("inf")])
    state = {
        "w": w,
        "half": (w * (torch.rand_like(w) < 0.5)).half(),
        "bf16": w.bfloat16(),
        "f64": w.double(),
        "idx": torch.arange(100),
        "flag": torch.rand(200) < 0.1,
        "scalar": torch.tensor(3.5),
        "tiny": torch.zeros(3),
        "dense": torch.randn(40, 40),
    }
    path = tmp_path / "m.lcz"
    stats = save_compressed(state, path)
    loaded = load_compressed(path)
    assert set(loaded) == set(state)
    for name, value in state.items():
        assert _bits_equal(loaded[name], value), name
    assert stats.encodings["w"] == "bitmask" and stats.encodings["dense"] == "dense"
    assert torch.signbit(loaded["w"][0, 0])  # -0.0 kept its sign


def test_module_round_trip_loads_into_the_model(tmp_path):
    model = _prune(_mlp(), 0.9)
    save_compressed(model, tmp_path / "m.lcz")
    fresh = _mlp()
    fresh.load_state_dict(load_compressed(tmp_path / "m.lcz"))
    x = torch.randn(4, 256)
    assert torch.equal(fresh(x), model(x))


def test_int8_loads_exactly_the_dequantised_values_and_keeps_zeros(tmp_path):
    model = _prune(_mlp(), 0.9)
    state = model.state_dict()
    save_compressed(state, tmp_path / "q.lcz", int8=True)
    loaded = load_compressed(tmp_path / "q.lcz")
    for name, value in state.items():
        if value.dim() >= 2:
            q, scale = quantize_per_channel(value)
            assert torch.equal(loaded[name], dequantize_per_channel(q, scale, value.dtype)), name
            assert bool((loaded[name][value == 0] == 0).all())
            assert (loaded[name] - value).abs().max() <= scale.max() / 2 + 1e-7
        else:
            assert torch.equal(loaded[name], value), name  # biases stay float and exact


def test_int8_filter_chooses_tensors(tmp_path):
    state = _mlp().state_dict()
    stats = save_compressed(state, tmp_path / "q.lcz", int8=lambda name, t: name.startswith("0."))
    assert stats.encodings["0.weight"] == "int8" and stats.encodings["2.weight"] != "int8"


def test_90_percent_sparse_int8_file_is_at_most_a_tenth_of_fp32(tmp_path):
    model = _prune(_mlp(), 0.9)
    fp32_bytes = _torch_save_size(model.state_dict())
    stats = save_compressed(model, tmp_path / "q.lcz", int8=True)
    assert stats.file_bytes * 10 <= fp32_bytes, (stats.file_bytes, fp32_bytes)
    float_stats = save_compressed(model, tmp_path / "f.lcz")
    assert float_stats.file_bytes < fp32_bytes / 4  # bitmask + fp32 values: ~7x smaller payload


def test_not_a_compressed_file_raises(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match=FORMAT):
        load_compressed(tmp_path / "plain.pt")


def test_non_tensor_entry_raises(tmp_path):
    with pytest.raises(TypeError, match="'step'"):
        save_compressed({"step": 3}, tmp_path / "x.lcz")  # type: ignore[dict-item]


def test_meta_tensor_is_refused_naming_the_entry_and_nothing_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"'weight' is on the meta device"):
        save_compressed(nn.Linear(4, 4, device="meta"), tmp_path / "m.lc.safetensors")
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 40),
    density=st.floats(0.0, 1.0),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(tmp_path_factory, rows, cols, density, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen).to(dtype)
    w[torch.rand(rows, cols, generator=gen) >= density] = 0.0
    path = tmp_path_factory.mktemp("p") / "w.lcz"
    save_compressed({"w": w}, path)
    assert _bits_equal(load_compressed(path)["w"], w)
    save_compressed({"w": w}, path, int8=True)
    q, scale = quantize_per_channel(w)
    assert torch.equal(load_compressed(path)["w"], dequantize_per_channel(q, scale, dtype))


# ----------------------------------------------------------------------------------------- format 2 (safetensors)
def test_nan_payloads_and_negative_zeros_survive_bit_for_bit(tmp_path):
    w = torch.zeros(16, 16)
    w[0, 0] = -0.0
    payloads = torch.tensor([0x7FC00001, 0x7F800123, -0x00400001], dtype=torch.int32).view(torch.float32)
    w[1, :3] = payloads  # quiet and signalling NaNs with payloads, a negative NaN
    w[2, 5] = 1.5
    save_compressed({"w": w}, tmp_path / "n.lc.safetensors")
    loaded = load_compressed(tmp_path / "n.lc.safetensors")["w"]
    assert torch.equal(loaded.view(torch.int32), w.view(torch.int32))


def test_the_file_is_plain_safetensors_with_its_description_in_the_header(tmp_path):
    from safetensors import safe_open

    path = tmp_path / "m.lc.safetensors"
    w = torch.randn(64, 64)
    w[torch.rand_like(w) < 0.9] = 0.0
    save_compressed({"w": w, "b": torch.randn(64)}, path, int8=True)
    assert path.read_bytes()[:2] != b"PK"  # no zip, no pickle
    with safe_open(str(path), framework="pt") as f:  # any safetensors reader opens (memory-maps) it
        meta = f.metadata()
        names = set(f.keys())
    assert meta["lightning_compress.format"] == FORMAT and len(meta["lightning_compress.sha256"]) == 64
    entries = dict(json.loads(meta["entries"]))
    assert (
        entries["w"]["encoding"] == "int8" and entries["w"]["shape"] == [64, 64] and entries["w"]["dtype"] == "float32"
    )
    assert entries["b"] == {"encoding": "dense", "parts": {"value": "b"}, "shape": [64], "dtype": "float32"}
    assert names == {"b", "w::mask", "w::values", "w::scale"}


def test_old_lcz_files_load_with_a_deprecation_warning(tmp_path):
    from lightning_compress.export.compressed_format import LEGACY_FORMAT, _encode

    w = torch.randn(32, 32)
    w[torch.rand_like(w) < 0.8] = -0.0
    state = {"w": w, "b": torch.randn(8)}
    torch.save(
        {"format": LEGACY_FORMAT, "tensors": {n: _encode(n, t, False) for n, t in state.items()}}, tmp_path / "old.lcz"
    )  # fmt: skip  (what format 1 wrote)
    with pytest.warns(DeprecationWarning, match="deprecated"):
        loaded = load_compressed(tmp_path / "old.lcz")
    assert all(_bits_equal(loaded[n], t) for n, t in state.items())


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_complex_and_sparse_tensors_round_trip_subclasses_are_refused(tmp_path):
    z = torch.randn(8, 8, dtype=torch.complex64)
    sparse = torch.zeros(10, 10)
    sparse[3, 4] = 2.0
    save_compressed({"z": z, "s": sparse.to_sparse()}, tmp_path / "c.lc.safetensors")
    loaded = load_compressed(tmp_path / "c.lc.safetensors")
    assert torch.equal(loaded["z"], z) and torch.equal(loaded["s"], sparse)

    class Sub(torch.Tensor):
        pass

    with pytest.raises(TypeError, match="'x'.*subclass"):
        save_compressed({"x": torch.zeros(4).as_subclass(Sub)}, tmp_path / "x.lc.safetensors")
    with pytest.raises(TypeError, match="quantized dtype"):
        save_compressed({"q": torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8)}, tmp_path / "q")


def test_a_failed_save_leaves_the_previous_file(tmp_path):
    path = tmp_path / "m.lc.safetensors"
    save_compressed({"w": torch.ones(4)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_compressed({"w": torch.zeros(4), "step": 3}, path)  # type: ignore[dict-item]
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
