import copy

import pytest
import torch
from torch import nn

from lightning_compress.sparsity.nm_masks import nm_mask
from lightning_compress.sparsity.semi_structured import SemiStructuredSwap, semi_structured_problems, to_semi_structured

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="2:4 semi-structured kernels need CUDA")


def two_four(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    return w * nm_mask(w, 2, 4)


# ------------------------------------------------------------------------------------- checks, pure, on CPU
@pytest.mark.parametrize("backend", ["cusparselt", "cutlass"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_2_4_weight_of_a_supported_shape_passes(backend: str, dtype: torch.dtype) -> None:
    assert semi_structured_problems(two_four(64, 128), dtype, backend) == []
    assert semi_structured_problems(two_four(768, 3072).to(dtype), dtype, backend) == []


def test_not_2_4() -> None:
    w = two_four(64, 64)
    w[0, :4] = 1.0
    assert semi_structured_problems(w, torch.float16) == [
        "not 2:4 sparse (a group of 4 consecutive input weights has more than 2 non-zeros)"
    ]


def test_fewer_nonzeros_than_two_per_group_is_still_2_4() -> None:
    assert semi_structured_problems(torch.zeros(32, 64), torch.bfloat16) == []


@pytest.mark.parametrize(
    ("shape", "backend", "dtype", "expected"),
    [
        ((8, 64), "cusparselt", torch.float16, "8 rows: cuSPARSELt needs a multiple of 16 (>= 16)"),
        ((24, 64), "cusparselt", torch.bfloat16, "24 rows: cuSPARSELt needs a multiple of 16 (>= 16)"),
        ((64, 40), "cusparselt", torch.float16, "40 columns: cuSPARSELt needs a multiple of 16 (>= 16)"),
        ((16, 64), "cutlass", torch.float16, "16 rows: CUTLASS needs a multiple of 32 (>= 32)"),
        ((32, 96), "cutlass", torch.bfloat16, "96 columns: CUTLASS needs a multiple of 64 (>= 64)"),
        ((32, 64), "cusparselt", torch.int8, None),
        ((16, 64), "cusparselt", torch.int8, "16 rows: cuSPARSELt needs a multiple of 32 (>= 32)"),
        ((32, 64), "cutlass", torch.int8, "64 columns: CUTLASS needs a multiple of 128 (>= 128)"),
        ((2, 384), "cusparselt", torch.float16, "2 rows: cuSPARSELt needs a multiple of 16 (>= 16)"),
    ],
)
def test_shape_constraints_follow_torchs_table(shape: tuple, backend: str, dtype: torch.dtype, expected: str) -> None:
    problems = semi_structured_problems(two_four(*shape), dtype, backend)
    assert problems == ([] if expected is None else [f"{expected} for {dtype}"])


def test_dtype_and_dimension_problems() -> None:
    (problem,) = semi_structured_problems(two_four(32, 64), torch.float32, "cusparselt")
    assert problem.startswith("dtype torch.float32 is not supported by cuSPARSELt (it takes ")
    assert semi_structured_problems(two_four(32, 64), torch.float32, "cutlass") == []  # CUTLASS has an fp32 table
    assert semi_structured_problems(torch.zeros(4, 2, 2), torch.float16) == [
        "3-D weight of shape (4, 2, 2): only 2-D (Linear) weights are supported"
    ]
    assert semi_structured_problems(torch.zeros(32, 6), torch.float16)[0] == (
        "6 input features: not a multiple of 4, so it cannot be 2:4"
    )


def test_default_backend_follows_torchs_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    w = two_four(16, 64)  # fine for cuSPARSELt, too few rows for CUTLASS
    assert semi_structured_problems(w, torch.float16) == []
    monkeypatch.setattr(torch.sparse.SparseSemiStructuredTensor, "_FORCE_CUTLASS", True)
    assert semi_structured_problems(w, torch.float16) == [
        "16 rows: CUTLASS needs a multiple of 32 (>= 32) for torch.float16"
    ]


def test_bad_backend_and_dtype() -> None:
    with pytest.raises(ValueError, match=r"`backend` can be cusparselt, cutlass or None, got 'cusparse'"):
        semi_structured_problems(two_four(32, 64), torch.float16, "cusparse")
    with pytest.raises(ValueError, match=r"`dtype` must be torch.float16 or torch.bfloat16, got torch.int8"):
        to_semi_structured(nn.Linear(64, 32), dtype=torch.int8)


# --------------------------------------------------------------------------------------------- the export
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where CUDA is absent")
def test_without_cuda_the_export_says_what_it_needs() -> None:
    with pytest.raises(RuntimeError, match=r"needs a CUDA GPU.*torch\.sparse\.to_sparse_semi_structured.*Ampere"):
        to_semi_structured(nn.Sequential(nn.Linear(64, 32)))


def test_swap_summary_prints() -> None:
    text = str(SemiStructuredSwap(["0"], {"2": "2 rows: too few"}))
    assert text == "1 Linear layer(s) semi-structured (2:4), 1 left dense\n  dense: 2: 2 rows: too few"


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_parity_with_the_dense_masked_model(dtype: torch.dtype) -> None:
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("2:4 kernels need compute capability 8.0 or newer")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(nm_mask(layer.weight))
    model = model.to("cuda", dtype).eval()
    sparse = copy.deepcopy(model)
    with pytest.warns(UserWarning, match=r"left 1 Linear layer\(s\) dense: 4 \(10 rows"):
        result = to_semi_structured(sparse, dtype=dtype)
    assert result.swapped == ["0", "2"] and list(result.skipped) == ["4"]
    assert isinstance(sparse[0].weight, torch.sparse.SparseSemiStructuredTensor)
    x = torch.randn(64, 128, device="cuda", dtype=dtype)
    with torch.no_grad():
        expected, actual = model(x), sparse(x)
    torch.testing.assert_close(actual, expected, rtol=2e-2, atol=2e-2)


def test_swap_bookkeeping_with_the_kernels_faked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The swap loop on CPU: the CUDA checks and the compression are replaced, everything else is real."""
    import lightning_compress.sparsity.semi_structured as ss

    converted: list[torch.dtype] = []

    def fake_compress(dense: torch.Tensor) -> torch.Tensor:
        assert dense.is_contiguous()
        converted.append(dense.dtype)
        return dense.clone()

    monkeypatch.setattr(ss, "_check_cuda", lambda linears, backend: None)
    monkeypatch.setattr(ss, "to_sparse_semi_structured", fake_compress)
    shared = nn.Linear(64, 32)
    model = nn.Sequential(shared, nn.ReLU(), nn.Linear(32, 64), shared, nn.Linear(32, 10), nn.Linear(64, 32))
    with torch.no_grad():
        for layer in (model[0], model[2], model[4]):
            layer.weight.mul_(nm_mask(layer.weight))  # model[5] stays dense: not 2:4
    with pytest.warns(UserWarning, match=r"left 2 Linear layer\(s\) dense: 4 \(10 rows: .*\), 5 \(not 2:4 sparse"):
        result = to_semi_structured(model, dtype=torch.float16)
    assert result.swapped == ["0", "2"]  # the shared weight appears once, under its first name
    assert list(result.skipped) == ["4", "5"]
    assert converted == [torch.float16, torch.float16]
    assert model[0].weight.dtype == model[0].bias.dtype == torch.float16 and not model[0].weight.requires_grad
    assert model[4].weight.dtype == torch.float32  # left alone
    only = to_semi_structured(nn.Sequential(nn.Linear(64, 32)), torch.bfloat16, filter_fn=lambda m, fqn: False)
    assert only.swapped == [] and only.skipped == {}
