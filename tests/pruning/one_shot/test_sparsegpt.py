"""SparseGPT: reconstruction quality on real inputs, exact sparsity, N:M validity, dampening, bad input."""

from __future__ import annotations

import warnings

import pytest
import torch

from lightning_compress.pruning.magnitude import magnitude_mask
from lightning_compress.pruning.one_shot.sparsegpt import inverse_hessian_cholesky, sparsegpt_prune
from lightning_compress.pruning.one_shot.wanda import wanda_mask
from lightning_compress.sparsity.nm_masks import is_nm_sparse, nm_mask


@pytest.fixture(scope="module")
def digits_layer() -> tuple[torch.Tensor, torch.Tensor]:
    """Real, correlated inputs: 800 of scikit-learn's 8 x 8 digits (64 pixels in [0, 1]) feeding a fixed random
    32 x 64 layer."""
    from sklearn.datasets import load_digits

    g = torch.Generator().manual_seed(0)
    images = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0
    x = images[torch.randperm(len(images), generator=g)[:800]]
    w = torch.randn(32, 64, generator=g) * 0.05
    return w, x


def _error(w: torch.Tensor, pruned: torch.Tensor, x: torch.Tensor) -> float:
    """||W X - W' X|| over the calibration inputs."""
    return float((x @ (w - pruned).T).norm())


@pytest.mark.parametrize("pattern", [{"sparsity": 0.5}, {"n": 2, "m": 4}], ids=["50%", "2:4"])
def test_reconstruction_error_orders_sparsegpt_wanda_magnitude(digits_layer, pattern) -> None:
    w, x = digits_layer
    new_w, mask = sparsegpt_prune(w, 2 * x.T @ x, **pattern)
    wanda = w * wanda_mask(w, x.norm(dim=0), **pattern)
    magnitude = w * (magnitude_mask(w, 0.5) if "sparsity" in pattern else nm_mask(w, 2, 4))
    errors = [_error(w, new_w, x), _error(w, wanda, x), _error(w, magnitude, x)]
    assert errors[0] < errors[1] < errors[2], errors
    # the weight updates matter: the same mask without them is worse
    assert errors[0] < _error(w, w * mask, x)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.77, 0.9])
@pytest.mark.parametrize("shape", [(16, 40), (6, 3, 3, 3)], ids=["linear", "conv"])
def test_exact_sparsity(sparsity: float, shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(shape, generator=g)
    cols = w[0].numel()
    x = torch.randn(200, cols, generator=g) @ torch.randn(cols, cols, generator=g)  # correlated
    new_w, mask = sparsegpt_prune(w, 2 * x.T @ x, sparsity=sparsity, blocksize=16)
    assert new_w.shape == w.shape and mask.shape == w.shape and mask.dtype == torch.bool
    assert int((~mask).sum()) == round(sparsity * w.numel())
    assert bool((new_w[~mask] == 0).all())
    assert int((new_w == 0).sum()) == round(sparsity * w.numel())
    assert bool(torch.isfinite(new_w).all())


@pytest.mark.parametrize("n,m,blocksize", [(2, 4, 128), (2, 4, 8), (1, 4, 4), (4, 8, 16)])
def test_nm_validity(n: int, m: int, blocksize: int) -> None:
    g = torch.Generator().manual_seed(2)
    w = torch.randn(12, 64, generator=g)
    x = torch.randn(300, 64, generator=g).cumsum(1)  # strongly correlated neighbouring inputs
    new_w, mask = sparsegpt_prune(w, 2 * x.T @ x, n=n, m=m, blocksize=blocksize)
    assert mask.reshape(12, -1, m).sum(-1).eq(n).all()
    assert is_nm_sparse(new_w, n, m)
    assert bool((new_w[~mask] == 0).all())


def test_zero_sparsity_with_full_rank_inputs_keeps_the_weights() -> None:
    g = torch.Generator().manual_seed(3)
    w, x = torch.randn(5, 16, generator=g), torch.randn(100, 16, generator=g)
    new_w, mask = sparsegpt_prune(w, 2 * x.T @ x, sparsity=0.0)
    assert bool(mask.all()) and torch.allclose(new_w, w)


def test_dead_inputs_are_pruned_first_at_no_cost() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(100, 8, generator=g)
    x[:, 4:] = 0  # half the inputs are never active
    w = torch.randn(3, 8, generator=g)
    new_w, mask = sparsegpt_prune(w, 2 * x.T @ x, sparsity=0.5, percdamp=0.0)
    assert not mask[:, 4:].any() and mask[:, :4].all()
    assert torch.allclose(x @ new_w.T, x @ w.T, atol=1e-5)


def test_rank_deficient_hessian_raises_the_dampening_and_stays_finite() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 32, generator=g)  # 3 tokens for 32 inputs: H has rank 3
    w = torch.randn(4, 32, generator=g)
    with pytest.warns(UserWarning, match="raised the dampening"):
        new_w, mask = sparsegpt_prune(w, 2 * x.T @ x, sparsity=0.5, percdamp=0.0)
    assert bool(torch.isfinite(new_w).all()) and int((~mask).sum()) == 64


