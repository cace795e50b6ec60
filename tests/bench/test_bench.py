"""lc-bench on tiny shapes: the harness, the sparse layers, unavailable paths as rows, advice, plots and log readers."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from lightning_compress import bench
from lightning_compress.analysis.run_logs import metric_series, sweep_jobs
from lightning_compress.bench import (
    BenchResult,
    benchmark_gemm,
    benchmark_model,
    format_table,
    measure,
    model_benchmark,
)
from lightning_compress.bench.advice import advise
from lightning_compress.cli import bench as bench_cli
from lightning_compress.cli.model_spec import load_model
from lightning_compress.sparsity.sparse_layers import SparseConv2d, SparseLinear, to_sparse_layers

FAST = {"warmup": 1, "repeats": 2, "min_warmup_s": 0.0, "checks": None}  # the timing checks: test_trustworthy_timing
GPU = torch.cuda.is_available()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))


def test_measure_returns_latency_throughput_and_memory():
    seconds, per_s, peak = measure(lambda: torch.ones(1000) * 2, batch_size=10, warmup=1, repeats=3, checks=None)
    assert seconds > 0 and per_s == pytest.approx(10 / seconds)
    assert peak is None or peak >= 0
    with pytest.raises(ValueError, match="repeats"):
        measure(lambda: None, repeats=0)


def test_cpu_model_reads_name_and_low_precision_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx512f avx512_vnni amx_tile"
        " amx_int8 amx_bf16\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu\n"
    )
    assert bench.cpu_model(str(info)) == ("Intel(R) Xeon(R) Platinum 8480+", ["amx_int8", "amx_bf16", "avx512_vnni"])
    name, flags = bench.cpu_model(str(tmp_path / "missing"))  # not Linux: platform's name, no flags
    assert name and flags == []
    info = bench.machine_info()
    assert info["cpu"] and set(info["cpu_low_precision"]) <= set(bench.LOW_PRECISION_FLAGS)


def test_gemm_flops_counts_the_chosen_ops():
    x = torch.randn(5, 32)
    total = 2 * 5 * (32 * 64 + 64 * 8)  # two Linear layers
    assert bench.gemm_flops(_mlp(), x) == bench.gemm_flops(_mlp(), x, ops=("addmm", "mm")) == total
    assert bench.gemm_flops(_mlp(), x, ops=("convolution",)) == 0


@pytest.mark.parametrize("fmt", ["csr", "coo", "bsr"])
def test_sparse_linear_matches_dense(fmt):
    lin = nn.Linear(32, 16)
    with torch.no_grad():
        lin.weight[torch.rand_like(lin.weight) < 0.8] = 0.0
    x = torch.randn(2, 5, 32)
    assert torch.allclose(SparseLinear.from_dense(lin, fmt)(x), lin(x), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs", [dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, dilation=2), dict(kernel_size=1)]
)
def test_sparse_conv_matches_dense(kwargs):
    conv = nn.Conv2d(4, 8, **kwargs)
    with torch.no_grad():
        conv.weight[torch.rand_like(conv.weight) < 0.7] = 0.0
    x = torch.randn(2, 4, 9, 9)
    assert torch.allclose(SparseConv2d(conv, "csr")(x), conv(x), atol=1e-5)


def test_to_sparse_layers_keeps_grouped_convs_dense():
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 8, 3), nn.Flatten(), nn.LazyLinear(3))
    net(torch.randn(1, 4, 8, 8))
    sparse, dense = to_sparse_layers(net, "coo")
    assert dense == ["0"] and isinstance(sparse[1], SparseConv2d) and isinstance(sparse[3], SparseLinear)
    x = torch.randn(2, 4, 8, 8)
    assert torch.allclose(sparse(x), net(x), atol=1e-5)


def test_benchmark_model_rows_and_unavailable_paths():
    small = nn.Sequential(nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 8))
    rows = benchmark_model(
        _mlp(), torch.randn(4, 32),
        paths=("fp32 eager", "bf16 autocast", "dense zeros", "csr", "coo", "2:4", "2:4+int8", "smaller"),
        sparsities=(0.5, 0.9), smaller_model=small, **FAST,
    )  # fmt: skip
    by_path = {r.path: r for r in rows}
    assert rows[0].path == "fp32 eager" and rows[0].speedup == 1.0
    for name in ("CSR 50%", "COO 90%", "dense kernel, 90% zeros", "bf16 autocast"):
        row = by_path[name]
        assert row.available and row.latency_ms > 0 and row.throughput > 0, row
    assert by_path["CSR 90%"].theoretical_speedup == pytest.approx(10.0)
    assert by_path["smaller model (distilled / structurally pruned)"].theoretical_speedup == pytest.approx(
        (32 * 64 + 64 * 8) / (32 * 8 + 8 * 8)
    )
    if not GPU:
        for name in ("2:4 semi-structured (bf16)", "2:4 + INT8"):
            assert not by_path[name].available and "GPU" in by_path[name].reason
    table = format_table(rows)
    assert "unavailable here:" in table or GPU


def test_a_failing_path_becomes_a_row(monkeypatch):
    def broken(model, inputs, device):
        raise RuntimeError("torch.export could not capture the model\nmore lines")

    monkeypatch.setattr(model_benchmark, "_int8_pt2e", broken)
    rows = benchmark_model(_mlp(), torch.randn(2, 32), paths=("fp32 eager", "int8"), **FAST)
    assert rows[-1].path.startswith("INT8") and not rows[-1].available
    assert rows[-1].reason == "RuntimeError: torch.export could not capture the model"


def test_int8_torchao_without_linear_is_unavailable():
    rows = benchmark_model(nn.Conv2d(1, 2, 3), torch.randn(1, 1, 8, 8), paths=("fp32 eager", "int8 torchao"), **FAST)
    assert not rows[1].available and "nn.Linear only" in rows[1].reason


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="`paths`"):
        benchmark_model(_mlp(), torch.randn(2, 32), paths=("fp64",))
    with pytest.raises(ValueError, match="`sparsities`"):
        benchmark_model(_mlp(), torch.randn(2, 32), sparsities=(1.0,))


def test_gemm_rows():
    rows = benchmark_gemm(32, 32, 16, sparsities=(0.9,), formats=("csr",), **FAST)
    by_path = {r.path: r for r in rows}
    assert by_path["dense GEMM"].speedup == 1.0 and by_path["CSR 90%"].available
    assert by_path["dense GEMM"].throughput == pytest.approx(
        2 * 32 * 32 * 16 / (by_path["dense GEMM"].latency_ms / 1e3)
    )
    if not GPU:
        assert not by_path["2:4 semi-structured GEMM"].available


def _row(path, family, ms, theory=None, **kw):
    return BenchResult(path, family, latency_ms=ms, speedup=10.0 / ms, theoretical_speedup=theory, **kw)


def test_advice_follows_the_measurements():
    base = _row("fp32 eager", "dense", 10.0, 1.0)
    slow_sparse = [_row("CSR 90%", "unstructured", 20.0, 10.0, sparsity=0.9, fmt="csr")]
    fast_sparse = [_row("CSR 90%", "unstructured", 5.0, 10.0, sparsity=0.9, fmt="csr")]
    int8_fast = _row("INT8 (QAT export path, PT2E)", "int8", 2.0, 4.0)
    int8_slow = _row("INT8 (QAT export path, PT2E)", "int8", 9.8, 4.0)
    semi = BenchResult("2:4 semi-structured (bf16)", "2:4", available=False, reason="needs a GPU")

    text = advise([base, int8_fast, semi, *slow_sparse])
    assert text[0].startswith("INT8 first: INT8 (QAT export path, PT2E) runs 5.00x")
    assert "Skip 2:4" in text[1] and "needs a GPU" in text[1]
    assert "does not pay" in text[-1] and "0.50x" in text[-1]
    text = advise([base, int8_slow, semi, *fast_sparse])
    assert "only 1.02x" in text[0]
    assert "starts to pay at 90%" in text[-1]
    budget = advise([base, int8_fast], latency_budget_ms=1.0)
    assert any("no path meets it" in line and "2.0x cheaper" in line for line in budget)


def test_cli_writes_csv_json_plot_and_prints_advice(tmp_path, capsys, monkeypatch):
    from lightning_compress.bench import machine_load

    def quiet() -> machine_load.CpuTimes:  # a machine where nothing else runs: the load check passes
        now, own = time.monotonic(), time.process_time()
        return machine_load.CpuTimes(now, own, own, 2)

    monkeypatch.setattr(machine_load, "read_cpu_times", quiet)
    builder = tmp_path / "tiny.py"
    builder.write_text("import torch\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(16, 16))\n")
    out = tmp_path / "run"
    code = bench_cli.main(
        [
            "--model",
            f"{builder}:build",
            "--input-shape",
            "2,16",
            "--paths",
            "fp32 eager",
            "csr",
            "2:4",
            "--sparsities",
            "0.9",
            "--warmup",
            "1",
            "--repeats",
            "1",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Advice (from the measurements above):" in printed and "CSR 90%" in printed
    data = json.loads((out / "bench.json").read_text())
    assert data["meta"]["device"] == "cpu" and data["meta"]["advice"]
    assert [r["path"] for r in data["results"]][:2] == ["fp32 eager", "CSR 90%"]
    assert (out / "bench.csv").read_text().startswith("path,family,available")
    assert (out / "bench.png").stat().st_size > 0


def test_load_model_with_a_lightning_checkpoint(tmp_path):
    net = nn.Sequential(nn.Linear(4, 2))
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "x.ckpt")
    builder = tmp_path / "b.py"
    builder.write_text("import torch\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(4, 2))\n")
    loaded = load_model(f"{builder}:build", str(tmp_path / "x.ckpt"))
    assert torch.equal(loaded[0].weight, net[0].weight)
    with pytest.raises(ValueError, match="no folder, file"):
        load_model("not_a_model_name")


# ------------------------------------------------------------------------------------- logs and plots of runs
def _metrics_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "epoch,step,compress/sparsity,compress/sparsity/0.weight,test/acc"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


def test_sparsity_schedule_plot_from_a_run(tmp_path):
    from lightning_compress.cli.plot import main as plot_main

    run = tmp_path / "run"
    _metrics_csv(
        run / "csv" / "metrics.csv", ["0,0,0.0,0.0,", "0,5,,,", "0,10,0.5,0.4,", "1,20,0.9,0.8,", "1,20,,,0.9"]
    )
    assert metric_series(run, "compress/sparsity") == [(0, 0.0), (10, 0.5), (20, 0.9)]
    assert plot_main(["schedule", str(run)]) == 0
    assert (run / "sparsity_schedule.png").stat().st_size > 0
    with pytest.raises(KeyError, match="pruning/sparsity"):
        metric_series(run, "pruning/sparsity")


def test_accuracy_vs_sparsity_from_a_multirun_folder(tmp_path):
    from lightning_compress.analysis.plots import plot_accuracy_vs_sparsity

    for job, (sparsity, acc) in enumerate([(0.5, 0.97), (0.9, 0.96), (0.99, 0.9)]):
        (tmp_path / str(job) / ".hydra").mkdir(parents=True)
        (tmp_path / str(job) / ".hydra" / "overrides.yaml").write_text(
            f"- compression=gmp\n- compression.gmp.final_sparsity={sparsity}\n"
        )
        _metrics_csv(tmp_path / str(job) / "csv" / "metrics.csv", [f"0,10,{sparsity},{sparsity},", f"0,10,,,{acc}"])
    (tmp_path / "3" / ".hydra").mkdir(parents=True)
    (tmp_path / "3" / ".hydra" / "overrides.yaml").write_text("- compression=none\n")
    _metrics_csv(tmp_path / "3" / "csv" / "metrics.csv", ["0,10,,,0.98"])
    jobs = sweep_jobs(tmp_path)
    assert [(j["sparsity"], j["metric"]) for j in jobs] == [(0.5, 0.97), (0.9, 0.96), (0.99, 0.9), (0.0, 0.98)]
    assert plot_accuracy_vs_sparsity(tmp_path).stat().st_size > 0
