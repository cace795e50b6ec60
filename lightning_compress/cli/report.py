"""``lc-report``: what a checkpoint or model holds: per-layer sparsity, 2:4 compliance, quantization and the bytes of
each storage form; optionally the weights written in the compressed format.

Example:
    lc-report outputs/train/<time>/checkpoints/last.ckpt --save-compressed model.lcz --int8
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from lightning_compress.analysis.report import compression_report
from lightning_compress.cli.model_spec import load_model
from lightning_compress.export.compressed_format import FORMAT, load_compressed, save_compressed

__all__ = ["load_for_report", "main"]


def load_for_report(target: str, checkpoint: Optional[str] = None) -> Union[nn.Module, Mapping[str, Any]]:
    """What :func:`compression_report` should read for a command-line target.

    ``target`` is a file (a Lightning ``.ckpt`` or any ``torch.save`` of a state dict or a whole module, a
    ``torch.export`` ``.pt2`` program, a :func:`~lightning_compress.save_compressed` file) or a model spec of
    ``lc-bench`` (torchvision name, ``module:fn``, run folder), with an optional checkpoint to load into it.
    Unpickling runs code: open only your own files.
    """
    path = Path(target)
    if not path.is_file() or checkpoint is not None:
        return load_model(target, checkpoint)
    if path.suffix == ".pt2":
        return torch.export.load(path).module()
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        return load_compressed(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return obj["state_dict"]
    return obj


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``lc-report``: per-layer sparsity, 2:4 compliance, quantization and bytes of a checkpoint or model.

    Example:
        lc-report outputs/train/<time>/checkpoints/last.ckpt
        lc-report outputs/train/<time>/checkpoints/last.ckpt --save-compressed model.lcz --int8
        lc-report resnet18 --json report.json
    """
    parser = argparse.ArgumentParser(prog="lc-report", description=main.__doc__.splitlines()[0])
    parser.add_argument("target", help="checkpoint / state dict / .pt2 / compressed file, or an lc-bench model spec")
    parser.add_argument("--checkpoint", help="load this into the model spec first")
    parser.add_argument("--json", help="write the report as JSON here")
    parser.add_argument("--save-compressed", help="write the weights with save_compressed here (bitmask encodings)")
    parser.add_argument("--int8", action="store_true", help="with --save-compressed: int8 per-channel weights")
    args = parser.parse_args(argv)
    source = load_for_report(args.target, args.checkpoint)
    report = compression_report(source, args.target)
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
        print(f"wrote {args.json}")
    if args.save_compressed:
        state = source.state_dict() if isinstance(source, nn.Module) else source
        stats = save_compressed({k: v for k, v in state.items() if isinstance(v, Tensor)}, args.save_compressed,
                                int8=args.int8)  # fmt: skip
        print(f"wrote {args.save_compressed}: {stats.file_bytes:,} bytes ({stats.dense_bytes / stats.file_bytes:.2f}x"
              " smaller than the tensors' dense bytes)", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
