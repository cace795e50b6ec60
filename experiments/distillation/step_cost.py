"""What a distillation training step costs: against a student-only training step plus one teacher inference.

For two teacher/student pairs, times (median over interleaved repeats, after warm-up, torch.set_num_threads(2)):
  * student-only step: ClassificationModule.training_step + backward + AdamW step;
  * teacher inference: the teacher's forward under torch.inference_mode, as DistillationModule runs it;
  * distillation step: DistillationModule.training_step (student forward, teacher inference, CE + KD loss) + backward +
    AdamW step;
and checks that no work is wasted on the teacher: no gradient, not in the optimizer, no optimizer state.

Pairs: MNIST-sized SmallCNN(64-128, hidden 256) -> SmallCNN(8-16, hidden 32), batch 64 of 28x28 images; and the
offline MiniLM (6 layers, random classifier head) -> its 3-layer layer_subset_student (layers 1, 3, 5), batch 32 of
sequence length 64 (random token ids). Weights do not change the cost, so nothing is trained first.

Run from the repository root:
    .venv/bin/python experiments/distillation/step_cost.py        # about 2 min on 2 idle cores
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lightning_compress import ClassificationModule
from lightning_compress.distillation.distillation_module import DistillationModule
from lightning_compress.distillation.students import layer_subset_student
from lightning_compress.models import SmallCNN, huggingface_classifier, offline_minilm_path


def make_step(module: Any, batch: Any) -> Callable[[], None]:
    optimizer = module.configure_optimizers()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        module.training_step(batch, 0).backward()
        optimizer.step()

    step.optimizer = optimizer  # type: ignore[attr-defined]
    return step


def measure(fns: dict[str, Callable[[], Any]], repeats: int, per_repeat: int) -> dict[str, float]:
    for fn in fns.values():  # warm-up
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            for _ in range(per_repeat):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def pair(name: str, teacher: nn.Module, student: nn.Module, batch: Any, args: argparse.Namespace) -> dict[str, Any]:
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-4)
    alone = ClassificationModule(student, num_classes=teacher_classes(teacher, batch), optimizer=optimizer)
    distill = DistillationModule(
        ClassificationModule(_copy(student), num_classes=alone.num_classes, optimizer=optimizer),
        teacher,
        temperature=2.0,
        alpha=0.5,
    )
    inputs, _ = alone.split_batch(batch)
    step_alone, step_distill = make_step(alone, batch), make_step(distill, batch)
    ms = measure(
        {
            "student step": step_alone,
            "teacher inference": lambda: distill._run_teacher(inputs, ()),
            "distillation step": step_distill,
        },
        args.repeats,
        args.per_repeat,
    )
    optim = step_distill.optimizer  # type: ignore[attr-defined]
    teacher_ids = {id(p) for p in teacher.parameters()}
    checks = {
        "teacher params with a gradient": sum(p.grad is not None for p in teacher.parameters()),
        "teacher params requiring grad": sum(p.requires_grad for p in teacher.parameters()),
        "teacher params in the optimizer": sum(id(p) in teacher_ids for g in optim.param_groups for p in g["params"]),
        "teacher params with optimizer state": sum(id(p) in teacher_ids for p in optim.state),
        "optimizer state entries": len(optim.state),
        "student parameters": sum(1 for _ in distill.student.parameters()),
        "teacher in eval mode": not teacher.training,
    }
    overhead = ms["distillation step"] - ms["student step"] - ms["teacher inference"]
    result = {
        "pair": name,
        "ms": ms,
        "overhead_ms": overhead,
        "overhead_pct_of_sum": 100 * overhead / (ms["student step"] + ms["teacher inference"]),
        "checks": checks,
    }
    print(
        f"{name}: "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items())
        + f"; distillation - (student + teacher) = {overhead:+.1f} ms ({result['overhead_pct_of_sum']:+.1f} %)"
    )
    print(f"  {checks}")
    return result


def teacher_classes(teacher: nn.Module, batch: Any) -> int:
    config = getattr(teacher, "config", None)
    return int(config.num_labels) if config is not None else int(teacher.classifier[-1].out_features)


def _copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--per-repeat", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", message=".*self.log.*")  # steps are called without a Trainer
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    results = []
    images = (torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g))
    cnn_teacher = SmallCNN(channels=(64, 128), hidden=256)
    results.append(
        pair("SmallCNN 64-128 -> 8-16, batch 64", cnn_teacher, SmallCNN(channels=(8, 16), hidden=32), images, args)
    )
    minilm = huggingface_classifier(offline_minilm_path(), num_labels=2)
    text = {
        "input_ids": torch.randint(1000, 20000, (32, 64), generator=g),
        "attention_mask": torch.ones(32, 64, dtype=torch.long),
        "token_type_ids": torch.zeros(32, 64, dtype=torch.long),
        "labels": torch.randint(0, 2, (32,), generator=g),
    }
    results.append(
        pair(
            "MiniLM 6 layers -> 3 layers, batch 32 x 64 tokens",
            minilm,
            layer_subset_student(minilm, layers=[1, 3, 5]),
            text,
            args,
        )
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
