import pytest

from lightning_compress.pruning.schedule import (
    constant_schedule,
    cubic_schedule,
    linear_schedule,
    resolve_schedule,
    sparsity_at_step,
)


@pytest.mark.parametrize(
    ("progress", "cubic", "linear"),
    [(0.0, 0.0, 0.0), (0.25, 0.578125, 0.25), (0.5, 0.875, 0.5), (0.75, 0.984375, 0.75), (1.0, 1.0, 1.0)],
)
def test_schedule_functions_match_table(progress: float, cubic: float, linear: float) -> None:
    assert cubic_schedule(progress) == pytest.approx(cubic, abs=1e-12)
    assert linear_schedule(progress) == linear
    assert constant_schedule(progress) == 1.0


# start 10, end 50, initial 0.1, final 0.9; hand-computed: 0.1 + 0.8 * f((step - 10) / 40)
@pytest.mark.parametrize(
    ("step", "schedule", "expected"),
    [
        (0, "cubic", 0.1),
        (9, "cubic", 0.1),
        (10, "cubic", 0.1),
        (20, "cubic", 0.1 + 0.8 * 0.578125),
        (30, "cubic", 0.8),
        (40, "cubic", 0.1 + 0.8 * 0.984375),
        (49, "cubic", 0.1 + 0.8 * (1 - (1 / 40) ** 3)),
        (50, "cubic", 0.9),
        (1000, "cubic", 0.9),
        (20, "linear", 0.3),
        (30, "linear", 0.5),
        (9, "constant", 0.1),
        (10, "constant", 0.9),
        (30, lambda p: p * p, 0.3),
    ],
)
def test_sparsity_at_step_matches_table(step: int, schedule, expected: float) -> None:
    got = sparsity_at_step(step, start_step=10, end_step=50, initial=0.1, final=0.9, schedule=schedule)
    assert got == pytest.approx(expected, abs=1e-12)


def test_final_is_exact_at_and_after_end() -> None:
    for step in (50, 51, 10**6):
        assert sparsity_at_step(step, 10, 50, 0.1, 0.9) == 0.9


def test_start_equal_end_jumps_to_final() -> None:
    assert sparsity_at_step(4, 5, 5, 0.0, 0.5) == 0.0
    assert sparsity_at_step(5, 5, 5, 0.0, 0.5) == 0.5


def test_schedule_is_monotone() -> None:
    values = [sparsity_at_step(s, 0, 100, 0.0, 0.95) for s in range(0, 120)]
    assert values == sorted(values)


def test_unknown_schedule_name_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"`schedule` must be one of \['constant', 'cubic', 'linear'\].*got 'exp'"):
        resolve_schedule("exp")


def test_callable_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"`schedule` must return a value in \[0, 1\], got 2.0"):
        sparsity_at_step(5, 0, 10, 0.0, 0.5, schedule=lambda p: 2.0)


def test_end_before_start_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"`end_step` must be >= `start_step` \(10\), got 5"):
        sparsity_at_step(5, 10, 5, 0.0, 0.5)
