from typing import Optional

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_compress.pruning.magnitude import global_magnitude_masks, magnitude_mask, num_to_prune


def reference_masks(weights: list[torch.Tensor], sparsity: float, current: Optional[list[torch.Tensor]] = None):
    """The obvious implementation: concatenate, stable sort by |w| (pruned first), prune the first k."""
    scores = []
    for i, w in enumerate(weights):
        s = w.detach().float().abs().reshape(-1).clone()
        if current is not None:
            s[~current[i].reshape(-1)] = -1.0
        scores.append(s)
    flat = torch.cat(scores)
    k = num_to_prune(sparsity, flat.numel())
    if current is not None:
        k = max(k, sum(int((~c).sum()) for c in current))
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[torch.sort(flat, stable=True).indices[:k]] = False
    out, offset = [], 0
    for w in weights:
        out.append(keep[offset : offset + w.numel()].view(w.shape))
        offset += w.numel()
    return out


shapes = st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple)


@st.composite
def weight_lists(draw):
    n = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    integer = draw(st.booleans())  # integer values: many ties
    g = torch.Generator().manual_seed(seed)
    ws = []
    for _ in range(n):
        shape = draw(shapes)
        w = torch.randint(-3, 4, shape, generator=g).float() if integer else torch.randn(shape, generator=g)
        ws.append(w)
    return ws, g


