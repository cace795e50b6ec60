import math

import pytest
import torch

from lightning_compress.training.lr_schedule import warmup_factor, warmup_lr


@pytest.mark.parametrize(
    ("step", "decay", "expected"),
    [
        (0, "linear", 1 / 5),
        (3, "linear", 4 / 5),
        (4, "linear", 1.0),
        (9, "linear", 0.5),
        (14, "linear", 0.0),
        (4, "cosine", 1.0),
        (9, "cosine", 0.5),
        (14, "cosine", 0.0),
        (7, "cosine", 0.5 * (1 + math.cos(math.pi * 0.3))),
        (2, "constant", 3 / 5),
        (13, "constant", 1.0),
    ],
)
def test_warmup_factor_table(step: int, decay: str, expected: float) -> None:
    assert warmup_factor(step, total_steps=14, warmup_steps=4, decay=decay) == pytest.approx(expected)


def test_warmup_lr_steps_the_learning_rate() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = warmup_lr(opt, total_steps=10, warmup=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([2 / 3, 4 / 3, 2.0])
    assert lrs[-1] == pytest.approx(2.0 * 1 / 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"decay": "exp"}, "`decay`"), ({"warmup": -1}, "`warmup`"), ({"total_steps": 0}, "`total_steps`")],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=match):
        warmup_lr(opt, **{"total_steps": 10, **kwargs})
