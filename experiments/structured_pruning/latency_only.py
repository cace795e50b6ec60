"""CPU latency of the structured-pruning variants of minilm.py without fine-tuning anything: the offline MiniLM with a
fresh 2-label head is pruned (4 calibration batches) and timed (batch 32, sequence 128, 2 threads, interleaved medians).
Shapes, and so speed, are those of the fine-tuned variants.

    .venv/bin/python experiments/structured_pruning/latency_only.py      # a few minutes on an idle 2-core machine
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minilm as E  # noqa: E402

from lightning_compress.models import huggingface_classifier, offline_minilm_path  # noqa: E402
from lightning_compress.pruning.structured.report import num_parameters  # noqa: E402

torch.set_num_threads(2)
dm = E.data(2000)
base = huggingface_classifier(offline_minilm_path(), num_labels=2).eval()
batches = E.calibration(dm, 4)
models = {"dense": base}
for name, (heads, ffn) in E.VARIANTS.items():
    models[name], _ = E.prune(base, heads, ffn, batches)
latency = E.interleaved_latency(models, 9)
for name, seconds in latency.items():
    print(
        json.dumps(
            {
                "model": name,
                "params": num_parameters(models[name]),
                "latency_ms": round(1000 * seconds),
                "speedup": round(latency["dense"] / seconds, 2),
            }
        )
    )
