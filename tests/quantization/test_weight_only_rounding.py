"""Weight-only rounding on one layer: GPTQ beats round-to-nearest on real correlated inputs, AWQ does not lose to it,
every weight is on its group's grid, joint 2:4 + INT4 keeps exactly 2 of 4, and bad input is refused clearly."""

from __future__ import annotations

import warnings

import pytest
import torch

from lightning_compress.quantization.weight_only.awq import awq_quantize
from lightning_compress.quantization.weight_only.gptq import gptq_quantize
from lightning_compress.quantization.weight_only.grid import dequantize, fake_quantize, grid_parameters, quantize
from lightning_compress.sparsity.nm_masks import is_nm_sparse


@pytest.fixture(scope="module")
def digits_layer() -> tuple[torch.Tensor, torch.Tensor]:
    """Real, correlated inputs: 1,000 of scikit-learn's 8 x 8 digits (64 pixels in [0, 1], a blank border) feeding a
    fixed random 48 x 64 layer."""
    from sklearn.datasets import load_digits

    g = torch.Generator().manual_seed(0)
    images = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0
    x = images[torch.randperm(len(images), generator=g)[:1000]]
    return torch.randn(48, 64, generator=g) * 0.05, x


def _error(w: torch.Tensor, new: torch.Tensor, x: torch.Tensor) -> float:
    return float((x @ (w - new).T).norm())


@pytest.mark.parametrize("bits", [4, 3])
@pytest.mark.parametrize("group_size", [32, None], ids=["g32", "per-channel"])
def test_gptq_beats_round_to_nearest_on_real_inputs(digits_layer, bits: int, group_size) -> None:
    w, x = digits_layer
    gptq = gptq_quantize(w, 2 * x.T @ x, bits=bits, group_size=group_size)
    rtn = fake_quantize(w, bits, group_size)
    assert _error(w, gptq.weight, x) < 0.8 * _error(w, rtn, x)
    assert _error(w, gptq_quantize(w, 2 * x.T @ x, bits=bits, group_size=group_size, act_order=True).weight, x) < (
        _error(w, rtn, x)
    )


@pytest.mark.parametrize("bits", [4, 3])
def test_awq_never_loses_to_round_to_nearest_on_its_calibration_data(digits_layer, bits: int) -> None:
    w, x = digits_layer
    x = x * torch.linspace(0.2, 3.0, 64)  # uneven channel magnitudes, where AWQ helps
    q = awq_quantize(w, x.T @ x, x.abs().mean(0), bits=bits, group_size=32)
    assert _error(w, q.weight, x) < _error(w, fake_quantize(w, bits, 32), x)
    assert q.input_scale is not None and q.input_scale.shape == (64,)


@pytest.mark.parametrize("method", ["gptq", "awq", "rtn"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_every_weight_lies_on_its_groups_grid(digits_layer, method: str, symmetric: bool, bits: int) -> None:
    w, x = digits_layer
    group = None if bits == 8 else 16
    if bits == 8 and not symmetric:
        pytest.skip("8 bits are per-channel symmetric (the INT8 kernel has no zero point)")
    if method == "gptq":
        q = gptq_quantize(w, 2 * x.T @ x, bits=bits, group_size=group, symmetric=symmetric)
    elif method == "awq":
        q = awq_quantize(w, x.T @ x, x.abs().mean(0), bits=bits, group_size=group, symmetric=symmetric)
    else:
        scale, zero = grid_parameters(w, bits, group, symmetric)
        from lightning_compress.quantization.weight_only.grid import Grid, QuantizedWeight

        q = QuantizedWeight(dequantize(quantize(w, scale, zero, bits), scale, zero), scale, zero,
                            Grid(bits, group, symmetric))  # fmt: skip
    codes = q.codes()
    assert int(codes.max()) <= (1 << bits) - 1
    assert q.zero.eq(q.zero.round()).all() and q.zero.ge(0).all() and q.zero.le((1 << bits) - 1).all()
    if symmetric:
        assert q.zero.eq(1 << (bits - 1)).all()
    back = dequantize(codes, q.scale, q.zero)
    if q.input_scale is not None:
        back = back / q.input_scale
    assert torch.allclose(back, q.weight.float(), rtol=1e-5, atol=1e-7)  # the weight is exactly a grid point


def test_joint_sparsegpt_24_and_int4_keeps_exactly_2_of_4_on_the_grid(digits_layer) -> None:
    w, x = digits_layer
    q = gptq_quantize(w, 2 * x.T @ x, bits=4, group_size=32, n=2, m=4)
    assert q.mask is not None and q.mask.reshape(48, 16, 4).sum(-1).eq(2).all()
    assert is_nm_sparse(q.weight, 2, 4) and bool((q.weight[~q.mask] == 0).all())
    assert torch.allclose(dequantize(q.codes(), q.scale, q.zero), q.weight, atol=1e-7)
    # the joint pass beats pruning then rounding without the shared error feedback
    from lightning_compress.pruning.one_shot.sparsegpt import sparsegpt_prune

    pruned, _ = sparsegpt_prune(w, 2 * x.T @ x, n=2, m=4)
    assert _error(w, q.weight, x) < _error(w, fake_quantize(pruned, 4, 32), x)


def test_joint_unstructured_sparsity_is_exact(digits_layer) -> None:
    w, x = digits_layer
    q = gptq_quantize(w, 2 * x.T @ x, bits=4, group_size=32, sparsity=0.5)
    assert int((~q.mask).sum()) == w.numel() // 2 and bool((q.weight[~q.mask] == 0).all())


def test_a_hessian_that_is_not_positive_definite_raises_the_dampening_and_gives_no_nan() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 32, generator=g)  # 4 tokens: rank 4 of 32
    w = torch.randn(8, 32, generator=g)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = gptq_quantize(w, 2 * x.T @ x, bits=4, group_size=16, damping=0.0)
    assert any("not positive definite" in str(c.message) for c in caught)
    assert bool(torch.isfinite(q.weight).all())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"bits": 1}, r"`bits` must be an int in 2\.\.8, got 1"),
        ({"bits": 9}, r"`bits` must be an int in 2\.\.8, got 9"),
        ({"bits": 8, "group_size": 32}, r"`group_size` must be None \(per output channel\) for bits=8: .*one scale"),
        ({"bits": 4, "group_size": 48}, r"group_size=48 does not divide the input width 64 \(group sizes that do: 32"),
        ({"damping": -1}, r"`damping` must be a number >= 0, got -1"),
        ({"n": 2, "m": 4, "act_order": True}, r"`act_order` cannot be True with n:m"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(kwargs, match) -> None:
    w, x = torch.randn(4, 64), torch.randn(100, 64)
    with pytest.raises(ValueError, match=match):
        gptq_quantize(w, x.T @ x, **{"group_size": None, **kwargs})


def test_rounding_is_exactly_round_to_nearest_on_the_symmetric_grid() -> None:
    w = torch.tensor([[0.1, -0.7, 0.3, 0.6]])
    scale, zero = grid_parameters(w, 4, 2)
    assert torch.allclose(scale, torch.tensor([[0.7 / 7.5, 0.6 / 7.5]]))
    assert quantize(w, scale, zero, 4).tolist() == [[9, 0, 12, 15]]  # -7.5 steps round to -8, +7.5 clamps to 7
