"""What GradualMagnitudePruning and Lightning's ModelPruning add to a training step, counted with torch.profiler:
operator calls (and the top-level ones, which Python or Lightning dispatch), kernels (operators that call no other
operator and compute: views and metadata left out), operators that allocate (count and bytes: each operator's own net
allocation) and the bytes of the kernels' tensor operands (inputs, in-place and ``out=`` tensors), per step. These
are counts of work, independent of the machine's load; no timings.

The model and configuration are those of ``benchmark.py --parts timing`` (the 512-2048-2048-10 MLP at batch 64, SGD
with momentum, GMP to 50 % in epoch 0 with an update every 10 steps, ModelPruning ``l1_unstructured`` 50 % global at
each epoch end). Profiled, each in its own fit: plain steps, GMP steps between updates, GMP update steps (the step
whose ``on_train_batch_start`` changes the masks), the step after an update, ModelPruning steps, and ModelPruning's
epoch-end pruning (its ``on_train_epoch_end``).

    .venv/bin/python experiments/gmp_vs_modelpruning/profile_ops.py            # 1-3 min on 2 cores
    .venv/bin/python experiments/gmp_vs_modelpruning/profile_ops.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelPruning
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark import MLP, QUIET  # noqa: E402

from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning  # noqa: E402

BATCHES = 24  # per epoch; 2 epochs
UPDATE_EVERY = 10


_ITEMSIZE = {
    "bool": 1,
    "unsigned char": 1,
    "signed char": 1,
    "short": 2,
    "c10::BFloat16": 2,
    "c10::Half": 2,
    "int": 4,
    "float": 4,
    "long int": 8,
    "double": 8,
}


def _bytes(shape: Any, dtype: Any) -> int:
    """Bytes of one tensor operand (0 for scalars and lists)."""
    if not isinstance(shape, (list, tuple)) or not shape or not all(isinstance(d, int) for d in shape):
        return 0
    n = _ITEMSIZE.get(dtype, 4)
    for d in shape:
        n *= d
    return n


# operators that only make views or metadata: no kernel runs, nothing is read
_VIEWS = {
    "aten::view",
    "aten::as_strided",
    "aten::slice",
    "aten::narrow",
    "aten::reshape",
    "aten::_reshape_alias",
    "aten::t",
    "aten::transpose",
    "aten::permute",
    "aten::expand",
    "aten::select",
    "aten::unsqueeze",
    "aten::squeeze",
    "aten::alias",
    "aten::detach",
    "aten::lift_fresh",
    "aten::empty",
    "aten::empty_strided",
    "aten::resolve_conj",
    "aten::resolve_neg",
    "aten::as_strided_",
    "aten::_has_compatible_shallow_copy_type",
    "aten::result_type",
    "aten::to",
    "aten::_unsafe_view",
    "aten::numpy_T",
    "aten::contiguous",
}


def summarize(prof: Any) -> dict[str, Any]:
    """Operator calls, kernels, allocating operators (with their net bytes) and kernel operand bytes of one profile
    (see the module docstring)."""
    events = list(prof.events())
    ops = [e for e in events if e.name.startswith("aten::")]
    leaves = [e for e in ops if not any(c.name.startswith("aten::") for c in e.cpu_children)]
    kernels = [e for e in leaves if e.name not in _VIEWS]
    allocating = [e for e in events if e.self_cpu_memory_usage > 0]
    operands = sum(sum(_bytes(s, d) for s, d in zip(e.input_shapes or [], e.input_dtypes or [])) for e in kernels)
    top = [e for e in ops if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    return {
        "ops": len(ops),
        "top_level_ops": len(top),
        "kernels": len(kernels),
        "allocations": len(allocating),
        "allocated_bytes": sum(e.self_cpu_memory_usage for e in allocating),
        "kernel_operand_bytes": operands,
        "kernel_names": Counter(e.name for e in kernels),
    }


class Profiled(Callback):
    """Profiles the batches ``steps`` (from ``on_train_batch_start``, first in the callback list, to
    ``on_train_batch_end``), or the epoch ends ``epoch_ends`` (``on_train_epoch_end``, first and last in the list)."""

    def __init__(self, steps: tuple[int, ...] = (), epoch_ends: tuple[int, ...] = ()) -> None:
        self.steps, self.epoch_ends = steps, epoch_ends
        self.results: list[dict[str, Any]] = []
        self._prof: Optional[Any] = None

    def _start(self) -> None:
        self._prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True, profile_memory=True)
        self._prof.__enter__()

    def _stop(self) -> None:
        assert self._prof is not None
        self._prof.__exit__(None, None, None)
        self.results.append(summarize(self._prof))
        self._prof = None

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step in self.steps:
            self._start()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self._prof is not None:
            self._stop()

    def on_train_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.current_epoch in self.epoch_ends:
            if self._prof is None:
                self._start()
            else:
                self._stop()


def run(method: str, steps: tuple[int, ...] = (), epoch_ends: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64 * BATCHES, 512, generator=g), torch.randint(0, 10, (64 * BATCHES,), generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    first = Profiled(steps, epoch_ends)
    callbacks: list[Callback] = [first]
    if method == "gmp":
        callbacks.append(GradualMagnitudePruning(0.5, end_epoch=1, update_every_n_steps=UPDATE_EVERY, verbose=0))
    elif method == "modelpruning":
        callbacks.append(ModelPruning("l1_unstructured", amount=0.5, use_global_unstructured=True, verbose=0))
    if epoch_ends:
        callbacks.append(first)  # its on_train_epoch_end again, after ModelPruning's
    last = max(max(steps) + 1 if steps else (max(epoch_ends) + 1) * BATCHES + 1, BATCHES + 1)  # stop once profiled
    L.Trainer(max_epochs=2, max_steps=last, callbacks=callbacks, **QUIET).fit(MLP(), data)
    return first.results


def mean(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("ops", "top_level_ops", "kernels", "allocations", "allocated_bytes", "kernel_operand_bytes")
    out: dict[str, Any] = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    names: Counter = Counter()
    for r in rows:
        names.update(r["kernel_names"])
    out["kernel_names"] = {k: v / len(rows) for k, v in names.most_common()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, help="also write the counts to this file")
    parser.add_argument("--top", type=int, default=12, help="kernels listed per case beyond plain's")
    args = parser.parse_args()
    torch.set_num_threads(2)
    steady = (BATCHES + 1, BATCHES + 2, BATCHES + 3)  # epoch 1, after GMP's schedule
    updates = (UPDATE_EVERY, 2 * UPDATE_EVERY)
    after_updates = (UPDATE_EVERY + 1, 2 * UPDATE_EVERY + 1)
    cases = {
        "plain step": mean(run("plain", steady)),
        "GMP step (no update)": mean(run("gmp", steady)),
        "GMP update step": mean(run("gmp", updates)),
        "GMP step after an update": mean(run("gmp", after_updates)),
        "ModelPruning step": mean(run("modelpruning", steady)),
        "ModelPruning epoch-end pruning": mean(run("modelpruning", epoch_ends=(0,))),
    }
    base = cases["plain step"]
    header = "operator calls | top-level calls | kernels | allocating ops | allocated MB | kernel operand MB"
    print(f"\n| per step | {header} |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, c in cases.items():
        extra = "" if name == "plain step" or "epoch-end" in name else " (+ over plain)"
        sub = base if extra else {k: 0 for k in base}
        print(
            f"| {name}{extra} | {c['ops'] - sub['ops']:+.0f} | {c['top_level_ops'] - sub['top_level_ops']:+.0f} |"
            f" {c['kernels'] - sub['kernels']:+.0f} |"
            f" {c['allocations'] - sub['allocations']:+.0f} |"
            f" {(c['allocated_bytes'] - sub['allocated_bytes']) / 1e6:+.1f} |"
            f" {(c['kernel_operand_bytes'] - sub['kernel_operand_bytes']) / 1e6:+.1f} |"
        )
    for name, c in cases.items():
        if name == "plain step":
            continue
        diff = {k: v - base["kernel_names"].get(k, 0) for k, v in c["kernel_names"].items()}
        if "epoch-end" in name:
            diff = dict(c["kernel_names"])
        shown = sorted(((k, v) for k, v in diff.items() if abs(v) > 0.01), key=lambda kv: -abs(kv[1]))[: args.top]
        print(f"{name}: kernels beyond plain: " + ", ".join(f"{k} {v:+g}" for k, v in shown))
    if args.json:
        Path(args.json).write_text(json.dumps(cases, indent=1) + "\n")


if __name__ == "__main__":
    main()
