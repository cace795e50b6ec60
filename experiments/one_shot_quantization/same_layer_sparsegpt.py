"""Is our SparseGPT 2:4 the peer's algorithm? Block 0 of SmolLM2 (its inputs are the dense model's in both
pipelines): the same weights, the same calibration inputs (16 windows), pruned 2:4 by our ``sparsegpt_prune`` and by
llm-compressor 0.14's own ``sparsify_weight`` (on its own ``accumulate_hessian`` Hessian, and on ours), then compared
mask by mask and by the output error ``tr(d H d^T) / tr(W H W^T)``. No timings.

    .venv/bin/python experiments/one_shot_quantization/same_layer_sparsegpt.py ours       # W, X, H, ours -> .cache
    .venv-peer/bin/python experiments/one_shot_quantization/same_layer_sparsegpt.py peer  # the peer's on the same
    .venv/bin/python experiments/one_shot_quantization/same_layer_sparsegpt.py compare

``--block 1`` takes block 1 instead, its inputs the dense model's (not the pruned block 0's): a same-layer check only.

How large is the rounding-level spread of the whole-model figure? ``noise --threads T`` runs our whole pipeline
(``one_shot_prune``, SparseGPT 2:4, ``lm_head`` dense, as ``accuracy.py sparsegpt_24``) at T threads (another GEMM
reduction order, so other float32 roundings) and prints the perplexity. Measured (2026-12-01, AMD EPYC Zen 4): block 0
bit-identical to the peer's solve on our Hessian (0 % masks, 0.0 weights), 0.004 % mask flips on its own float32
Hessian; whole model 93.32 at 1 thread, 94.62 at 2 (repeatable to all digits), ``accuracy.py`` 95.51 (float32 Hessian
sums, before the float64 sums); the peer 93.84:

    .venv/bin/python experiments/one_shot_quantization/same_layer_sparsegpt.py noise --threads 2
"""

from __future__ import annotations

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, ".cache", "same_layer_sparsegpt")
BLOCK = int(sys.argv[sys.argv.index("--block") + 1]) if "--block" in sys.argv else 0


def _path(who: str) -> str:
    return os.path.join(OUT, f"{who}_block{BLOCK}.pt")


def ours() -> None:
    sys.path.insert(0, HERE)
    import protocol

    from lightning_compress.pruning.one_shot.calibration import InputStatistics
    from lightning_compress.pruning.one_shot.sparsegpt import sparsegpt_prune

    torch.set_num_threads(1)
    model, tokenizer = protocol.load()
    calibration, _ = protocol.windows(tokenizer)
    prefix = f"model.layers.{BLOCK}."
    names = [n for n, m in model.named_modules() if n.startswith(prefix) and isinstance(m, torch.nn.Linear)]
    stats = {n: InputStatistics(model.get_submodule(n), hessian=True) for n in names}
    inputs: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    hooks = [
        model.get_submodule(n).register_forward_hook(lambda mod, a, o, n=n: inputs[n].append(a[0].detach().clone()))
        for n in names
    ]
    with torch.no_grad():
        for row in calibration:
            model(row[None])
    for h in hooks:
        h.remove()
    out = {}
    for n in names:
        stats[n].remove()
        w, h = model.get_submodule(n).weight.detach().clone(), stats[n].hessian().clone()
        new_w, keep = sparsegpt_prune(w, h, n=2, m=4)
        out[n] = {"w": w, "h": h, "x": torch.cat(inputs[n]), "ours": new_w, "ours_keep": keep}
    os.makedirs(OUT, exist_ok=True)
    torch.save(out, _path("ours"))


def peer() -> None:
    from llmcompressor.modifiers.pruning.sparsegpt.sgpt_sparsify import accumulate_hessian, sparsify_weight

    torch.set_num_threads(1)
    out = {}
    for n, d in torch.load(_path("ours")).items():
        w = d["w"].float()
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        lin.weight.data.copy_(w)
        h_peer, count = torch.zeros(w.shape[1], w.shape[1]), 0
        for x in d["x"]:  # batch 1 per window, as the peer's sequential pipeline hands them to its hook
            h_peer, count = accumulate_hessian(x[None], lin, h_peer, count)
        res = {"h": h_peer.clone()}
        for tag, h in (("peer_hpeer", h_peer), ("peer_hours", d["h"].float())):
            _, new_w = sparsify_weight(lin, {lin: h.clone()}, 0.5, 2, 4, 128, 0.01, False)
            res[tag] = new_w
        out[n] = res
    torch.save(out, _path("peer"))


def compare() -> None:
    peer_out = torch.load(_path("peer"))
    for n, d in torch.load(_path("ours")).items():
        w, h, p = d["w"].float(), d["h"].double(), peer_out[n]

        def err(q: torch.Tensor) -> float:
            e = (w - q).double()
            return float(torch.einsum("ri,ij,rj->", e, h, e) / torch.einsum("ri,ij,rj->", w.double(), h, w.double()))

        hp = p["h"].double()
        h_rel = float((hp / hp.diagonal().mean() - h / h.diagonal().mean()).norm() / (h / h.diagonal().mean()).norm())
        keep = d["ours_keep"]
        print(f"{n:34s} H rel diff (each / mean diag) {h_rel:.2e}")
        for tag in ("peer_hpeer", "peer_hours"):
            q = p[tag].float()
            diff = float(((q != 0) != keep).float().mean())
            wd = float((q - d["ours"]).norm() / d["ours"].norm())
            print(f"    {tag:11s} mask differs {diff:.4%}  weights rel diff {wd:.2e}  output error peer {err(q):.5%}"
                  f"  ours {err(d['ours'].float()):.5%}")  # fmt: skip


def noise() -> None:
    sys.path.insert(0, HERE)
    import protocol

    from lightning_compress.pruning.one_shot.prune import one_shot_prune

    torch.set_num_threads(int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 2)
    model, tokenizer = protocol.load()
    calibration, evaluation = protocol.windows(tokenizer)
    batches = list(calibration[:, None])
    one_shot_prune(model, batches, method="sparsegpt", calibration_batches=len(batches), n=2, m=4)
    print({"threads": torch.get_num_threads(), "torch": torch.__version__,
           "perplexity": protocol.window_perplexity(model, evaluation)})  # fmt: skip


if __name__ == "__main__":
    {"ours": ours, "peer": peer, "compare": compare, "noise": noise}[sys.argv[1]]()
