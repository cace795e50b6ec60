"""Input statistics of Linear and Conv layers: the GEMM view, the running Hessian, unsupported layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_compress.pruning.one_shot.calibration import InputStatistics, gemm_inputs, unsupported_reason


@pytest.mark.parametrize(
    "conv,shape",
    [
        (nn.Conv2d(3, 5, 3, stride=2, padding=1, dilation=1), (2, 3, 9, 9)),
        (nn.Conv2d(2, 4, (2, 3), padding=(1, 0), dilation=2, bias=False), (3, 2, 7, 8)),
        (nn.Conv1d(3, 4, 3, stride=2, padding=2), (2, 3, 11)),
        (nn.Conv1d(3, 4, 3), (3, 11)),  # unbatched
    ],
)
def test_conv_is_the_gemm_of_its_gemm_inputs(conv: nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    out = conv(x)
    cols = gemm_inputs(conv, x)
    gemm = cols @ conv.weight.reshape(conv.out_channels, -1).T
    if conv.bias is not None:
        gemm = gemm + conv.bias
    batched = out if x.dim() == conv.weight.dim() else out.unsqueeze(0)  # (B, out, *positions)
    expected = batched.reshape(batched.shape[0], conv.out_channels, -1).transpose(1, 2).reshape(-1, conv.out_channels)
    assert torch.allclose(gemm, expected, atol=1e-5)


def test_hessian_is_a_running_mean_over_batches() -> None:
    lin = nn.Linear(6, 2)
    stats = InputStatistics(lin, hessian=True)
    xs = [torch.randn(4, 3, 6), torch.randn(7, 6)]
    for x in xs:
        lin(x)
    stats.remove()
    lin(torch.randn(2, 6))  # after remove: not counted
    rows = torch.cat([x.reshape(-1, 6) for x in xs])
    assert stats.tokens == 19
    assert torch.allclose(stats.hessian(), 2 * rows.T @ rows / 19, atol=1e-5)
    assert torch.allclose(stats.input_norms(), rows.norm(dim=0), atol=1e-5)


def test_norms_only_keeps_no_hessian() -> None:
    stats = InputStatistics(nn.Linear(3, 2), hessian=False)
    with pytest.raises(RuntimeError, match="hessian=False"):
        stats.hessian()


@pytest.mark.parametrize(
    "module,reason",
    [
        (nn.Conv2d(4, 4, 3, groups=2), "groups=2"),
        (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
        (nn.Conv2d(4, 4, 3, padding="same"), "padding='same'"),
        (nn.Conv3d(1, 2, 3), "Conv3d is not a Linear, Conv1d or Conv2d layer"),
        (nn.Embedding(5, 4), "Embedding is not"),
    ],
)
def test_unsupported_layers_have_a_reason(module: nn.Module, reason: str) -> None:
    assert reason in (unsupported_reason(module) or "")
    with pytest.raises(TypeError, match="is not|only"):
        InputStatistics(module, hessian=False)
