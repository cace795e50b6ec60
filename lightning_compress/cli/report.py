"""``lc-report``: what a checkpoint or model holds: per-layer sparsity, 2:4 compliance, quantization and the bytes of
each storage form; optionally the weights written in the compressed format.

Example:
    lc-report outputs/train/<time>/checkpoints/last.ckpt --save-compressed model.lc.safetensors --int8
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from torch import Tensor, nn

from lightning_compress.analysis.report import compression_report
from lightning_compress.cli.model_spec import SPEC_FORMS, load_model
from lightning_compress.core.checkpoints import PickledFileError, load_pickled, load_torch_file, read_state_dict
from lightning_compress.core.file_kinds import describe_file, file_kind
from lightning_compress.core.files import atomic_write_text
from lightning_compress.core.tensor_file import tensor_file_format
from lightning_compress.export.compressed_format import FORMAT, LEGACY_FORMAT, load_compressed, save_compressed

__all__ = ["load_for_report", "main"]

_EXPECTED = (
    "a Lightning checkpoint, a state dict (torch.save or safetensors), a save_compressed file, a .pt2 program or a"
    " pickled module (with --allow-pickle)"
)


def _load_file(path: Path, allow_pickle: bool) -> Union[nn.Module, Mapping[str, Any]]:
    """A file's weights, its format read from its first bytes before anything is loaded."""
    kind = file_kind(path)
    if kind == "safetensors":
        fmt = tensor_file_format(path)
        if fmt == FORMAT:
            return load_compressed(path)
        if fmt is None:
            return read_state_dict(path, "`target`")
        raise ValueError(f"`target` {str(path)!r} must be {_EXPECTED}, found a lightning_compress {fmt!r} file")
    if kind == "pt2" or path.suffix == ".pt2":
        from lightning_compress.quantization.serialization import load_quantized

        return load_quantized(path, compile=False, allow_pickle=allow_pickle, what="`target`")
    if kind not in ("torch-zip", "pickle", "damaged-zip"):
        raise ValueError(f"`target` {str(path)!r} must be {_EXPECTED}, found {describe_file(path)}")
    try:
        obj = load_torch_file(path, "`target`", _EXPECTED)
    except PickledFileError:
        if not allow_pickle:
            raise
        obj = load_pickled(path, "`target`", allow_pickle=True)
    if isinstance(obj, Mapping) and obj.get("format") == LEGACY_FORMAT:
        return load_compressed(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return obj["state_dict"]
    if isinstance(obj, (nn.Module, Mapping)):
        return obj
    raise ValueError(
        f"`target` {str(path)!r} must be {_EXPECTED}, found a torch.save file holding a {type(obj).__name__}"
    )


def load_for_report(
    target: str, checkpoint: Optional[str] = None, allow_pickle: bool = False
) -> Union[nn.Module, Mapping[str, Any]]:
    """What :func:`compression_report` should read for a command-line target.

    ``target`` is a file (a Lightning ``.ckpt``, a ``torch.save`` or safetensors state dict, a ``torch.export``
    ``.pt2`` program, a :func:`~lightning_compress.save_compressed` file, or with ``allow_pickle`` a whole pickled
    module) or a model spec of ``lc-bench`` (torchvision name, ``module:fn``, run folder, ``save_pruned`` folder), with
    an optional checkpoint to load into it. The file's format is read from its first bytes; nothing is unpickled
    unless ``allow_pickle=True`` (``--allow-pickle``), which warns.

    Raises:
        FileNotFoundError: If ``target`` looks like a path that does not exist.
        ValueError: If the file is none of those (the message names it and says what it is), is damaged, or holds
            pickled objects without ``allow_pickle``.
    """
    path = Path(target)
    if path.is_file() and checkpoint is None:
        return _load_file(path, allow_pickle)
    if not path.exists() and ":" not in target and (path.suffix or "/" in target):
        raise FileNotFoundError(f"`target` {target!r} must be {_EXPECTED} or {SPEC_FORMS}; no such file or folder")
    return load_model(target, checkpoint, allow_pickle=allow_pickle, what="`target`")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``lc-report``: per-layer sparsity, 2:4 compliance, quantization and bytes of a checkpoint or model.

    Example:
        lc-report outputs/train/<time>/checkpoints/last.ckpt
        lc-report outputs/train/<time>/checkpoints/last.ckpt --save-compressed model.lc.safetensors --int8
        lc-report resnet18 --json report.json
    """
    parser = argparse.ArgumentParser(
        prog="lc-report",
        description=main.__doc__.splitlines()[0],
        epilog="Files are read without unpickling (weights_only=True, safetensors); --allow-pickle opts in to"
        " unpickling a whole saved module or a .pt2 with pickled entries, which runs the code the file names: only"
        " for files you trust.",
    )
    parser.add_argument("target", help="checkpoint / state dict / .pt2 / compressed file, or an lc-bench model spec")
    parser.add_argument("--checkpoint", help="load this into the model spec first")
    parser.add_argument("--json", help="write the report as JSON here")
    parser.add_argument("--save-compressed", help="write the weights with save_compressed here (bitmask encodings)")
    parser.add_argument("--int8", action="store_true", help="with --save-compressed: int8 per-channel weights")
    parser.add_argument("--allow-pickle", action="store_true", help="unpickle a saved module (runs its code)")
    args = parser.parse_args(argv)
    try:
        source = load_for_report(args.target, args.checkpoint, allow_pickle=args.allow_pickle)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    report = compression_report(source, args.target)
    print(report)
    if args.json:
        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2))
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
