"""The planner's INT8 choice checked by hand: ``lc-bench``'s machinery (``benchmark_model``: fp32 eager, INT8, CSR
90 %, each interleaved with fp32 eager) on the *same* batch the planner times (the first ``--batch-size`` validation
images of the run), and on the random-normal batch ``lc-bench --input-shape`` makes, side by side.

Why both: the INT8 program is the same in ``lc-bench`` and ``lc-compress`` (``bench.model_benchmark.int8_model``,
tests/planner/test_int8_path.py), but fp32 eager is not input-blind: PyTorch's eager CPU max-pool branches on the
values, and random inputs make those branches unpredictable, so fp32 eager is slower on ``torch.randn`` than on
MNIST images and the INT8 ratio looks better on random inputs than on the data the model serves.

The ratio to compare with the planner's ``x fp32`` column is ``1 / speedup`` (the INT8 median against the fp32 medians
taken at the same moments), not the INT8 latency over the fp32 row's (taken earlier, alone).

Usage (a quiet machine; about 1 minute):
    .venv/bin/python experiments/planner/by_hand.py outputs/compress_mnist/<time> --out outputs/planner/by_hand.json
    .venv/bin/python experiments/planner/by_hand.py outputs/planner/minilm --out outputs/planner/by_hand_minilm.json

Exit status 0, or 3 when a timing was refused as untrusted (busy machine / noisy repeats: the table says why).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import torch
from hydra.utils import instantiate

import lightning_compress.cli.train  # noqa: F401 -- registers ${lc_offline_minilm:} for MiniLM run configs
from lightning_compress.bench.machine import describe_machine, machine_info
from lightning_compress.bench.model_benchmark import benchmark_model
from lightning_compress.bench.results import format_table
from lightning_compress.cli.model_spec import load_model, run_config
from lightning_compress.core.files import atomic_write_text
from lightning_compress.planner.token_batches import same_length
from lightning_compress.planner.walk import _example_inputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="an lc-train run folder (its data config names the validation data)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()

    model = load_model(args.run).eval()
    data = instantiate(run_config(args.run).data)
    data.setup("fit")
    real = _example_inputs(same_length(list(data.val_dataloader())), args.batch_size)  # the planner's timing batch
    g = torch.Generator().manual_seed(0)
    if isinstance(real, dict):  # token batches: random ids (lc-bench --tokens), the real attention mask
        shape = tuple(real["input_ids"].shape)
        random = {**real, "input_ids": torch.randint(0, model.config.vocab_size, shape, generator=g)}
    else:
        shape = tuple(real.shape)
        random = torch.randn(*shape, generator=g)  # lc-bench --input-shape's batch
    print("\n".join(describe_machine(machine_info("cpu"))), flush=True)
    out, untrusted = {}, False
    batches = (("validation rows (the planner's batch)", real), ("random inputs (lc-bench's batch)", random))
    for name, inputs in batches:
        rows = benchmark_model(model, inputs, paths=("fp32 eager", "int8", "csr"), sparsities=(0.9,),
                               repeats=args.repeats, log=lambda line: print(line, file=sys.stderr))  # fmt: skip
        print(f"\n## inputs: {name}, shape {shape}\n{format_table(rows)}")
        int8 = next(r for r in rows if r.family == "int8")
        if int8.available and int8.speedup:
            print(f"INT8 {1 / int8.speedup:.3f}x fp32 eager (interleaved; the planner's 'x fp32')"
                  f" - {int8.latency_ms / rows[0].latency_ms:.3f}x the fp32 row timed alone")  # fmt: skip
        untrusted = untrusted or any(r.untrusted for r in rows)
        out[name] = [dataclasses.asdict(r) for r in rows]
    if args.out:
        atomic_write_text(args.out, json.dumps(out, indent=1, default=str))
    return 3 if untrusted else 0


if __name__ == "__main__":
    raise SystemExit(main())
