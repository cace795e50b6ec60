"""2:4 sparsity vs dense, same epochs: MNIST-5k SmallCNN (several policies and seeds) and MiniLM on Rotten Tomatoes.

MNIST-5k: SmallCNN (207k parameters) through ClassificationModule + MNIST5kDataModule (3,500 / 500 / 1,000), AdamW 1e-3
(weight decay 0.01), batch 64, 12 epochs: the default `lc-train` job. 2:4 on every conv / Linear weight whose reduction
dimension allows it (all but the first conv, 1 x 3 x 3 = 9), from `start_epoch` on, then fine-tuned with the masks held
(fixed), recomputed (dynamic, SR-STE) or ramped in. Test accuracy of the final weights on the 1,000 test digits.

MiniLM: the offline all-MiniLM-L6-v2 fine-tuned on 2,000 Rotten Tomatoes training sentences (seeded subset), AdamW 5e-5,
warm-up 10 % then linear decay, batch 32, max length 128; accuracy of the final weights on the 1,275 validation
sentences.

Run from the repository root (2 CPU cores: MNIST about 1 min per run, MiniLM a few minutes per run):
    .venv/bin/python experiments/nm_sparsity/accuracy.py mnist --seeds 0 1 2
    .venv/bin/python experiments/nm_sparsity/accuracy.py minilm --seeds 0
    .venv/bin/python experiments/nm_sparsity/accuracy.py mnist --quick      # smoke run: 2 epochs, one seed
Results are appended as JSON lines to experiments/nm_sparsity/results.jsonl; the table is printed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch

from lightning_compress.data import GLUEDataModule, MNIST5kDataModule
from lightning_compress.distillation.distillation_module import DistillationModule
from lightning_compress.models import SmallCNN, huggingface_classifier, offline_minilm_path
from lightning_compress.pruning.one_shot.one_shot_pruning import OneShotPruning
from lightning_compress.sparsity.nm_masks import is_nm_sparse
from lightning_compress.sparsity.nm_sparsity import NMSparsity
from lightning_compress.training.classification import ClassificationModule
from lightning_compress.training.lr_schedule import warmup_lr

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"
QUIET = dict(
    accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False
)

# name -> NMSparsity kwargs (None: dense)
MNIST_RUNS: dict[str, Optional[dict[str, Any]]] = {
    "dense": None,
    "fixed, from epoch 2": {"policy": "fixed", "start_epoch": 2},
    "fixed, from epoch 4": {"policy": "fixed", "start_epoch": 4},
    "dynamic (SR-STE, k=10), from epoch 2": {"policy": "dynamic", "start_epoch": 2},
    "dynamic (SR-STE, k=1), from epoch 2": {"policy": "dynamic", "start_epoch": 2, "update_every_n_steps": 1},
    "dynamic (SR-STE, k=10), from epoch 0": {"policy": "dynamic", "start_epoch": 0},
    "fixed + ramp over epochs 2-6": {"policy": "fixed", "start_epoch": 2, "ramp_epochs": 4},
}
MINILM_RUNS: dict[str, Optional[dict[str, Any]]] = {
    "dense": None,
    "fixed, from step 0": {"policy": "fixed", "start_epoch": 0},
    "dynamic (SR-STE, k=10), from step 0": {"policy": "dynamic", "start_epoch": 0},
    "fixed, from epoch 1": {"policy": "fixed", "start_epoch": 1},
    "fixed + ramp over epochs 0-1.5": {"policy": "fixed", "start_epoch": 0, "ramp_epochs": 1.5},
    "dynamic (SR-STE, k=10) + ramp over epochs 0-1.5": {"policy": "dynamic", "start_epoch": 0, "ramp_epochs": 1.5},
    # NVIDIA's ASP recipe: fine-tune dense, then 2:4 and fine-tune again for the same epochs and hyperparameters
    "dense fine-tune, then fixed 2:4 from step 0": {"from_dense": True, "policy": "fixed", "start_epoch": 0},
    "dense fine-tune, then dynamic (SR-STE, k=10) + ramp 0-1.5": {
        "from_dense": True,
        "policy": "dynamic",
        "start_epoch": 0,
        "ramp_epochs": 1.5,
    },
    # one-shot SparseGPT to 2:4 when fit starts (16 calibration batches), then the same 2 epochs with the masks held
    "SparseGPT 2:4 at step 0, then fixed": {"oneshot": {"method": "sparsegpt", "n": 2, "m": 4}},
    # the dense model of the same seed (cached, as for the ASP rows) as a frozen teacher: DistillationModule +
    # NMSparsity
    "dynamic + ramp 0-1.5, distilled from dense (T=2, a=0.5)": {
        "distill": {"temperature": 2.0, "alpha": 0.5},
        "policy": "dynamic",
        "start_epoch": 0,
        "ramp_epochs": 1.5,
    },
    "dense, lr 1e-4": {"lr": 1e-4, "dense": True},  # is the 2:4 rows' learning rate also better for dense?
    "dynamic + ramp 0-1.5, encoder layers only": {
        "policy": "dynamic",
        "start_epoch": 0,
        "ramp_epochs": 1.5,
        "filter_fn": "encoder_linear",
    },
    "dynamic + ramp 0-1.5, encoder layers only, lr 1e-4": {
        "lr": 1e-4,
        "policy": "dynamic",
        "start_epoch": 0,
        "ramp_epochs": 1.5,
        "filter_fn": "encoder_linear",
    },
    "dynamic + ramp 0-1.5, lr 1e-4": {"lr": 1e-4, "policy": "dynamic", "start_epoch": 0, "ramp_epochs": 1.5},
    "dynamic + ramp 0-1.5, lr 2e-4": {"lr": 2e-4, "policy": "dynamic", "start_epoch": 0, "ramp_epochs": 1.5},
    "dense, lr 2e-4": {"lr": 2e-4, "dense": True},
    "dynamic + ramp 0-1.5, lr 1e-4, distilled from dense (T=2, a=0.5)": {
        "lr": 1e-4,
        "distill": {"temperature": 2.0, "alpha": 0.5},
        "policy": "dynamic",
        "start_epoch": 0,
        "ramp_epochs": 1.5,
    },
}
CACHE = HERE / ".cache"  # dense fine-tuned MiniLM weights per (seed, sentences, epochs), for the ASP-recipe runs


def encoder_linear(module: torch.nn.Module, fqn: str) -> bool:
    """The Linear layers of the transformer blocks: the pooler and the classifier stay dense (<1 % of the FLOPs)."""
    return isinstance(module, torch.nn.Linear) and "encoder.layer." in fqn


def masked_layers_are_nm(model: torch.nn.Module, callback: Optional[NMSparsity]) -> Optional[bool]:
    if callback is None or callback.masks is None:
        return None
    return all(is_nm_sparse(p.detach()) for p in callback.masks.params)


def run_mnist(name: str, kwargs: Optional[dict[str, Any]], seed: int, epochs: int) -> dict[str, Any]:
    L.seed_everything(seed, verbose=False)
    module = ClassificationModule(
        SmallCNN(), num_classes=10, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01)
    )
    data = MNIST5kDataModule(batch_size=64)
    callback = NMSparsity(**kwargs, skip_first_conv=True, verbose=0) if kwargs is not None else None
    trainer = L.Trainer(max_epochs=epochs, callbacks=[callback] if callback else [], num_sanity_val_steps=0, **QUIET)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    (result,) = trainer.test(module, datamodule=data, verbose=False)
    return {
        "task": "mnist5k_smallcnn", "run": name, "seed": seed, "epochs": epochs, "acc": float(result["test/acc"]),
        "nm_ok": masked_layers_are_nm(module, callback), "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip


def run_minilm(
    name: str, kwargs: Optional[dict[str, Any]], seed: int, epochs: int, train_samples: int
) -> dict[str, Any]:
    kwargs = dict(kwargs) if kwargs is not None else None
    from_dense = bool(kwargs.pop("from_dense", False)) if kwargs is not None else False
    distill = kwargs.pop("distill", None) if kwargs is not None else None
    lr = kwargs.pop("lr", 5e-5) if kwargs is not None else 5e-5
    if kwargs is not None and kwargs.pop("dense", False):
        kwargs = None  # only the learning rate differs from "dense"
    if kwargs is not None and kwargs.get("filter_fn") == "encoder_linear":
        kwargs["filter_fn"] = encoder_linear
    dense_file = CACHE / f"minilm_dense_seed{seed}_{train_samples}_{epochs}ep.pt"
    if (from_dense or distill) and not dense_file.exists():
        run_minilm("dense", None, seed, epochs, train_samples)
    L.seed_everything(seed, verbose=False)
    path = offline_minilm_path()
    model = huggingface_classifier(path, num_labels=2)
    if from_dense:
        model.load_state_dict(torch.load(dense_file, weights_only=True))
    module = ClassificationModule(
        model,
        num_classes=2,
        optimizer=functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.01),
        scheduler=functools.partial(warmup_lr, warmup=0.1, decay="linear"),
        scheduler_interval="step",
    )
    trained: L.LightningModule = module
    if distill is not None:
        teacher = huggingface_classifier(path, num_labels=2)
        teacher.load_state_dict(torch.load(dense_file, weights_only=True))
        trained = DistillationModule(module, teacher, **distill)
    data = GLUEDataModule(
        task="rotten_tomatoes", tokenizer=path, batch_size=32, max_train_samples=train_samples, seed=seed
    )
    # every MiniLM row here was trained without dropout: huggingface_classifier returned from_pretrained's eval-mode
    # model until 2026-11-30 and Lightning keeps that mode; later runs keep that condition so the rows compare
    model.eval()
    if kwargs is not None and "oneshot" in kwargs:
        callback: Any = OneShotPruning(**kwargs["oneshot"], calibration_batches=16, verbose=0)
    else:
        callback = NMSparsity(**kwargs, verbose=0) if kwargs is not None else None
    trainer = L.Trainer(max_epochs=epochs, callbacks=[callback] if callback else [], limit_val_batches=0, **QUIET)
    start = time.perf_counter()
    trainer.fit(trained, datamodule=data)
    if name == "dense":  # the teacher / starting point of the distilled and ASP rows
        CACHE.mkdir(exist_ok=True)
        torch.save(model.state_dict(), dense_file)
    trainer_eval = L.Trainer(**QUIET)
    (result,) = trainer_eval.validate(module, datamodule=data, verbose=False)
    return {
        "task": "rotten_tomatoes_minilm", "run": name, "seed": seed, "epochs": epochs, "train_samples": train_samples,
        "acc": float(result["val/acc"]), "nm_ok": masked_layers_are_nm(module, callback),
        "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    """Per task: mean accuracy over seeds, and the mean paired difference to dense run with the same seeds."""

    def setting(r: dict[str, Any]) -> str:
        data = f", {r['train_samples']} train sentences" if "train_samples" in r else ""
        return f"{r['task']}, {r['epochs']} epochs{data}"

    lines = []
    for task in sorted({setting(r) for r in rows}):
        task_rows = [r for r in rows if setting(r) == task]
        dense = {r["seed"]: 100 * r["acc"] for r in task_rows if r["run"] == "dense"}
        lines.append(f"\n{task}")
        lines.append(
            f"{'run':48s} {'seeds':>7s} {'acc %':>7s} {'min-max':>13s} {'vs dense':>9s} {'ratio':>7s} {'2:4 ok':>6s}"
        )
        for name in dict.fromkeys(r["run"] for r in task_rows):
            rs = [r for r in task_rows if r["run"] == name]
            accs = [100 * r["acc"] for r in rs]
            paired = [100 * r["acc"] - dense[r["seed"]] for r in rs if r["seed"] in dense]
            ratio = [100 * r["acc"] / dense[r["seed"]] for r in rs if r["seed"] in dense]
            ok = {r["nm_ok"] for r in rs}
            seeds = ",".join(str(r["seed"]) for r in rs)
            lines.append(
                f"{name:48s} {seeds:>7s} {statistics.mean(accs):7.2f} {min(accs):6.2f}-{max(accs):6.2f}"
                f" {statistics.mean(paired) if paired else float('nan'):+9.2f}"
                f" {statistics.mean(ratio) if ratio else float('nan'):7.4f} {'-' if ok == {None} else str(all(ok)):>6s}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["mnist", "minilm", "table"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--runs", nargs="+", default=None, help="names of runs to do (default: all of the task)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 12 (mnist), 2 (minilm)")
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="2 epochs, first seed, 256 MiniLM sentences")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")

    if args.task != "table":
        runs = MNIST_RUNS if args.task == "mnist" else MINILM_RUNS
        names = args.runs or list(runs)
        seeds = args.seeds[:1] if args.quick else args.seeds
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        for seed in seeds:
            for name in names:
                if args.task == "mnist":
                    row = run_mnist(name, runs[name], seed, 2 if args.quick else args.epochs or 12)
                else:
                    row = run_minilm(
                        name, runs[name], seed, 1 if args.quick else args.epochs or 2,
                        256 if args.quick else args.train_samples,
                    )  # fmt: skip
                row.update(date=stamp, command=" ".join([Path(sys.executable).name, *sys.argv]), quick=args.quick)
                print(json.dumps(row), flush=True)
                if not args.quick:
                    with RESULTS.open("a") as f:
                        f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()] if RESULTS.exists() else []
    print(table(rows))


if __name__ == "__main__":
    main()