@settings(max_examples=60, deadline=None)
@given(shape=shapes, sparsity=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_magnitude_mask_prunes_exact_count_of_smallest(shape, sparsity, seed) -> None:
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    keep = magnitude_mask(w, sparsity)
    assert keep.shape == w.shape and keep.dtype == torch.bool
    assert int((~keep).sum()) == num_to_prune(sparsity, w.numel())
    if keep.any() and (~keep).any():
        assert w.abs()[~keep].max() <= w.abs()[keep].min()


@settings(max_examples=60, deadline=None)
@given(data=weight_lists(), sparsity=st.floats(0.0, 1.0), with_current=st.booleans())
def test_global_equals_concatenated_reference(data, sparsity, with_current) -> None:
    ws, g = data
    current = [torch.rand(w.shape, generator=g) > 0.3 for w in ws] if with_current else None
    got = global_magnitude_masks(ws, sparsity, current)
    want = reference_masks(ws, sparsity, current)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_ties_broken_by_tensor_then_flat_index() -> None:
    a, b = torch.ones(2, 3), torch.ones(4)
    keep = global_magnitude_masks([a, b], 0.7)  # 7 of 10 pruned: all of `a`, then the first of `b`
    assert (~keep[0]).all()
    assert keep[1].tolist() == [False, True, True, True]
    assert magnitude_mask(torch.zeros(5), 0.4).tolist() == [False, False, True, True, True]


def test_masks_only_grow_and_already_pruned_go_first() -> None:
    w = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    current = torch.tensor([False, True, True, True, True])  # the largest weight is already pruned
    keep = magnitude_mask(w, 0.4, current)
    assert keep.tolist() == [False, True, True, True, False]
    assert not (keep & ~current).any()
    # a lower target than already pruned keeps the current mask
    assert torch.equal(magnitude_mask(w, 0.0, keep), keep)


def test_bf16_weights_are_scored_in_float32() -> None:
    w = torch.randn(64, 33).bfloat16()
    assert torch.equal(magnitude_mask(w, 0.7), magnitude_mask(w.float(), 0.7))
    assert int((~magnitude_mask(w, 0.7)).sum()) == num_to_prune(0.7, w.numel())


def test_negative_zero_and_extremes() -> None:
    w = torch.tensor([-0.0, 0.0, -1e-30, 1e30, -3e38])
    assert magnitude_mask(w, 0.6).tolist() == [False, False, False, True, True]
    assert magnitude_mask(w, 0.0).all()
    assert not magnitude_mask(w, 1.0).any()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_weights_are_refused_naming_the_tensor(bad: float) -> None:
    a, b = torch.randn(8), torch.randn(6)
    b[2] = bad
    with pytest.raises(ValueError, match=r"NaN or Inf .* `weights\[1\]` \(1 of 6\)"):
        global_magnitude_masks([a, b], 0.5)
    with pytest.raises(ValueError, match=r"`weight` \(1 of 6\)"):
        magnitude_mask(b, 0.5)
    pruned = torch.ones(6, dtype=torch.bool)
    pruned[2] = False  # an already-pruned NaN is not ranked: nothing to refuse
    assert not magnitude_mask(b, 0.5, pruned)[2]


def test_global_does_not_concatenate(monkeypatch) -> None:
    def no_cat(*args, **kwargs):
        raise AssertionError("global_magnitude_masks must not concatenate the weights")

    ws = [torch.randn(50, 20), torch.randn(30)]
    want = reference_masks(ws, 0.8)
    monkeypatch.setattr(torch, "cat", no_cat)
    got = global_magnitude_masks(ws, 0.8)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_global_scope_differs_from_layer_scope() -> None:
    small, large = torch.full((10,), 0.1), torch.full((10,), 10.0)
    keep = global_magnitude_masks([small, large], 0.5)
    assert not keep[0].any() and keep[1].all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: global_magnitude_masks([], 0.5), r"`weights` must hold at least one tensor"),
        (lambda: magnitude_mask(torch.ones(3), 1.5), r"`sparsity` must be a number in \[0, 1\], got 1.5"),
        (lambda: magnitude_mask(torch.ones(3), -0.1), r"`sparsity` must be a number in \[0, 1\], got -0.1"),
        (
            lambda: magnitude_mask(torch.ones(3), 0.5, torch.ones(4, dtype=torch.bool)),
            r"`current_mask` must be a bool tensor of shape \(3,\)",
        ),
        (
            lambda: global_magnitude_masks([torch.ones(3)], 0.5, []),
            r"`current_masks` must hold one mask per weight \(1\), got 0",
        ),
    ],
)
def test_bad_input(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_recomputing_keys_in_every_pass_gives_the_same_masks(monkeypatch) -> None:
    import lightning_compress.pruning.radix_select as magnitude

    g = torch.Generator().manual_seed(3)
    ws = [torch.randint(-4, 5, (7, 5), generator=g).float(), torch.randn(40, generator=g), torch.zeros(3, 3)]
    current = [torch.rand(w.shape, generator=g) > 0.2 for w in ws]
    cached = [global_magnitude_masks(ws, s, current) for s in (0.1, 0.5, 0.93)]
    monkeypatch.setattr(magnitude, "_CACHE_KEYS_UP_TO", 0)  # the path taken for LLM-sized models
    for s, want in zip((0.1, 0.5, 0.93), cached):
        got = global_magnitude_masks(ws, s, current)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        assert all(torch.equal(a, b) for a, b in zip(got, reference_masks(ws, s, current)))


def test_cut_among_zeros_with_pruned_positions_in_place() -> None:
    """The pruned positions share the zeros' histogram bin: a cut there ranks them first, then the live zeros in flat
    order (the in-place path of ParameterMasks, where the output is the live mask itself)."""
    from lightning_compress.core.masks import ParameterMasks
    from lightning_compress.pruning.magnitude import prune_by_magnitude_

    w = torch.tensor([0.0, 3.0, 0.0, -0.0, 2.0, 0.0, 1e-41, 5.0])
    masks = ParameterMasks({"w": torch.nn.Parameter(w.clone())})
    masks.set_masks({"w": torch.tensor([True, False, True, True, False, True, True, True])})  # 3.0 and 2.0 pruned
    result = prune_by_magnitude_(masks, 4 / 8)  # 2 more: the first two live zeros (flat order)
    assert masks["w"].tolist() == [False, False, False, True, False, True, True, True]
    assert result.pruned == 4 and result.threshold == 0.0
    prune_by_magnitude_(masks, 6 / 8)  # the last zeros; the denormal 1e-41 is above them
    assert masks["w"].tolist() == [False, False, False, False, False, False, True, True]
    prune_by_magnitude_(masks, 7 / 8)
    assert masks["w"].tolist() == [False] * 7 + [True]


@pytest.mark.parametrize("with_current", [False, True])
def test_large_weights_take_the_parallel_histogram(with_current: bool) -> None:
    """Above a million elements the histogram is counted in chunks on several threads: the same masks."""
    import lightning_compress.pruning.radix_select as magnitude

    g = torch.Generator().manual_seed(5)
    ws = [torch.randint(-50, 51, (700, 1000), generator=g).float() / 7, torch.randn(400_000, generator=g)]
    assert sum(w.numel() for w in ws) >= magnitude._PARALLEL_BINCOUNT_FROM
    current = [torch.rand(w.shape, generator=g) > 0.3 for w in ws] if with_current else None
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for sparsity in (0.2, 0.55, 0.9):
            got = global_magnitude_masks(ws, sparsity, current)
            assert all(torch.equal(a, b) for a, b in zip(got, reference_masks(ws, sparsity, current)))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("n", [0, 5, 8, 64, 1001])
def test_positions_of_a_value_equal_nonzero(n: int) -> None:
    from lightning_compress.pruning.radix_select import _positions_of

    values = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(n), dtype=torch.int16)
    for value in range(5):
        assert torch.equal(_positions_of(values, value), (values == value).nonzero().squeeze(1))


@settings(max_examples=40, deadline=None)
@given(data=weight_lists(), fraction=st.floats(0.0, 1.0))
def test_smallest_mask_drops_what_a_stable_sort_drops(data, fraction) -> None:
    from lightning_compress.pruning.magnitude import smallest_mask

    ws, _ = data
    values = ws[0].abs() * (ws[0] > 0)  # non-negative, with zeros and ties (SparseGPT's saliencies)
    count = int(round(fraction * values.numel()))
    want = torch.ones(values.numel(), dtype=torch.bool)
    want[torch.sort(values.reshape(-1), stable=True).indices[:count]] = False
    assert torch.equal(smallest_mask(values, count), want.view(values.shape))


def test_smallest_mask_refuses_a_bad_count() -> None:
    from lightning_compress.pruning.magnitude import smallest_mask

    with pytest.raises(ValueError, match=r"`count` must be in \[0, 3\] .* got 4"):
        smallest_mask(torch.ones(3), 4)
