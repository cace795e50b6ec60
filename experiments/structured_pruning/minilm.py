"""Structured pruning of the MiniLM fine-tuned on Rotten Tomatoes: 25 % and 50 % of the attention heads and / or FFN
neurons removed (the weights sliced: a smaller dense model), CPU latency and accuracy, before and after a short
distillation fine-tune with the unpruned model as teacher.

Teacher: the offline all-MiniLM-L6-v2 (6 layers, 12 heads of 32, FFN 1536) fine-tuned on 2,000 Rotten Tomatoes training
sentences (seeded subset, seed 0) for 2 epochs: AdamW 5e-5, weight decay 0.01, 10 % warm-up then linear decay, batch 32,
max length 128. Saved with save_pretrained under experiments/structured_pruning/.cache/ and reused.
Pruning: prune_heads / prune_ffn_neurons (importance |dL/dgate| over --calibration-batches training batches of 32,
the same count removed from every layer); "heads+ffn" prunes heads first, then neurons of the head-pruned model.
Fine-tune: DistillationModule(pruned student, teacher=the unpruned fine-tuned model, T=2, alpha=0.5) on the same 2,000
sentences for --epochs epochs (and, as the control for that extra training, a copy of the unpruned model given the same
fine-tune: the "dense" row), AdamW --lr (weight decay 0.01), warm-up 10 % then linear decay, batch 32; teacher logits
cached on disk (computed once for all runs).
Accuracy: the 1,275 validation and 1,275 test sentences, final weights.
Latency: one forward pass, batch 32, sequence 128 (random token ids, full attention mask), torch.set_num_threads(2),
eval mode, inference_mode; after 3 warm-up passes, the models are timed interleaved (one pass of each in turn,
--latency-repeats rounds) and the median is reported, with its ratio to the dense model's median.

Run from the repository root (2 CPU cores, shared):
    .venv/bin/python experiments/structured_pruning/minilm.py                  # about 25 min
    .venv/bin/python experiments/structured_pruning/minilm.py --distil         # latency and no-fine-tune accuracy only
Order: prune every variant, time them, evaluate them, then distil one after another; experiments/structured_pruning/
results.json is rewritten after each step, and the table is printed at the end.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightning_compress import ClassificationModule, warmup_lr
from lightning_compress.data import GLUEDataModule
from lightning_compress.distillation.distillation_module import DistillationModule
from lightning_compress.distillation.teacher import load_teacher
from lightning_compress.models import huggingface_classifier, offline_minilm_path
from lightning_compress.pruning.structured.report import num_parameters
from lightning_compress.pruning.structured.transformer import prune_ffn_neurons, prune_heads

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
QUIET: dict[str, Any] = dict(
    accelerator="cpu",
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    enable_checkpointing=False,
    num_sanity_val_steps=0,
)
VARIANTS = {  # name -> (head fraction, neuron fraction)
    "heads 25%": (0.25, 0.0), "heads 50%": (0.5, 0.0), "ffn 25%": (0.0, 0.25), "ffn 50%": (0.0, 0.5),
    "heads+ffn 25%": (0.25, 0.25), "heads+ffn 50%": (0.5, 0.5),
}  # fmt: skip


def classifier(model: torch.nn.Module, lr: float) -> ClassificationModule:
    return ClassificationModule(
        model, num_classes=2, optimizer=functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.01),
        scheduler=functools.partial(warmup_lr, warmup=0.1, decay="linear"), scheduler_interval="step",
    )  # fmt: skip


def data(samples: int) -> GLUEDataModule:
    dm = GLUEDataModule("rotten_tomatoes", tokenizer=offline_minilm_path(), batch_size=32, seed=0,
                        max_train_samples=samples)  # fmt: skip
    dm.setup("fit")
    return dm


def evaluate(model: torch.nn.Module, dm: GLUEDataModule) -> dict[str, float]:
    module, trainer = classifier(model, 0.0), L.Trainer(**QUIET)
    val = trainer.validate(module, dm.val_dataloader(), verbose=False)[0]["val/acc"]
    test = trainer.test(module, dm.test_dataloader(), verbose=False)[0]["test/acc"]
    return {"val": 100 * val, "test": 100 * test}


def teacher_model(dm: GLUEDataModule, samples: int, epochs: int) -> torch.nn.Module:
    folder = CACHE / f"rt_minilm_{samples}_{epochs}ep"
    if not (folder / "config.json").is_file():
        L.seed_everything(0)
        module = classifier(huggingface_classifier(offline_minilm_path(), num_labels=2).train(), lr=5e-5)
        start = time.perf_counter()
        L.Trainer(max_epochs=epochs, **QUIET).fit(module, dm.train_dataloader())
        print(f"teacher fine-tuned on {samples} sentences, {epochs} epochs, in {time.perf_counter() - start:.0f} s")
        module.model.save_pretrained(folder)
    return load_teacher(folder).eval()


def calibration(dm: GLUEDataModule, batches: int) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    loader = iter(dm.train_dataloader())
    return [next(loader) for _ in range(batches)]


def prune(teacher: torch.nn.Module, heads: float, ffn: float, batches: list[Any]) -> tuple[torch.nn.Module, float]:
    start = time.perf_counter()
    model = teacher
    if heads:
        model, report = prune_heads(model, heads, batches)
        print(f"  {report}")
    if ffn:
        model, report = prune_ffn_neurons(model, ffn, batches)
        print(f"  {report}")
    return model.eval(), time.perf_counter() - start


def distil(student: torch.nn.Module, teacher: torch.nn.Module, dm: GLUEDataModule, args: argparse.Namespace) -> float:
    L.seed_everything(0)
    module = DistillationModule(classifier(student.train(), args.lr), teacher, temperature=2.0, alpha=0.5,
                                teacher_cache=CACHE)  # fmt: skip
    start = time.perf_counter()
    L.Trainer(max_epochs=args.epochs, **QUIET).fit(module, dm.train_dataloader())
    student.eval()
    return time.perf_counter() - start


@torch.inference_mode()
def interleaved_latency(models: dict[str, torch.nn.Module], repeats: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 20000, (32, 128), generator=g),
             "attention_mask": torch.ones(32, 128, dtype=torch.long),
             "token_type_ids": torch.zeros(32, 128, dtype=torch.long)}  # fmt: skip
    for model in models.values():
        model.eval()
        for _ in range(3):
            model(**batch)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(**batch)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def save(args: argparse.Namespace, rows: dict[str, dict[str, Any]]) -> None:
    """Writes what is known so far (a long run interrupted keeps its finished rows)."""
    (HERE / args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1, help="distillation fine-tune epochs")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--latency-repeats", type=int, default=15)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--distil",
        nargs="*",
        default=None,
        choices=["dense", *VARIANTS],
        help="variants to fine-tune by distillation (default: all of --variants, and dense: the "
        "unpruned model given the same fine-tune, the control for the extra epoch)",
    )
    parser.add_argument("--out", default="results.json", help="file written beside this script")
    args = parser.parse_args()
    torch.set_num_threads(2)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    distil_variants = ["dense", *args.variants] if args.distil is None else args.distil

    dm = data(args.train_samples)
    teacher = teacher_model(dm, args.train_samples, args.teacher_epochs)
    batches = calibration(dm, args.calibration_batches)
    models: dict[str, torch.nn.Module] = {"dense": teacher}
    rows: dict[str, dict[str, Any]] = {"dense": {"params": num_parameters(teacher)}}
    for name in args.variants:
        heads, ffn = VARIANTS[name]
        print(name, flush=True)
        models[name], seconds = prune(teacher, heads, ffn, batches)
        rows[name] = {"params": num_parameters(models[name]), "prune_seconds": seconds}
    latency = interleaved_latency(models, args.latency_repeats)
    for name, seconds in latency.items():
        rows[name].update(latency_ms=1000 * seconds, speedup=latency["dense"] / seconds)
        print(f"{name}: {rows[name]}", flush=True)
    save(args, rows)
    for name, model in models.items():
        rows[name].update(evaluate(model, dm))
        print(f"{name}, no fine-tune: {rows[name]}", flush=True)
        save(args, rows)
    for name in distil_variants:
        if name == "dense":  # a copy: the teacher itself stays as it is
            models[name] = copy.deepcopy(teacher).requires_grad_(True)
        seconds = distil(models[name], teacher, dm, args)
        scores = evaluate(models[name], dm)
        rows[name].update(distilled_val=scores["val"], distilled_test=scores["test"], distil_seconds=seconds)
        print(f"{name}: distilled {scores} in {seconds:.0f} s", flush=True)
        save(args, rows)

    print(f"\n{'model':14s} {'params':>10s} {'latency ms':>10s} {'speed-up':>8s} {'val':>6s} {'test':>6s}"
          f" {'val KD':>6s} {'test KD':>7s}")  # fmt: skip
    for name, r in rows.items():
        kd = f"{r['distilled_val']:6.2f} {r['distilled_test']:7.2f}" if "distilled_val" in r else f"{'-':>6s} {'-':>7s}"
        print(f"{name:14s} {r['params']:>10,} {r['latency_ms']:10.0f} {r['speedup']:7.2f}x {r['val']:6.2f} "
              f"{r['test']:6.2f} {kd}")  # fmt: skip


if __name__ == "__main__":
    main()
