"""``lc-oneshot``: one-shot pruning (magnitude, Wanda, SparseGPT) of a trained Hugging Face classifier (a
``save_pretrained`` folder, or such a folder plus a Lightning checkpoint of a ``ClassificationModule`` around it, as
``lc-train`` writes), calibrated on a GLUE-style task, with validation accuracy before and after.

Example:
    lc-oneshot MODEL_DIR --method sparsegpt --sparsity 0.5 --task rotten_tomatoes --calibration-batches 8 \
        --output pruned/
    lc-oneshot MODEL_DIR --ckpt outputs/.../last.ckpt --method wanda --nm 2:4
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from lightning_compress.core.batches import call_on_batch, move_data_to_device
from lightning_compress.core.checkpoints import load_network_weights, read_state_dict
from lightning_compress.core.files import atomic_folder
from lightning_compress.data import GLUEDataModule
from lightning_compress.models import huggingface_classifier
from lightning_compress.pruning.one_shot.prune import METHODS, one_shot_prune
from lightning_compress.sparsity.pattern import pattern_name

__all__ = ["main"]


def _parse_nm(text: str) -> tuple[int, int]:
    try:
        n, m = (int(part) for part in text.split(":"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--nm must look like 2:4, got {text!r}") from err
    return n, m


def _load_classifier(model_dir: str, ckpt: Union[str, Mapping[str, Tensor], None], num_labels: int) -> nn.Module:
    model = huggingface_classifier(model_dir, num_labels=num_labels)
    if ckpt is not None:
        load_network_weights(model, ckpt, what="`--ckpt`")
    return model


@torch.no_grad()
def _accuracy(model: nn.Module, loader: Iterable[Mapping[str, Tensor]], device: torch.device) -> float:
    model.eval()
    right = total = 0
    for batch in loader:
        batch = move_data_to_device(batch, device)
        logits = call_on_batch(model, batch).logits
        right += int((logits.argmax(-1) == batch["labels"]).sum())
        total += batch["labels"].numel()
    return right / total


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """``lc-oneshot``: prune a trained Hugging Face classifier in one shot.

    Prints one line per step and returns the summary (also printed as the last line, as a dict).
    """
    parser = argparse.ArgumentParser(
        prog="lc-oneshot",
        description="One-shot pruning (magnitude, Wanda, SparseGPT) of a trained Hugging Face sequence classifier.",
    )
    parser.add_argument("model_dir", help="a save_pretrained folder (or, with --ckpt, the folder of its architecture)")
    parser.add_argument("--ckpt", default=None, help="a Lightning checkpoint of a ClassificationModule around it"
                        " (read with weights_only=True: never unpickled)")  # fmt: skip
    parser.add_argument("--method", choices=METHODS, default="sparsegpt")
    pattern = parser.add_mutually_exclusive_group(required=True)
    pattern.add_argument("--sparsity", type=float)
    pattern.add_argument("--nm", type=_parse_nm, help="N:M, e.g. 2:4")
    parser.add_argument("--task", default="rotten_tomatoes", help="a GLUE task (or rotten_tomatoes, offline)")
    parser.add_argument("--tokenizer", default=None, help="default: model_dir")
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-classifier", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-eval", action="store_true", help="skip the validation accuracy before and after")
    parser.add_argument("--output", default=None, help="save_pretrained the pruned model here (atomically replaced)")
    args = parser.parse_args(argv)

    n, m = args.nm if args.nm is not None else (None, None)
    try:  # read (weights_only=True) before any work, so that a bad file fails at once, naming itself
        ckpt = read_state_dict(args.ckpt, "`--ckpt`") if args.ckpt is not None else None
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    data = GLUEDataModule(args.task, tokenizer=args.tokenizer or args.model_dir, batch_size=args.batch_size,
                          seed=args.seed)  # fmt: skip
    data.setup("fit")
    device = torch.device(args.device)
    model = _load_classifier(args.model_dir, ckpt, data.num_classes).to(device)
    summary: dict[str, Any] = {"method": args.method, "pattern": pattern_name(args.sparsity, n, m)}
    if not args.no_eval and data.task != "regression":
        summary["val_acc_before"] = _accuracy(model, data.val_dataloader(), device)
        print(f"validation accuracy before: {100 * summary['val_acc_before']:.2f}%", flush=True)
    result = one_shot_prune(
        model, data.train_dataloader(), method=args.method, sparsity=args.sparsity, n=n, m=m,
        calibration_batches=args.calibration_batches, skip_classifier=args.skip_classifier,
    )  # fmt: skip
    summary.update(
        sparsity=result.achieved_sparsity, seconds=result.seconds, skipped=result.skipped, blocks=result.blocks
    )
    print(
        f"{args.method} {result.pattern}: sparsity 0.00% -> {result.achieved_sparsity:.2%} of {len(result.masks)}"
        f" weights in {result.seconds:.1f} s ({len(result.skipped)} skipped)",
        flush=True,
    )
    if not args.no_eval and data.task != "regression":
        summary["val_acc_after"] = _accuracy(model, data.val_dataloader(), device)
        print(f"validation accuracy after: {100 * summary['val_acc_after']:.2f}%", flush=True)
    if args.output:
        with atomic_folder(args.output) as tmp:  # written beside, then swapped in: a crash leaves the old folder
            model.save_pretrained(tmp)
            if data.tokenizer is not None:
                data.tokenizer.save_pretrained(tmp)
        summary["output"] = args.output
    print(summary)
    return summary


if __name__ == "__main__":
    main()
