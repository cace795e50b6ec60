"""The distillation maths against reference computations written with plain torch ops."""

from __future__ import annotations

import pytest
import torch

from lightning_compress.distillation.losses import feature_loss, kd_loss, temperature_at


def reference_kd(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """T^2 * mean over examples of sum_c p_t(c) * (log p_t(c) - log p_s(c)), p = softmax(logits / T)."""
    s, te = student.double().reshape(-1, student.shape[-1]), teacher.double().reshape(-1, teacher.shape[-1])
    p_t = torch.exp(te / t) / torch.exp(te / t).sum(-1, keepdim=True)
    p_s = torch.exp(s / t) / torch.exp(s / t).sum(-1, keepdim=True)
    return t * t * (p_t * (p_t.log() - p_s.log())).sum(-1).mean()


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0, 10.0])
@pytest.mark.parametrize("shape", [(8, 10), (3, 5, 2)])
def test_kd_loss_matches_the_reference(t: float, shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(shape, generator=g) * 3, torch.randn(shape, generator=g) * 3
    torch.testing.assert_close(kd_loss(student, teacher, t), reference_kd(student, teacher, t).float())


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    x = torch.randn(4, 7)
    assert kd_loss(x, x.clone(), 3.0).abs() < 1e-6
    assert kd_loss(x, x + 5.0, 3.0).abs() < 1e-6  # softmax is shift invariant
    assert kd_loss(torch.randn(4, 7), x, 3.0) > 0


def test_kd_loss_gradient_flows_to_the_student_only() -> None:
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3, requires_grad=True)
    kd_loss(student, teacher, 2.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
    # d/ds of T^2 KL(p_t || p_s(s/T)) is T (p_s - p_t) / B
    p_s, p_t = torch.softmax(student.detach() / 2, -1), torch.softmax(teacher.detach() / 2, -1)
    torch.testing.assert_close(student.grad, 2 * (p_s - p_t) / 4)


def test_kd_loss_in_bf16_is_computed_in_float32() -> None:
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    out = kd_loss(s.bfloat16(), t.bfloat16(), 2.0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, kd_loss(s.bfloat16().float(), t.bfloat16().float(), 2.0))


def test_kd_loss_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"same shape, got \(2, 3\) and \(2, 4\)"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="`temperature` must be a number > 0, got 0"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0)


def test_feature_losses_match_the_reference() -> None:
    s, t = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    torch.testing.assert_close(feature_loss(s, t, "mse"), ((s - t) ** 2).mean())
    cos = (s * t).sum(-1) / (s.norm(dim=-1) * t.norm(dim=-1))
    torch.testing.assert_close(feature_loss(s, t, "cosine"), (1 - cos).mean())
    maps_s, maps_t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    cos = (maps_s * maps_t).sum(1) / (maps_s.norm(dim=1) * maps_t.norm(dim=1))
    torch.testing.assert_close(feature_loss(maps_s, maps_t, "cosine", dim=1), (1 - cos).mean())


def test_feature_loss_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        feature_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="`kind` can be mse or cosine, got 'l1'"):
        feature_loss(torch.zeros(2, 3), torch.zeros(2, 3), "l1")  # type: ignore[arg-type]


def test_temperature_constant_and_schedule() -> None:
    assert temperature_at(4.0, 0.7) == 4.0
    anneal = lambda p: 8.0 - 7.0 * p  # noqa: E731
    assert temperature_at(anneal, 0.0) == 8.0 and temperature_at(anneal, 1.0) == 1.0
    with pytest.raises(ValueError, match="`temperature` must be > 0, got 0.0 at training progress 1.000"):
        temperature_at(lambda p: 1.0 - p, 1.0)
