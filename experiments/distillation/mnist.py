"""Distillation on MNIST-5k: a wide SmallCNN teacher into a small SmallCNN student, against the same student trained on
the labels alone with the same budget.

Teacher: SmallCNN(channels=(64, 128), hidden=256), 12 epochs, AdamW(1e-3); trained once and kept in
experiments/distillation/.cache/mnist_teacher.pt. Students: SmallCNN(channels=(8, 16), hidden=32), 12 epochs,
AdamW(3e-3, weight decay 0.01), batch 64, the final weights tested (no checkpoint selection), one run per seed for
each of: labels only; distilled (DistillationModule, teacher logits cached in experiments/distillation/.cache).
Data: MNIST5kDataModule's fixed 3,500 / 500 / 1,000 split.

Run from the repository root:
    .venv/bin/python experiments/distillation/mnist.py                      # 5 seeds, T=4, alpha=0.1: about 3 min
    .venv/bin/python experiments/distillation/mnist.py --seeds 0 --temperature 2 --alpha 0.5
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightning_compress import ClassificationModule
from lightning_compress.data import MNIST5kDataModule
from lightning_compress.distillation.distillation_module import DistillationModule
from lightning_compress.distillation.students import small_cnn_student
from lightning_compress.models import SmallCNN

CACHE = Path(__file__).resolve().parent / ".cache"
QUIET: dict[str, Any] = dict(
    accelerator="cpu",
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    enable_checkpointing=False,
    num_sanity_val_steps=0,
)
EPOCHS = 12


def teacher_model() -> SmallCNN:
    return SmallCNN(channels=(64, 128), hidden=256)


def evaluate(module: L.LightningModule, dm: MNIST5kDataModule) -> dict[str, float]:
    trainer = L.Trainer(**QUIET)
    val = trainer.validate(module, dm.val_dataloader(), verbose=False)[0]["val/acc"]
    test = trainer.test(module, dm.test_dataloader(), verbose=False)[0]["test/acc"]
    return {"val": 100 * val, "test": 100 * test}


def train_teacher(dm: MNIST5kDataModule) -> tuple[SmallCNN, dict[str, float]]:
    path = CACHE / "mnist_teacher.pt"
    model = teacher_model()
    module = ClassificationModule(model, num_classes=10, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3))
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        L.seed_everything(0)
        start = time.perf_counter()
        L.Trainer(max_epochs=EPOCHS, **QUIET).fit(module, dm.train_dataloader())
        print(f"teacher trained in {time.perf_counter() - start:.0f} s")
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model.eval(), evaluate(module, dm)


def train_student(
    dm: MNIST5kDataModule, teacher: SmallCNN, seed: int, distill: bool, args: argparse.Namespace
) -> dict[str, float]:
    L.seed_everything(seed)
    optimizer = functools.partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.01)
    student = ClassificationModule(
        small_cnn_student(teacher, channels=(8, 16), hidden=32), num_classes=10, optimizer=optimizer
    )
    module: L.LightningModule = student
    if distill:
        module = DistillationModule(
            student, teacher, temperature=args.temperature, alpha=args.alpha, teacher_cache=CACHE
        )
    start = time.perf_counter()
    L.Trainer(max_epochs=EPOCHS, **QUIET).fit(module, dm.train_dataloader())
    return {**evaluate(student, dm), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.1)
    args = parser.parse_args()
    torch.set_num_threads(2)
    dm = MNIST5kDataModule(batch_size=64)
    dm.setup("fit")
    teacher, teacher_acc = train_teacher(dm)
    print(f"teacher ({sum(p.numel() for p in teacher.parameters()):,} params): {teacher_acc}")
    rows: dict[str, list[dict[str, float]]] = {"labels only": [], "distilled": []}
    for seed in args.seeds:
        for name, distill in (("labels only", False), ("distilled", True)):
            result = train_student(dm, teacher, seed, distill, args)
            rows[name].append(result)
            print(
                f"seed {seed} {name:12s} val {result['val']:.2f}  test {result['test']:.2f}"
                f"  ({result['seconds']:.0f} s)"
            )
    summary: dict[str, Any] = {"teacher": teacher_acc, "args": vars(args)}
    for name, results in rows.items():
        tests = [r["test"] for r in results]
        vals = [r["val"] for r in results]
        summary[name] = {
            "test_mean": statistics.mean(tests),
            "test_std": statistics.pstdev(tests),
            "val_mean": statistics.mean(vals),
            "tests": tests,
        }
        print(
            f"{name:12s} test {statistics.mean(tests):.2f} +- {statistics.pstdev(tests):.2f}   "
            f"val {statistics.mean(vals):.2f}"
        )
    gain = summary["distilled"]["test_mean"] - summary["labels only"]["test_mean"]
    print(f"distillation gain: {gain:+.2f} points (test, mean over {len(args.seeds)} seeds)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
