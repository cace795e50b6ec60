"""Wanda: the per-row |W| * ||X_j|| criterion, exact sparsity, N:M validity, quality on real inputs, bad input."""

from __future__ import annotations

import pytest
import torch

from lightning_compress.pruning.magnitude import magnitude_mask
from lightning_compress.pruning.one_shot.wanda import wanda_mask, wanda_scores
from lightning_compress.sparsity.nm_masks import is_nm_sparse, nm_mask


def _reference(w: torch.Tensor, norms: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Row by row, in plain Python: prune the round(s * in) lowest |w| * norm."""
    keep = torch.ones_like(w, dtype=torch.bool)
    k = round(sparsity * w.shape[1])
    for i in range(w.shape[0]):
        scores = [(float(abs(w[i, j]) * norms[j]), j) for j in range(w.shape[1])]
        for _, j in sorted(scores)[:k]:
            keep[i, j] = False
    return keep


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9])
def test_matches_a_row_by_row_reference(sparsity: float) -> None:
    g = torch.Generator().manual_seed(0)
    w, norms = torch.randn(6, 20, generator=g), torch.rand(20, generator=g)
    mask = wanda_mask(w, norms, sparsity=sparsity)
    assert torch.equal(mask, _reference(w, norms, sparsity))
    assert mask.sum(1).eq(20 - round(sparsity * 20)).all()  # exact, in every row


def test_equal_norms_give_row_wise_magnitude() -> None:
    w = torch.randn(5, 16)
    mask = wanda_mask(w, torch.ones(16), sparsity=0.5)
    for row, keep in zip(w, mask):
        assert torch.equal(keep, magnitude_mask(row, 0.5))


def test_ties_keep_the_lower_index() -> None:
    assert wanda_mask(torch.ones(1, 4), torch.ones(4), sparsity=0.5).tolist() == [[True, True, False, False]]
    assert wanda_mask(torch.ones(1, 4), torch.ones(4), n=1, m=2).tolist() == [[True, False, True, False]]


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
def test_nm_validity_linear_and_conv(n: int, m: int) -> None:
    g = torch.Generator().manual_seed(1)
    for w in (torch.randn(8, 32, generator=g), torch.randn(4, 8, 2, 2, generator=g)):
        norms = torch.rand(w[0].numel(), generator=g)
        mask = wanda_mask(w, norms, n=n, m=m)
        assert mask.shape == w.shape
        assert mask.reshape(w.shape[0], -1, m).sum(-1).eq(n).all()
        assert is_nm_sparse(w * mask, n, m)


def test_conv_scores_follow_im2col_order() -> None:
    w = torch.ones(2, 3, 2, 2)
    norms = torch.arange(12.0)  # channel-major, then kernel position: weight.reshape(out, -1)
    assert torch.equal(wanda_scores(w, norms), norms.expand(2, 12))


@pytest.mark.parametrize("pattern", [{"sparsity": 0.5}, {"n": 2, "m": 4}], ids=["50%", "2:4"])
def test_beats_magnitude_on_real_inputs(pattern) -> None:
    from sklearn.datasets import load_digits

    g = torch.Generator().manual_seed(0)
    x = torch.tensor(load_digits().data, dtype=torch.float32)[:800] / 16.0
    w = torch.randn(32, 64, generator=g) * 0.05
    wanda = w * wanda_mask(w, x.norm(dim=0), **pattern)
    magnitude = w * (magnitude_mask(w, 0.5) if "sparsity" in pattern else nm_mask(w, 2, 4))
    assert (x @ (w - wanda).T).norm() < (x @ (w - magnitude).T).norm()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"sparsity": 1.0}, r"`sparsity` must be a float in \[0, 1\), got 1.0"),
        ({"sparsity": float("nan")}, r"`sparsity` must be a float in \[0, 1\), got nan"),
        ({"n": 2, "m": 1}, "`m` must be an int >= 2, got 1"),
        ({"n": 2, "m": 3}, "not a multiple of m=3"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        wanda_mask(torch.randn(4, 16), torch.ones(16), **kwargs)


def test_norms_must_match_the_reduction_dimension() -> None:
    with pytest.raises(ValueError, match=r"`input_norms` must have shape \(16,\)"):
        wanda_mask(torch.randn(4, 16), torch.ones(8), sparsity=0.5)
