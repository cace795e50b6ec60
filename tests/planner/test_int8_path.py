"""lc-bench's INT8 path and the planner's PTQ INT8 candidate are one program: both are built by
``bench.model_benchmark.int8_model`` (with the same options but the calibration data), and Inductor compiles both to
the same oneDNN INT8 kernels at a static batch shape, so a ratio from ``lc-bench`` and one from ``lc-compress`` differ
only by what they are timed on (issue 20: the tight-budget mismatch). No timing is asserted. (That benchmark_model's
"int8" row is ``_int8_pt2e``: tests/bench/test_bench.py::test_a_failing_path_becomes_a_row.)"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from planner_fakes import cpu_facts

from lightning_compress.bench import model_benchmark
from lightning_compress.models import SmallCNN
from lightning_compress.planner.budget import Budget, Measurement
from lightning_compress.planner.quantization_steps import PTQInt8
from lightning_compress.planner.steps import PlannerSettings, WalkContext
from lightning_compress.quantization.pt2e import FrozenInt8


def _cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(num_classes=3, channels=(4, 8), hidden=8, image_size=8).eval()


def _program(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[str], list[str]]:
    """The oneDNN ops and the names of the C++ kernels Inductor generates for ``model(x)``, in call order."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()  # compile again here, whatever ran before
    with torch.no_grad():
        _, sources = run_and_get_code(model, x)
    calls = "\n".join(s.split("def call(", 1)[-1] for s in sources)
    ops = re.findall(r"torch\.ops\.(onednn\.\w+)", calls)
    kernels = re.findall(r"^\s*(cpp_fused_\w+)\(", calls, flags=re.MULTILINE)
    return ops, kernels


def test_lc_bench_and_the_planner_build_the_same_int8_program(monkeypatch) -> None:
    made: list[tuple[str, dict, torch.nn.Module]] = []
    real = model_benchmark.int8_model

    def recording(model, calibration_data, device="cpu", **options):  # noqa: ANN001, ANN202
        int8 = real(model, calibration_data, device, **options)
        made.append((type(model).__name__, dict(options), int8))
        return int8

    monkeypatch.setattr(model_benchmark, "int8_model", recording)
    net, x = _cnn(), torch.randn(6, 1, 8, 8)
    model_benchmark._int8_pt2e(net, x, torch.device("cpu"))  # what benchmark_model's "int8" path times

    torch.manual_seed(1)
    images = torch.randn(24, 1, 8, 8)
    train = [(images[i : i + 8], torch.randint(0, 3, (8,))) for i in range(0, 24, 8)]
    base = Measurement(metric=0.5, latency_ms=1.0, speedup=1.0, size_bytes=1000)
    ctx = WalkContext(net, train, train, images[:6], Budget(max_drop=1, latency_ratio=0.5), PlannerSettings(
        calibration_batches=2), cpu_facts(), base, {}, 3, "accuracy", Path("."))  # fmt: skip
    (candidate,) = PTQInt8().run(ctx)

    assert [(name, options) for name, options, _ in made] == [
        ("SmallCNN", {"calibration_batches": 1}),  # lc-bench: the timed batch calibrates
        ("SmallCNN", {"calibration_batches": 2}),  # the planner: its calibration batches
    ]
    bench_int8, planner_int8 = made[0][2], made[1][2]
    assert candidate.model is planner_int8 and candidate.kind == "int8"
    assert isinstance(bench_int8, FrozenInt8) and isinstance(planner_int8, FrozenInt8)
    graph_ops = [
        [str(n.target) for n in m._orig_mod.graph.nodes if n.op == "call_function"] for m in (bench_int8, planner_int8)
    ]
    assert graph_ops[0] == graph_ops[1]  # the same converted graph (the quantization parameters aside)

    bench_program, planner_program = _program(bench_int8, x), _program(planner_int8, x)
    assert bench_program == planner_program
    ops, kernels = bench_program
    assert ops.count("onednn.qconv_pointwise") == 2 and ops.count("onednn.qlinear_pointwise") == 2, ops
    assert any("max_pool2d" in k for k in kernels), kernels  # the pools run on the uint8 values (Inductor's kernel)
