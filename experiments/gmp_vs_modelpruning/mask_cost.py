"""What keeping pruned weights at zero costs per step, outside Lightning: the floor under the benchmark's GMP ratio.

The MLP of ``benchmark.py`` (512-2048-2048-10, batch 64, SGD momentum 0.9, 5.26 M prunable weights at 50 %), in a
bare PyTorch loop (no Trainer, no callbacks), one model, the variants interleaved in rounds of 10 steps:

* ``plain``: forward, backward, ``opt.step()``;
* ``masked``: the same, with ``ParameterMasks.apply_to_grads()`` between backward and the step (what the callbacks do
  in ``on_before_optimizer_step``; the post-step re-zeroing is provably redundant for SGD and is skipped), with each
  CPU chunk size of ``--chunks`` (the uint8 mask is cast to float chunk by chunk into a scratch buffer, then
  multiplied in: fewer, larger chunks mean fewer thread-pool wake-ups, more scratch memory).

Masking each gradient inside backward instead (a ``register_post_accumulate_grad_hook`` per weight, while the gradient
is fresh in cache) was tried on 2026-12-01 and measured no cheaper here (1.074x vs 1.060x, 1.146x vs 1.132x in two
interleaved runs), so the callbacks keep the one pass before the step.

And one mask update as GMP does it every ``update_every_n_steps`` (``prune_by_magnitude_`` over all 5.26 M weights,
then ``apply_to_weights``, which also clears the pruned momentum), timed alone. It prints the ratios of the median
round, and the mean-step ratio these imply for the benchmark's schedule (180 steps, 6 updates).

Run on a quiet machine (``uptime`` first), from the repository root (about 40 s):
    .venv/bin/python experiments/gmp_vs_modelpruning/mask_cost.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import lightning_compress.core.masks as masks_module
from lightning_compress.bench import machine_info
from lightning_compress.core.masks import ParameterMasks
from lightning_compress.pruning.magnitude import prune_by_magnitude_

default_chunk = masks_module._CHUNK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunks", default="19,21", help="log2 of the CPU chunk sizes to compare (elements)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    chunks = [1 << int(c) for c in args.chunks.split(",")]

    net = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    masks = ParameterMasks({n: p for n, p in net.named_parameters() if n.endswith("weight")})
    masks.attach([opt])
    prune_by_magnitude_(masks, 0.5)
    masks.apply_to_weights()
    x, y = torch.randn(64, 512), torch.randint(0, 10, (64,))
    variants: dict[str, int] = {"plain": 0, **{f"masked, chunk 2^{c.bit_length() - 1}": c for c in chunks}}

    def step(chunk: int) -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        if chunk:  # one model for every variant: the same memory, only the masking differs
            if masks_module._CHUNK != chunk:
                masks_module._CHUNK = chunk
                masks._scratch.clear()
            masks.apply_to_grads()
        opt.step()

    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            for _ in range(2):
                step(variants[name])
            start = time.perf_counter()
            for _ in range(10):
                step(variants[name])
            times[name].append((time.perf_counter() - start) / 10 * 1e3)
    masks_module._CHUNK = default_chunk
    masks._scratch.clear()
    plain = statistics.median(times["plain"])

    update_ms = []
    for i in range(12):  # 50 % -> 62 %: each update prunes new weights, as the schedule's do
        start = time.perf_counter()
        prune_by_magnitude_(masks, 0.5 + 0.01 * (i + 1))
        masks.apply_to_weights()
        update_ms.append((time.perf_counter() - start) * 1e3)
    update = statistics.median(update_ms[2:])

    print(machine_info())
    print(f"MLP 512-2048-2048-10, batch 64, SGD momentum, 50 % of 5.26 M weights pruned, {args.rounds} rounds"
          f" (library chunk 2^{default_chunk.bit_length() - 1})")  # fmt: skip
    for name in variants:
        med = statistics.median(times[name])
        implied = (180 * med + 6 * update) / (180 * plain)
        extra = f"  -> with 6 updates in 180 steps: {implied:.3f}x" if name != "plain" else ""
        print(f"  {name:22s} step {med:7.3f} ms  {med / plain:.3f}x plain{extra}")
    print(f"  one mask update (select + re-zero weights and momentum): {update:.2f} ms = {update / plain:.2f} steps")


if __name__ == "__main__":
    main()