def test_indefinite_hessian_warns_and_gives_no_nans() -> None:
    hessian = -torch.eye(8)  # no dampening below 1 x mean|diag| makes it positive definite
    with pytest.warns(UserWarning, match="raised the dampening"):
        upper, damp = inverse_hessian_cholesky(hessian, percdamp=0.01)
    assert damp > 1.0 and bool(torch.isfinite(upper).all())
    with pytest.warns(UserWarning, match="raised the dampening"):
        new_w, _ = sparsegpt_prune(torch.randn(2, 8), hessian, n=2, m=4)
    assert bool(torch.isfinite(new_w).all())


def test_well_conditioned_hessian_does_not_warn() -> None:
    x = torch.randn(200, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sparsegpt_prune(torch.randn(4, 16), 2 * x.T @ x, sparsity=0.5)


def test_keeps_dtype_and_leaves_the_input_alone() -> None:
    w = torch.randn(4, 16, dtype=torch.float64)
    before = w.clone()
    x = torch.randn(50, 16)
    new_w, _ = sparsegpt_prune(w, 2 * x.T @ x, n=2, m=4)
    assert new_w.dtype == torch.float64 and torch.equal(w, before)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"sparsity": 1.0}, r"`sparsity` must be a float in \[0, 1\), got 1.0"),
        ({"sparsity": -0.1}, r"`sparsity` must be a float in \[0, 1\), got -0.1"),
        ({}, "give either `sparsity`"),
        ({"sparsity": 0.5, "n": 2, "m": 4}, "not both"),
        ({"n": 4, "m": 4}, r"`n` must be an int with 0 < n < m \(m=4\), got 4"),
        ({"n": 2, "m": 4, "blocksize": 6}, "`blocksize` must be a multiple of m=4, got 6"),
        ({"sparsity": 0.5, "percdamp": -1}, "`percdamp` must be a number >= 0, got -1"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        sparsegpt_prune(torch.randn(4, 16), torch.eye(16), **kwargs)


def test_bad_hessian() -> None:
    with pytest.raises(ValueError, match=r"`hessian` must have shape \(16, 16\)"):
        sparsegpt_prune(torch.randn(4, 16), torch.eye(8), sparsity=0.5)
    nan = torch.eye(16)
    nan[0, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        sparsegpt_prune(torch.randn(4, 16), nan, sparsity=0.5)
    with pytest.raises(ValueError, match="not a multiple of m=4"):
        sparsegpt_prune(torch.randn(4, 6), torch.eye(6), n=2, m=4)


def test_one_shot_result_holds_the_masks_bit_packed() -> None:
    """A whole model's keep-masks at 1 bit per weight (a byte each as bool tensors: SmolLM2's would be 113 MiB)."""
    from lightning_compress.core.packed_masks import PackedMasks
    from lightning_compress.pruning.one_shot.prune import one_shot_prune

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    result = one_shot_prune(net, [torch.randn(8, 64) for _ in range(4)], method="sparsegpt", sparsity=0.5, ignore=())
    assert isinstance(result.masks, PackedMasks)
    weights = sum(layer.weight.numel() for layer in (net[0], net[2]))
    assert result.masks.nbytes == weights // 8
    assert result.achieved_sparsity == 0.5
    for name in ("0.weight", "2.weight"):
        mask = result.masks[name]
        assert mask.dtype == torch.bool and (net.get_parameter(name)[~mask] == 0).all()
