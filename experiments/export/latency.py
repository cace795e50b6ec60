"""CPU latency of the deployable artifacts, every path timed side by side in interleaved rounds (median of each
round's repeats, then the median over rounds), ratios against fp32 eager printed, the CPU recorded with the rows.

- INT8 classifiers (SmallCNN at batch 64, MiniLM at 8 x 128 tokens, EfficientNet-Lite0 at batch 8): fp32 eager, our
  PT2E INT8 compiled by Inductor (``quantize``), ONNX Runtime on our Q/DQ export (with ``calibration_data=`` the
  calibration batches: convolutions read in float run as QLinearConv), ONNX Runtime on ``quantize_static`` of the
  fp32 ONNX export with the same calibration batches (the peer path), ONNX Runtime fp32; EfficientNet also ONNX
  Runtime on our export without ``calibration_data`` (``ort_ours_qdq_conv_integer``: 9 ConvInteger, the export
  before the fix).
- Decode (SmolLM2-135M, W4A16 group 64, RTN: the kernel's speed does not depend on how the codes were chosen): the
  compressed-tensors folder loaded by transformers (dense float Linears) against ``load_packed`` (packed INT4
  modules, bf16), greedy decode of ``--new-tokens`` tokens after a 32-token prompt, seconds per token.

Run on a quiet machine (check ``uptime``), from the repository root::

    .venv/bin/python experiments/export/latency.py                     # everything, about 8 minutes on 2 cores
    .venv/bin/python experiments/export/latency.py --rounds 3 --repeats 5 --new-tokens 16   # reduced, about 5 min
    .venv/bin/python experiments/export/latency.py --quick             # tiny models, one round: proves it works

Results are printed and written to experiments/export/latency.json (--quick: latency_quick.json); a run of some
``--models`` replaces those models' rows (with their machine) and keeps the others.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ptq"))
sys.path.insert(0, str(HERE.parent / "one_shot_quantization"))
from onnx_peer import onnx_int8, run  # noqa: E402

from lightning_compress.bench import machine_info  # noqa: E402
from lightning_compress.core.files import atomic_write_text  # noqa: E402
from lightning_compress.export import export, load_onnx, load_packed, ort_kernels  # noqa: E402
from lightning_compress.quantization.ptq import quantize  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))


PAUSE_S = 0.25  # before each path's repeats


@torch.no_grad()
def interleaved(paths: dict[str, Callable[[], Any]], rounds: int, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of every path, the paths run in turn within each round."""
    for fn in paths.values():
        for _ in range(warmup):
            fn()
    per_round: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for key, fn in paths.items():
            # ONNX Runtime's worker threads spin for a while after a run; on 2 cores they would steal the next path's
            # CPU (measured: PyTorch fp32 eager after an ORT session, 23.9 ms instead of 6.4 ms). Let them park.
            time.sleep(PAUSE_S)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            per_round[key].append(statistics.median(times))
    return {k: statistics.median(v) for k, v in per_round.items()}


