import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_compress.sparsity.nm_masks import is_nm_sparse, nm_mask, partial_nm_mask

NM = st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 4), (4, 8), (2, 8)])


@st.composite
def weights(draw: st.DrawFn, conv: bool = False) -> tuple[torch.Tensor, int, int]:
    n, m = draw(NM)
    out = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    if conv:
        kernel = draw(st.sampled_from([(1, 1), (3, 3), (2, 2), (1, 3)]))
        # in_channels such that in * kh * kw is a multiple of m
        kk = kernel[0] * kernel[1]
        base = m // math.gcd(m, kk)
        cin = base * draw(st.integers(1, 3))
        shape = (out, cin, *kernel)
    else:
        shape = (out, m * draw(st.integers(1, 5)))
    w = torch.randn(shape, generator=g)
    if draw(st.booleans()):  # many ties: a few distinct magnitudes, signs mixed, some zeros
        w = torch.randint(-2, 3, shape, generator=g).float()
    return w, n, m


@settings(max_examples=150, deadline=None)
@given(weights())
def test_exactly_n_kept_per_group_and_they_are_the_largest(case: tuple[torch.Tensor, int, int]) -> None:
    w, n, m = case
    mask = nm_mask(w, n, m)
    assert mask.shape == w.shape and mask.dtype == torch.bool
    groups, keep = w.abs().reshape(w.shape[0], -1, m), mask.reshape(w.shape[0], -1, m)
    assert (keep.sum(-1) == n).all()  # so at least m - n zeros after masking
    assert is_nm_sparse(w * mask, n, m)
    kept_min = groups.masked_fill(~keep, float("inf")).amin(-1)
    pruned_max = groups.masked_fill(keep, -1.0).amax(-1)
    assert (kept_min >= pruned_max).all()


@settings(max_examples=100, deadline=None)
@given(weights())
def test_ties_go_to_the_lower_index(case: tuple[torch.Tensor, int, int]) -> None:
    w, n, m = case
    mask = nm_mask(w, n, m).reshape(-1, m)
    scores = w.abs().reshape(-1, m)
    for row, keep in zip(scores.tolist(), mask.tolist()):
        expected = sorted(range(m), key=lambda i: (-row[i], i))[:n]  # the lexicographic reference
        assert [i for i in range(m) if keep[i]] == sorted(expected)


@settings(max_examples=60, deadline=None)
@given(weights(conv=True))
def test_conv_groups_follow_the_gemm_rows(case: tuple[torch.Tensor, int, int]) -> None:
    w, n, m = case
    assert torch.equal(nm_mask(w, n, m), nm_mask(w.reshape(w.shape[0], -1), n, m).view(w.shape))
    # the groups are runs of m in the flattened (in_channels x kh x kw) order, nothing else
    rows = (w * nm_mask(w, n, m)).reshape(w.shape[0], -1, m)
    assert ((rows != 0).sum(-1) <= n).all()


def test_known_values_and_the_linear_orientation() -> None:
    w = torch.tensor([[1.0, -4.0, 3.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    assert nm_mask(w, 2, 4).tolist() == [[False, True, True, False], [True, True, False, False]]
    # a Linear (out=2, in=8): groups along `in`, never across rows
    lin = torch.arange(16.0).reshape(2, 8)
    assert nm_mask(lin, 2, 4).int().tolist() == [[0, 0, 1, 1, 0, 0, 1, 1]] * 2


def test_is_nm_sparse() -> None:
    assert is_nm_sparse(torch.zeros(3, 8))
    assert is_nm_sparse(torch.tensor([[1.0, 0.0, 2.0, 0.0]]), 2, 4)
    assert not is_nm_sparse(torch.tensor([[1.0, 0.0, 2.0, 3.0]]), 2, 4)
    assert is_nm_sparse(torch.tensor([[1.0, 0.0, 2.0, 3.0]]), 3, 4)


def test_dtype_and_device_follow_the_weight() -> None:
    w = torch.randn(4, 8, dtype=torch.bfloat16)
    assert torch.equal(nm_mask(w), nm_mask(w.float()))


@pytest.mark.parametrize(
    ("shape", "n", "m", "match"),
    [
        ((4, 6), 2, 4, r"a weight of shape \(4, 6\) cannot be made N:M: reduction dim 6 is not a multiple of m=4"),
        (
            (4, 1, 3, 3),
            2,
            4,
            r"a weight of shape \(4, 1, 3, 3\) cannot be made N:M: reduction dim 9 is not a multiple of m=4",
        ),
        ((8,), 2, 4, r"a weight of shape \(8,\) cannot be made N:M: 1-D weight"),
        ((4, 8), 0, 4, r"`n` must be an int with 0 < n < m \(m=4\), got 0"),
        ((4, 8), 4, 4, r"`n` must be an int with 0 < n < m \(m=4\), got 4"),
        ((4, 8), 2.0, 4, r"`n` must be an int with 0 < n < m, got 2.0"),
        ((4, 8), 2, "4", r"`m` must be an int >= 2, got '4'"),
        ((4, 8), True, 4, r"`n` must be an int with 0 < n < m, got True"),
    ],
)
def test_bad_input(shape: tuple, n: object, m: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        nm_mask(torch.randn(shape), n, m)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ partial (ramp)
def test_partial_fraction_bounds() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 32, generator=g)
    assert partial_nm_mask(w, 2, 4, 0.0).all()
    assert torch.equal(partial_nm_mask(w, 2, 4, 1.0), nm_mask(w, 2, 4))
    half = partial_nm_mask(w, 2, 4, 0.5).reshape(-1, 4)
    assert int((half.sum(-1) == 2).sum()) == 24 and int((half.sum(-1) == 4).sum()) == 24


def test_partial_prunes_the_cheapest_groups_first() -> None:
    w = torch.tensor([[5.0, 5.0, 4.0, 4.0, 9.0, 9.0, 0.1, 0.2, 3.0, 3.0, 3.0, 3.0]])  # costs 8, 0.3, 6
    assert partial_nm_mask(w, 2, 4, 1 / 3).int().tolist() == [[1] * 4 + [1, 1, 0, 0] + [1] * 4]
    assert partial_nm_mask(w, 2, 4, 2 / 3).int().tolist() == [[1] * 4 + [1, 1, 0, 0] + [1, 1, 0, 0]]


@settings(max_examples=40, deadline=None)
@given(weights(), st.lists(st.floats(0.0, 1.0), min_size=2, max_size=5))
def test_partial_masks_only_grow_and_end_as_nm(case: tuple[torch.Tensor, int, int], fractions: list[float]) -> None:
    w, n, m = case
    mask = torch.ones_like(w, dtype=torch.bool)
    for f in sorted(fractions) + [1.0]:
        new = partial_nm_mask(w * mask, n, m, f, mask)
        assert not (new & ~mask).any()  # never revives
        groups = new.reshape(-1, m).sum(-1)
        assert int((groups <= n).sum()) >= round(f * groups.numel())
        mask = new
    assert is_nm_sparse(w * mask, n, m)


def test_partial_bad_fraction() -> None:
    with pytest.raises(ValueError, match=r"`fraction` must be a number in \[0, 1\], got 1.5"):
        partial_nm_mask(torch.randn(2, 4), 2, 4, 1.5)
