"""One-shot pruning of a fine-tuned MiniLM on Rotten Tomatoes, no fine-tune afterwards: magnitude, Wanda and SparseGPT
at 50 % and at 2:4; accuracy and run time of each.

Dense model: the offline all-MiniLM-L6-v2 (lightning_compress.models.offline_minilm_path()) fine-tuned on 2,000
Rotten Tomatoes training sentences (a seeded subset, seed 0) for 2 epochs: AdamW 5e-5, weight decay 0.01, 10 % warm-up
then linear decay, batch 32, max length 128 (the setting of experiments/nm_sparsity/accuracy.py). Saved once with
save_pretrained under experiments/one_shot_pruning/.cache/minilm_rt_<samples>_e<epochs>/ and reused.

Pruning: lightning_compress.pruning.one_shot.prune.one_shot_prune on a fresh copy of the dense model, every Linear
weight (36 in the encoder, the pooler and the 384 -> 2 classifier; --skip-classifier leaves the classifier dense), each
layer to exactly 50 % or to 2:4. Calibration: the first --calibration-batches batches (32 sentences each) of the
shuffled training loader of the same 2,000 sentences (padding tokens left out); the 6 BERT layers are processed one
after another. Time: the wall time and the CPU time (all threads) of one_shot_prune, calibration forward passes
included, torch.set_num_threads(2).
Evaluation: accuracy on the data module's validation and test splits (1,275 sentences each).

Run from the repository root:
    .venv/bin/python experiments/one_shot_pruning/minilm.py                 # ~10 min on 2 cores (fine-tune once)
    .venv/bin/python experiments/one_shot_pruning/minilm.py --methods sparsegpt --patterns 50%
    .venv/bin/python experiments/one_shot_pruning/minilm.py table
Results are appended to experiments/one_shot_pruning/results.jsonl (one line per run, with its command).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightning_compress.data import GLUEDataModule
from lightning_compress.models import huggingface_classifier, offline_minilm_path
from lightning_compress.pruning.one_shot.prune import one_shot_prune
from lightning_compress.sparsity.nm_masks import is_nm_sparse
from lightning_compress.training.classification import ClassificationModule
from lightning_compress.training.lr_schedule import warmup_lr

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results.jsonl"
QUIET: dict[str, Any] = dict(
    accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    num_sanity_val_steps=0,
)  # fmt: skip
PATTERNS = {"50%": {"sparsity": 0.5}, "2:4": {"n": 2, "m": 4}}


def data(samples: int) -> GLUEDataModule:
    dm = GLUEDataModule("rotten_tomatoes", tokenizer=offline_minilm_path(), batch_size=32, seed=0,
                        max_train_samples=samples)  # fmt: skip
    dm.setup("fit")
    return dm


def dense_model(samples: int, epochs: int) -> Path:
    """The fine-tuned dense model's folder (fine-tuned and saved on the first call)."""
    folder = CACHE / f"minilm_rt_{samples}_e{epochs}"
    if not (folder / "config.json").is_file():
        L.seed_everything(0)
        module = ClassificationModule(
            huggingface_classifier(offline_minilm_path(), num_labels=2), num_classes=2,
            optimizer=functools.partial(torch.optim.AdamW, lr=5e-5, weight_decay=0.01),
            scheduler=functools.partial(warmup_lr, warmup=0.1, decay="linear"), scheduler_interval="step",
        )  # fmt: skip
        start = time.perf_counter()
        L.Trainer(max_epochs=epochs, **QUIET).fit(module, data(samples).train_dataloader())
        print(f"dense model fine-tuned on {samples} sentences, {epochs} epochs, in {time.perf_counter() - start:.0f} s")
        module.model.save_pretrained(folder)
    return folder


@torch.inference_mode()
def accuracy(model: torch.nn.Module, loader: Any) -> float:
    model.eval()
    right = total = 0
    for batch in loader:
        labels = batch.pop("labels")
        right += int((model(**batch).logits.argmax(-1) == labels).sum())
        total += labels.numel()
    return 100 * right / total


def run(folder: Path, dm: GLUEDataModule, method: str, pattern: str, args: argparse.Namespace) -> dict[str, Any]:
    model = huggingface_classifier(folder, num_labels=2)
    row: dict[str, Any] = {"method": method, "pattern": pattern}
    if method != "dense":
        cpu = time.process_time()
        result = one_shot_prune(
            model, dm.train_dataloader(), method=method, calibration_batches=args.calibration_batches,
            skip_classifier=args.skip_classifier, **PATTERNS[pattern],
        )  # fmt: skip
        weights = [model.get_parameter(name) for name in result.masks]
        zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        row.update(seconds=round(result.seconds, 1), cpu_seconds=round(time.process_time() - cpu, 1),
                   layers=len(result.masks), sparsity=round(zeros, 4),
                   skipped=result.skipped, blocks=result.blocks)  # fmt: skip
        if pattern == "2:4":
            row["nm_ok"] = all(is_nm_sparse(w, 2, 4) for w in weights)
    row.update(val=round(accuracy(model, dm.val_dataloader()), 2), test=round(accuracy(model, dm.test_dataloader()), 2))
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'method':10s} {'pattern':8s} {'calib':>5s} {'val %':>6s} {'test %':>7s} {'vs dense (val/test)':>20s}"
             f" {'wall s':>7s} {'cpu s':>6s} {'zeros':>6s}"]  # fmt: skip
    dense = next((r for r in reversed(rows) if r["method"] == "dense"), None)
    for r in rows:
        diff = f"{r['val'] - dense['val']:+.2f} / {r['test'] - dense['test']:+.2f}" if dense else "-"
        calib = str(r.get("calibration_batches", "-")) if r["method"] not in ("dense", "magnitude") else "-"
        lines.append(
            f"{r['method']:10s} {r['pattern']:8s} {calib:>5s} {r['val']:6.2f} {r['test']:7.2f} {diff:>20s}"
            f" {r.get('seconds', '-'):>7} {r.get('cpu_seconds', '-'):>6} {r.get('sparsity', '-'):>6}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", nargs="?", default="run", choices=["run", "table"])
    parser.add_argument("--methods", nargs="+", default=["dense", "magnitude", "wanda", "sparsegpt"])
    parser.add_argument("--patterns", nargs="+", default=list(PATTERNS), choices=list(PATTERNS))
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--skip-classifier", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")

    if args.task == "run":
        folder = dense_model(args.train_samples, args.epochs)
        dm = data(args.train_samples)
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        for method in args.methods:
            for pattern in ["-"] if method == "dense" else args.patterns:
                row = run(folder, dm, method, pattern, args)
                row.update(train_samples=args.train_samples, epochs=args.epochs, skip_classifier=args.skip_classifier,
                           calibration_batches=args.calibration_batches, date=stamp,
                           command=" ".join([Path(sys.executable).name, *sys.argv]))  # fmt: skip
                print(json.dumps(row), flush=True)
                with RESULTS.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()] if RESULTS.exists() else []
    print(table(rows))


if __name__ == "__main__":
    main()
