"""Distillation on the Rotten Tomatoes sentences: a fine-tuned MiniLM (6 layers) into a shallower student started from
its layers, against the same student trained on the labels alone with the same budget; and the student's CPU
inference speed-up.

Teacher: the offline all-MiniLM-L6-v2 (lightning_compress.models.offline_minilm_path()) fine-tuned once on
--teacher-samples training sentences for --teacher-epochs epochs (in train mode: dropout on; AdamW --teacher-lr,
weight decay 0.01, 10 % warm-up then linear decay, batch 32; 5e-5 unless given), saved with save_pretrained under
experiments/distillation/.cache/rt_teacher_<n>[_<epochs>ep][_lr<lr>]/ and reused.
Student: layer_subset_student(teacher, layers=...) (embeddings, the chosen layers, pooler and classifier copied);
trained on --student-samples training sentences (a seeded subset of the 10,202, drawn independently of the teacher's)
for --epochs epochs with AdamW(--lr, weight decay 0.01), the same warm-up/decay and batch 32, once on the labels and
once with DistillationModule (teacher logits cached on disk in .cache, computed once for all runs). Evaluation: the
data module's validation and test splits (1,275 sentences each), final weights, no checkpoint selection.
Speed: median latency of one forward pass, batch 32, sequence 128 (random token ids, full attention mask),
torch.set_num_threads(--threads), eval mode, inference_mode, after warm-up.

Run from the repository root:
    .venv/bin/python experiments/distillation/rotten_tomatoes.py   # 3 seeds, 5 epochs: ~40 min (+12: teacher)
    .venv/bin/python experiments/distillation/rotten_tomatoes.py --seeds 0 --epochs 1 --student-samples 2000  # smoke
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

from lightning_compress import ClassificationModule, warmup_lr
from lightning_compress.data import GLUEDataModule
from lightning_compress.distillation.distillation_module import DistillationModule
from lightning_compress.distillation.students import layer_subset_student
from lightning_compress.distillation.teacher import load_teacher
from lightning_compress.models import huggingface_classifier, offline_minilm_path

CACHE = Path(__file__).resolve().parent / ".cache"
TEACHER_LR = 5e-5  # the teacher's fine-tuning rate unless --teacher-lr says otherwise (its cache folder omits it)
QUIET: dict[str, Any] = dict(
    accelerator="cpu",
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    enable_checkpointing=False,
    num_sanity_val_steps=0,
)


def classifier(model: torch.nn.Module, lr: float) -> ClassificationModule:
    return ClassificationModule(
        model,
        num_classes=2,
        optimizer=functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.01),
        scheduler=functools.partial(warmup_lr, warmup=0.1, decay="linear"),
        scheduler_interval="step",
    )


def data(samples: int | None, seed: int) -> GLUEDataModule:
    dm = GLUEDataModule(
        "rotten_tomatoes", tokenizer=offline_minilm_path(), batch_size=32, seed=seed, max_train_samples=samples
    )
    dm.setup("fit")
    return dm


def evaluate(module: ClassificationModule, dm: GLUEDataModule) -> dict[str, float]:
    trainer = L.Trainer(**QUIET)
    val = trainer.validate(module, dm.val_dataloader(), verbose=False)[0]["val/acc"]
    test = trainer.test(module, dm.test_dataloader(), verbose=False)[0]["test/acc"]
    return {"val": 100 * val, "test": 100 * test}


def teacher_model(samples: int, epochs: int = 1, lr: float = TEACHER_LR) -> tuple[torch.nn.Module, dict[str, float]]:
    suffix = (f"_{epochs}ep" if epochs != 1 else "") + (f"_lr{lr:g}" if lr != TEACHER_LR else "")
    folder = CACHE / f"rt_teacher_{samples}{suffix}"
    if not (folder / "config.json").is_file():
        L.seed_everything(0)
        module = classifier(huggingface_classifier(offline_minilm_path(), num_labels=2).train(), lr=lr)
        start = time.perf_counter()
        L.Trainer(max_epochs=epochs, **QUIET).fit(module, data(samples, seed=0).train_dataloader())
        print(f"teacher fine-tuned {epochs} epoch(s) on {samples} sentences in {time.perf_counter() - start:.0f} s")
        module.model.save_pretrained(folder)
    teacher = load_teacher(folder)  # a Hugging Face folder: one of the teacher sources DistillationModule takes
    scores_file = folder / "scores.json"
    if not scores_file.is_file():
        scores_file.write_text(json.dumps(evaluate(classifier(teacher, 0.0), data(samples, seed=0))))
    return teacher, json.loads(scores_file.read_text())


def student_data(args: argparse.Namespace, seed: int) -> GLUEDataModule:
    """``--student-samples`` training sentences the teacher was not fine-tuned on (a seeded draw per seed)."""
    dm = data(args.teacher_samples, seed=0)  # the teacher's split and subset (GLUEDataModule._subset, seed 0)
    full = data(None, seed=0)  # type: ignore[arg-type]
    n = len(full.train_dataset)
    teacher_rows = set(torch.randperm(n, generator=torch.Generator().manual_seed(0))[: args.teacher_samples].tolist())
    unseen = [i for i in range(n) if i not in teacher_rows]
    pick = torch.randperm(len(unseen), generator=torch.Generator().manual_seed(100 + seed))[: args.student_samples]
    dm.train_dataset = full.train_dataset.select([unseen[i] for i in pick.tolist()])
    return dm


def train_student(teacher: torch.nn.Module, seed: int, distill: bool, args: argparse.Namespace) -> dict[str, float]:
    L.seed_everything(seed)
    student = classifier(layer_subset_student(teacher, layers=args.layers), lr=args.lr)
    module: L.LightningModule = student
    if distill:
        # hidden-state pairs: student layer j (a copy of teacher layer layers[j]) against that teacher layer's output
        features = (
            [
                {
                    "student": f"hidden_states.{j + 1}",
                    "teacher": f"hidden_states.{i + 1}",
                    "weight": args.feature_weight,
                }
                for j, i in enumerate(args.layers)
            ]
            if args.feature_weight > 0
            else []
        )
        module = DistillationModule(
            student,
            teacher,
            temperature=args.temperature,
            alpha=args.alpha,
            features=features,
            teacher_cache=False if features else CACHE,
        )
    dm = student_data(args, seed)
    start = time.perf_counter()
    L.Trainer(max_epochs=args.epochs, **QUIET).fit(module, dm.train_dataloader())
    return {**evaluate(student, dm), "seconds": time.perf_counter() - start}


@torch.inference_mode()
def median_latency(model: torch.nn.Module, repeats: int) -> float:
    model.eval()
    g = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(1000, 20000, (32, 128), generator=g),
        "attention_mask": torch.ones(32, 128, dtype=torch.long),
        "token_type_ids": torch.zeros(32, 128, dtype=torch.long),
    }
    for _ in range(3):
        model(**batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(**batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-samples", type=int, default=6202)  # with 4,000 student sentences: all 10,202
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--teacher-lr", type=float, default=TEACHER_LR)
    parser.add_argument("--student-samples", type=int, default=4000)
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--feature-weight", type=float, default=0.0, help="> 0: add hidden-state pairs (MSE)")
    parser.add_argument("--latency-repeats", type=int, default=15)
    parser.add_argument("--skip-training", action="store_true", help="measure the speed-up only")
    parser.add_argument("--runs", nargs="+", default=["labels only", "distilled"], choices=["labels only", "distilled"])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (1 when two jobs share 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    teacher, teacher_scores = teacher_model(args.teacher_samples, args.teacher_epochs, args.teacher_lr)
    print(f"teacher: {teacher_scores}")
    student = layer_subset_student(teacher, layers=args.layers)
    t_teacher = median_latency(teacher, args.latency_repeats)
    t_student = median_latency(student, args.latency_repeats)
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in (("teacher", teacher), ("student", student))}
    print(
        f"latency (batch 32, seq 128, {args.threads} thread(s)): teacher {1000 * t_teacher:.0f} ms, "
        f"student {1000 * t_student:.0f} ms,"
        f" speed-up {t_teacher / t_student:.2f}x; parameters {params}"
    )
    summary: dict[str, Any] = {
        "args": vars(args),
        "teacher": teacher_scores,
        "parameters": params,
        "latency_ms": {"teacher": 1000 * t_teacher, "student": 1000 * t_student},
        "speedup": t_teacher / t_student,
    }
    if not args.skip_training:
        rows: dict[str, list[dict[str, float]]] = {"labels only": [], "distilled": []}
        for seed in args.seeds:
            for name, distill in (("labels only", False), ("distilled", True)):
                if name not in args.runs:
                    continue
                result = train_student(teacher, seed, distill, args)
                rows[name].append(result)
                print(
                    f"seed {seed} {name:12s} val {result['val']:.2f}  test {result['test']:.2f}  "
                    f"({result['seconds']:.0f} s)",
                    flush=True,
                )
        for name, results in [(n, r) for n, r in rows.items() if r]:
            tests, vals = [r["test"] for r in results], [r["val"] for r in results]
            summary[name] = {
                "test_mean": statistics.mean(tests),
                "test_std": statistics.pstdev(tests),
                "val_mean": statistics.mean(vals),
                "val_std": statistics.pstdev(vals),
                "tests": tests,
                "vals": vals,
                "seconds": [r["seconds"] for r in results],
            }
            print(
                f"{name:12s} test {statistics.mean(tests):.2f} +- {statistics.pstdev(tests):.2f}   "
                f"val {statistics.mean(vals):.2f} +- {statistics.pstdev(vals):.2f}"
            )
        for split in ("test", "val") if all(rows.values()) else ():
            gain = summary["distilled"][f"{split}_mean"] - summary["labels only"][f"{split}_mean"]
            print(f"distillation gain ({split}, mean over {len(args.seeds)} seeds): {gain:+.2f} points")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
