"""Helpers of the export tests: run a snippet in a fresh interpreter that never imports lightning_compress (the other
runtime loading our artifact on its own), and the small models the tests export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

NO_LIBRARY = (
    "assert not any(m.split('.')[0] == 'lightning_compress' for m in sys.modules), 'lightning_compress imported'"
)


def needs(*modules: str) -> pytest.MarkDecorator:
    """Skip (with the reason) where an optional package of the export extra is not installed."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(
        bool(missing), reason=f"needs {', '.join(missing)} (pip install 'lightning-compress[export]')"
    )


def run_elsewhere(code: str, folder: Path, **tensors: Any) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (cwd ``folder``, ``tensors`` saved as ``inputs.pt``), which must end with
    ``result = {...}`` of tensors / numbers; asserts it never imported lightning_compress and returns ``result``."""
    torch.save(tensors, folder / "inputs.pt")
    script = (
        "import sys, torch\ninputs = torch.load('inputs.pt', weights_only=True)\n"
        + textwrap.dedent(code)
        + f"\n{NO_LIBRARY}\ntorch.save(result, 'result.pt')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True, text=True, timeout=600,
                          env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(folder / "result.pt", weights_only=True)


def config_json(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def tiny_llama(seed: int = 0, tie: bool = True) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie)  # fmt: skip
    return LlamaForCausalLM(config).eval()


def tiny_bert(seed: int = 0) -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, num_labels=2)  # fmt: skip
    return BertForSequenceClassification(config).eval()


def token_batches(n: int = 4, rows: int = 4, length: int = 12, vocab: int = 200, seed: int = 1) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (rows, length), generator=g)
        mask = torch.ones_like(ids)
        mask[: rows // 2, length - 3 :] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out