def _classifier_paths(
    name: str, fp32: Any, calib: list, inputs: Any, folder: Path, conv_integer: bool = False
) -> dict[str, Callable]:
    """The paths of one classifier; ``conv_integer`` adds ORT on our Q/DQ export without ``calibration_data`` (the
    convolutions read in float as ConvInteger: the export before the calibrated-output fix)."""
    int8 = quantize(copy.deepcopy(fp32), calib, calibration_batches=len(calib), compile=True)
    small = {k: v[:2] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[:2]
    exported = export(int8, folder / f"{name}_qdq.onnx", "onnx", example_inputs=small, calibration_data=calib)
    print(f"{name}: ORT on our Q/DQ runs {ort_kernels(exported.path).summary()}", flush=True)
    ours = load_onnx(exported.path)
    extra: dict[str, Callable] = {}
    if conv_integer:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the ConvInteger warning: wanted here
            before = export(int8, folder / f"{name}_qdq_ci.onnx", "onnx", example_inputs=small)
        print(f"{name}: without calibration_data: {ort_kernels(before.path).summary()}", flush=True)
        session = load_onnx(before.path)
        extra["ort_ours_qdq_conv_integer"] = lambda: session(inputs)
    ort_fp32 = load_onnx(export(fp32, folder / f"{name}_fp32.onnx", "onnx", example_inputs=small).path)
    (folder / f"{name}_peer").mkdir()
    peer = onnx_int8(fp32, calib, folder / f"{name}_peer")
    call = (lambda m: lambda: m(**inputs)) if isinstance(inputs, dict) else (lambda m: lambda: m(inputs))
    return {
        "fp32_eager": call(fp32),
        "ours_pt2e_inductor_int8": call(int8),
        "ort_ours_qdq": lambda: ours(inputs),
        "ort_peer_quantize_static": lambda: run(peer, inputs),
        "ort_fp32": lambda: ort_fp32(inputs),
        **extra,
    }


def smallcnn(quick: bool, folder: Path) -> dict[str, Callable]:
    from lightning_compress.models import SmallCNN

    torch.manual_seed(0)
    net = SmallCNN().eval()
    batch = 8 if quick else 64
    calib = [torch.randn(batch, 1, 28, 28) for _ in range(2 if quick else 8)]
    return _classifier_paths("smallcnn", net, calib, torch.randn(batch, 1, 28, 28), folder)


def efficientnet(quick: bool, folder: Path) -> dict[str, Callable]:
    from efficientnet import calibration_batch, efficientnet_lite0, photo_batch

    net = efficientnet_lite0()
    calib = list(calibration_batch().split(2 if quick else 8))[: 1 if quick else 4]
    return _classifier_paths("efficientnet", net, calib, photo_batch()[: 2 if quick else 8], folder, conv_integer=True)


def minilm(quick: bool, folder: Path) -> dict[str, Callable]:
    from lightning_compress.models import huggingface_classifier, offline_minilm_path

    net = huggingface_classifier(offline_minilm_path(), num_labels=2).eval()
    rows, length = (2, 16) if quick else (8, 128)
    g = torch.Generator().manual_seed(0)

    def batch() -> dict[str, torch.Tensor]:
        ids = torch.randint(1000, 20000, (rows, length), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    return _classifier_paths("minilm", net, [batch() for _ in range(2 if quick else 8)], batch(), folder)


def decode(quick: bool, folder: Path, new_tokens: int) -> dict[str, Callable]:
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from lightning_compress.quantization.weight_only.quantize import one_shot_quantize
    from lightning_compress.quantization.weight_only.weight_only_linear import to_weight_only_

    if quick:
        torch.manual_seed(0)
        lm = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2)).eval()  # fmt: skip
    else:
        import protocol

        lm = protocol.load()[0]
    model, result = one_shot_quantize(lm, None, method="rtn", bits=4, group_size=64)
    to_weight_only_(model, result, dtype=torch.bfloat16)
    path = export(model, folder / "w4a16", "hf-compressed-tensors").path
    del model, lm
    dense = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.bfloat16).eval()
    packed = load_packed(path, dtype=torch.bfloat16)
    prompt = torch.randint(0, 200, (1, 32), generator=torch.Generator().manual_seed(0))

    def gen(m: Any) -> Callable:
        return lambda: m.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                  pad_token_id=0)  # fmt: skip

    return {"transformers_dense_bf16_decode": gen(dense), "load_packed_int4_bf16_decode": gen(packed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", default="smallcnn,minilm,decode", help="comma-separated: smallcnn,efficientnet,minilm,decode"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="tiny models, one round: proves the script works")
    args = parser.parse_args()
    rounds, repeats = (1, 2) if args.quick else (args.rounds, args.repeats)
    new_tokens = 4 if args.quick else args.new_tokens
    rows: dict[str, Any] = {"machine": machine_info(), "quick": args.quick, "rounds": rounds, "repeats": repeats}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            folder = Path(tmp) / name
            folder.mkdir()
            if name == "decode":
                paths = decode(args.quick, folder, new_tokens)
                seconds = interleaved(paths, rounds, max(1, repeats // 5), warmup=1)
                seconds = {
                    k: v / new_tokens for k, v in seconds.items()
                }  # per generated token, the prefill of the prompt included
                base = "transformers_dense_bf16_decode"
            else:
                paths = {"smallcnn": smallcnn, "efficientnet": efficientnet, "minilm": minilm}[name](args.quick, folder)
                seconds = interleaved(paths, rounds, repeats)
                base = "fp32_eager"
            rows[name] = {k: {"ms": 1e3 * v, "speedup_vs_" + base: seconds[base] / v} for k, v in seconds.items()}
            for k, v in rows[name].items():
                print(f"{name:9s} {k:34s} {v['ms']:9.3f} ms  x{v['speedup_vs_' + base]:.2f}", flush=True)
    out = HERE / ("latency_quick.json" if args.quick else "latency.json")
    if out.exists() and not args.quick:  # a run of some models replaces their rows and keeps the others
        merged = json.loads(out.read_text(encoding="utf-8"))
        for name in args.models.split(","):
            merged[name] = rows[name]
            merged[f"{name}_machine"] = rows["machine"]
            merged[f"{name}_rounds_repeats"] = [rounds, repeats]
        rows = merged
    atomic_write_text(out, json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
