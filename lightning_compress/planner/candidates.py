"""A candidate of the walk and the file it is measured as: the model a step made, its kind, and how it is written to
(and read back from) the planner's run folder, so that its file size is what a user would ship and a resumed run can
export a candidate made before the crash.

========  ===========================================  ========================================
kind      file                                          read back with
========  ===========================================  ========================================
float     ``model.safetensors`` (the state dict)        the original architecture + the weights
int8      ``model.pt2`` (``save_quantized``)            ``load_quantized``
pruned    a ``save_pruned`` folder                      ``load_pruned``
sparse    ``model.lc.safetensors`` (``save_compressed``  the architecture + ``load_compressed``
          bitmask encoding)
int4      ``model.safetensors`` (``save_weight_only``)  the architecture in bf16 + ``load_weight_only``
========  ===========================================  ========================================

Example:
    >>> candidate = Candidate("ptq_int8", "int8", int8_model, "PTQ INT8, 16 calibration batches")  # doctest: +SKIP
    >>> size = candidate.save(run_dir / "candidates" / "ptq_int8", example_inputs)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from torch import nn

from lightning_compress.core.batches import ExampleInputs
from lightning_compress.core.files import atomic_path

__all__ = ["KINDS", "Candidate", "artifact_size", "load_artifact"]

KINDS = ("float", "int8", "pruned", "sparse", "int4")
_FILES = {"float": "model.safetensors", "int8": "model.pt2", "pruned": "model", "sparse": "model.lc.safetensors",
          "int4": "model.safetensors"}  # fmt: skip


@dataclass
class Candidate:
    """One model to measure.

    Attributes:
        name: Its row in the table (``"ptq_int8"``, ``"prune_distill+int8"``, ...).
        kind: One of :data:`KINDS` (how it is written).
        model: The model (runs on the measurer's device).
        note: What was done, in a few words (layers kept in float, epochs of fine-tune, ...).
        details: Numbers the step adds to the state file (JSON-serialisable).
        runtime: The model to measure when it is not ``model`` itself (sparse layers, a bf16 2:4 model); ``model``
            is what is written.
    """

    name: str
    kind: str
    model: nn.Module
    note: str = ""
    details: Optional[dict[str, Any]] = None
    runtime: Optional[nn.Module] = None

    def save(self, folder: Path, example_inputs: ExampleInputs) -> Path:
        """Write the model into ``folder`` (atomically) and return the file or folder written."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / _FILES[self.kind]
        if self.kind == "int8":
            from lightning_compress.quantization.serialization import save_quantized

            save_quantized(self.model, path, example_inputs)
        elif self.kind == "pruned":
            from lightning_compress.pruning.structured.serialization import save_pruned

            save_pruned(self.model, path)
        elif self.kind == "sparse":
            from lightning_compress.export.compressed_format import save_compressed

            save_compressed(self.model, path)
        elif self.kind == "int4":
            from lightning_compress.quantization.weight_only.weight_only_file import save_weight_only

            save_weight_only(self.model, path)
        else:
            from safetensors.torch import save_file

            state, seen = {}, set()
            for k, v in self.model.state_dict().items():
                key = (v.data_ptr(), v.dtype, tuple(v.shape)) if v.numel() else None
                if key is not None and key in seen:  # a tied tensor (an output head tied to the embedding): once
                    continue
                seen.add(key)
                state[k] = v.detach().contiguous().cpu()
            with atomic_path(path) as tmp:
                save_file(state, str(tmp))
        return path


def artifact_size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def load_artifact(kind: str, path: Path, original: nn.Module) -> nn.Module:
    """The model a :meth:`Candidate.save` wrote (for a candidate made before a resume).

    Raises:
        ValueError: For an unknown kind.
    """
    if kind == "int8":
        from lightning_compress.quantization.serialization import load_quantized

        return load_quantized(path, compile=False)
    if kind == "pruned":
        from lightning_compress.pruning.structured.serialization import load_pruned

        return load_pruned(path)
    if kind in ("float", "sparse"):
        from lightning_compress.core.checkpoints import load_network_weights, read_state_dict

        if kind == "sparse":
            from lightning_compress.export.compressed_format import load_compressed

            state = load_compressed(path)
        else:
            state = read_state_dict(path, "a planner candidate")
        return load_network_weights(copy.deepcopy(original), state, what=f"the planner candidate {path}")
    if kind == "int4":
        import torch

        from lightning_compress.quantization.weight_only import load_weight_only

        return load_weight_only(copy.deepcopy(original).to(torch.bfloat16), path)
    raise ValueError(f"a {kind!r} candidate is not read back; its file is {path}")
