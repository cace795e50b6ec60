"""Wall time of one-shot SparseGPT (50 %) on the offline all-MiniLM-L6-v2 with its calibration split across 2 ranks,
against one process on all the batches; the masks of both compared.

Model: all-MiniLM-L6-v2 (``lightning_compress.models.offline_minilm_path()``) with a 2-label head (seeded: the same in
every process), every Linear pruned to 50 % (``ignore=()``: the head too; 38 weights), the 6 BERT layers one after
another. Calibration: the first ``--batches`` batches of ``--batch-size`` real Rotten Tomatoes training sentences
(``GLUEDataModule("rotten_tomatoes")``, seeded shuffle, seed 0, at most ``--max-length`` tokens, padding left out),
built once in the parent and handed to every process.

Runs, interleaved, ``--repeats`` times each (the order rotates from one repeat to the next):

* ``1 proc x 1 thread``: one process, ``torch.set_num_threads(1)``, all the batches;
* ``1 proc x 2 threads``: the same at 2 threads (the same 2 cores as the 2 ranks);
* ``2 ranks x 1 thread``: 2 processes (``torch.multiprocessing`` spawn, gloo, 1 thread each, started once and
  waiting on a queue while the others run), ``distributed="auto"``: each rank calibrates on half of the batches,
  the layer statistics all-reduced before each layer's solve; the time is the slower rank's, from a barrier.

Each run prunes a fresh copy of the weights. The time of the layers' solves (``_prune_layer``: SparseGPT itself;
with 2 ranks each rank solves the layers of each block dealt to it, by ``in^2 * (out + in)``, and broadcasts them;
the slower rank's sum is shown) is reported beside the total. The 2-rank masks are compared with the 1-thread single
process's (they must be equal: the script exits 1 otherwise); the 2-thread single process's are compared too, for
information (a different thread count may round the float32 GEMMs differently).

Run from the repository root, on a quiet machine (the timings are meaningless while other work runs):
    .venv/bin/python experiments/fsdp2/calibration_time.py            # 5 repeats, 8 batches of 16: ~3 min on 2 cores
    .venv/bin/python experiments/fsdp2/calibration_time.py --repeats 2   # reduced: ~1.5 min
    .venv/bin/python experiments/fsdp2/calibration_time.py --quick    # smoke test: 2 tiny batches, 1 repeat
Prints one line per run and the median ratios; ``--out FILE`` also writes them as JSON (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lightning_compress.core.files import atomic_write_text  # noqa: E402
from lightning_compress.pruning.one_shot import prune as prune_module  # noqa: E402

SINGLE_1, SINGLE_2, RANKS_2 = "1 proc x 1 thread", "1 proc x 2 threads", "2 ranks x 1 thread"


def calibration_batches(count: int, batch_size: int, max_length: int) -> list[dict[str, torch.Tensor]]:
    """The first ``count`` training batches of Rotten Tomatoes sentences (seeded shuffle)."""
    from lightning_compress.data import GLUEDataModule
    from lightning_compress.models import offline_minilm_path

    dm = GLUEDataModule("rotten_tomatoes", tokenizer=offline_minilm_path(), batch_size=batch_size,
                        max_length=max_length, seed=0, max_train_samples=count * batch_size)  # fmt: skip
    dm.setup("fit")
    batches = []
    for batch in dm.train_dataloader():
        batches.append({k: v.clone() for k, v in batch.items()})
        if len(batches) == count:
            break
    return batches


def load_model() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """MiniLM with a seeded 2-label head, in eval mode, and a copy of its weights to restore before each run."""
    from lightning_compress.models import huggingface_classifier, offline_minilm_path

    torch.manual_seed(0)
    model = huggingface_classifier(offline_minilm_path(), num_labels=2).eval()
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


class SolveTimer:
    """Wraps ``prune._prune_layer`` (the per-layer SparseGPT solve) to add up its wall time."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._inner = prune_module._prune_layer
        prune_module._prune_layer = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self._inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def prune_once(model: torch.nn.Module, pristine: dict[str, torch.Tensor], batches: list[Any], timer: SolveTimer,
               barrier: bool = False) -> tuple[float, float, dict[str, torch.Tensor], int]:  # fmt: skip
    """One SparseGPT 50 % run on a fresh copy of the weights: (wall s, solve s, masks, ranks)."""
    model.load_state_dict(pristine)
    timer.seconds = 0.0
    if barrier:
        dist.barrier()
    start = time.perf_counter()
    result = prune_module.one_shot_prune(model, batches, method="sparsegpt", sparsity=0.5,
                                         calibration_batches=len(batches), ignore=())  # fmt: skip
    return time.perf_counter() - start, timer.seconds, result.masks, result.ranks


def worker(rank: int, port: int, batches: list[Any], commands: list[Any], results: Any) -> None:
    """One of the 2 ranks: waits for a command, runs, reports (wall s, solve s[, masks on the first run])."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model, pristine = load_model()
        timer = SolveTimer()
        results.put(("ready", rank, None))
        first = True
        while commands[rank].get() is not None:
            seconds, solve, masks, ranks = prune_once(model, pristine, batches, timer, barrier=True)
            assert ranks == 2, ranks
            results.put((rank, (seconds, solve), masks if first else None))
            first = False
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=8, help="calibration batches (default 8)")
    parser.add_argument("--batch-size", type=int, default=16, help="sentences per batch (default 16)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per sentence at most (default 128)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each setting, interleaved (default 5)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 batches of 4 sentences, 1 repeat")
    parser.add_argument("--out", type=Path, help="also write the runs and ratios here as JSON")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.batch_size, args.max_length, args.repeats = 2, 4, 32, 1
    if args.batches < 2 or args.repeats < 1:
        parser.error("--batches must be >= 2 (one per rank at least) and --repeats >= 1")

    batches = calibration_batches(args.batches, args.batch_size, args.max_length)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    print(f"MiniLM SparseGPT 50 %: {len(batches)} batches of {args.batch_size} Rotten Tomatoes sentences"
          f" ({tokens} tokens), {args.repeats} repeats", flush=True)  # fmt: skip

    ctx = mp.get_context("spawn")
    commands, results = [ctx.SimpleQueue() for _ in range(2)], ctx.SimpleQueue()
    workers = mp.spawn(worker, args=(free_port(), batches, commands, results), nprocs=2, join=False)
    model, pristine = load_model()
    timer = SolveTimer()
    for _ in range(2):
        assert results.get()[0] == "ready"

    runs: dict[str, list[tuple[float, float]]] = {SINGLE_1: [], SINGLE_2: [], RANKS_2: []}
    masks: dict[str, Any] = {}
    order = [SINGLE_1, SINGLE_2, RANKS_2]
    try:
        for repeat in range(args.repeats):
            for setting in order[repeat % 3 :] + order[: repeat % 3]:
                if setting == RANKS_2:
                    for queue in commands:
                        queue.put("run")
                    got = sorted((results.get() for _ in range(2)), key=lambda r: r[0])
                    seconds, solve = max(g[1][0] for g in got), max(g[1][1] for g in got)
                    for rank, _, rank_masks in got:
                        if rank_masks is not None:
                            masks[f"rank {rank}"] = rank_masks
                else:
                    torch.set_num_threads(1 if setting == SINGLE_1 else 2)
                    seconds, solve, run_masks, ranks = prune_once(model, pristine, batches, timer)
                    assert ranks == 1, ranks
                    masks.setdefault(setting, run_masks)
                runs[setting].append((seconds, solve))
                print(f"repeat {repeat}  {setting:20s} {seconds:8.2f} s  (solves {solve:7.2f} s)", flush=True)
    finally:
        for queue in commands:
            queue.put(None)
        workers.join()

    medians = {s: statistics.median(t for t, _ in r) for s, r in runs.items()}
    for s in runs:
        solve = statistics.median(v for _, v in runs[s])
        print(f"median {s:20s} {medians[s]:8.2f} s  (solves {solve:7.2f} s, {solve / medians[s]:.0%})")
    ratios = {f"{s} / {RANKS_2}": medians[s] / medians[RANKS_2] for s in (SINGLE_1, SINGLE_2)}
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")

    reference = masks[SINGLE_1]
    equal = {
        name: sorted(m) == sorted(reference) and all(torch.equal(m[k], reference[k]) for k in reference)
        for name, m in masks.items()
        if name != SINGLE_1
    }
    for name, same in equal.items():
        print(f"masks of {name} {'==' if same else '!='} masks of {SINGLE_1} ({len(reference)} weights)")
    if args.out is not None:
        report = {"args": {k: str(v) for k, v in vars(args).items()}, "tokens": tokens, "runs": runs,
                  "medians": medians, "ratios": ratios, "masks_equal": equal}  # fmt: skip
        atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    ranks_equal = equal["rank 0"] and equal["rank 1"]
    return 0 if ranks_equal else 1


if __name__ == "__main__":
    sys.exit(main())
