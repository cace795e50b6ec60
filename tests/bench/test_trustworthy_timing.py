"""Measurements that cannot silently lie: the load of other processes and the spread of the repeats are checked, a
disturbed timing is re-measured and then marked with its figures, advice is refused, comparisons interleave their
repeats, lc-bench exits non-zero on user errors. No timing is asserted: the clocks and the load are faked, or a real
busy loop is started and the report must flag it."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_compress.bench import machine_load, timing
from lightning_compress.bench.advice import advise
from lightning_compress.bench.machine import describe_machine, machine_info
from lightning_compress.bench.machine_load import CpuTimes, allowed_others, load_between, read_cpu_times
from lightning_compress.bench.model_benchmark import benchmark_model
from lightning_compress.bench.results import BenchResult, format_table
from lightning_compress.bench.timing import BusyMachineWarning, PathTimer, TimingChecks, time_calls, time_interleaved
from lightning_compress.cli import bench as bench_cli

NO_WAIT = TimingChecks(idle_s=0.0, settle_s=0.0)


def _others_using(cpus: float):
    """A /proc/stat reader for a machine where other processes keep ``cpus`` CPUs busy (of 2)."""
    start = time.monotonic()

    def read() -> CpuTimes:
        now, own = time.monotonic(), time.process_time()
        return CpuTimes(now, own + cpus * (now - start), own, 2)

    return read


@pytest.fixture
def busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine_load, "read_cpu_times", _others_using(1.5))


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine_load, "read_cpu_times", _others_using(0.0))


# ------------------------------------------------------------------------------------------------------- the load
def test_read_cpu_times_counts_only_the_usable_cpus(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  500 0 100 900 0 0 0 0 0 0\n"
        "cpu0 400 0 50 100 7 0 0 0 0 0\n"  # busy 450 ticks (iowait 7 is idle)
        "cpu1 100 10 50 800 0 5 5 30 0 0\n"  # busy 200 ticks (nice, irq, softirq and steal count)
        "intr 1 2 3\n"
    )
    hz = os.sysconf("SC_CLK_TCK")
    assert read_cpu_times(str(stat), cpus=[1]).busy == pytest.approx(200 / hz)
    assert read_cpu_times(str(stat), cpus=[0, 1]).busy == pytest.approx(650 / hz)
    missing = read_cpu_times(str(tmp_path / "none"), cpus=[0, 1])
    assert missing.busy is None and missing.cpus == 2


def test_load_between_subtracts_this_process() -> None:
    report = load_between(CpuTimes(0.0, 100.0, 5.0, 2), CpuTimes(2.0, 103.0, 6.0, 2), threads=2, load_average=2.5,
                          own_running=1)  # fmt: skip
    assert report.others_cpus == pytest.approx(1.0) and report.own_cpus == pytest.approx(0.5)
    assert report.busy and report.allowed == 0.25
    assert report.text() == (
        "other processes used 1.00 of 2 CPUs (at most 0.25 allowed); load average 2.50, 1 running thread(s) of this"
        " process; this process got 0.50 CPU-s per s over 2.00 s"
    )
    quiet = load_between(CpuTimes(0.0, 100.0, 5.0, 2), CpuTimes(2.0, 102.2, 7.0, 2), threads=2)
    assert quiet.others_cpus == pytest.approx(0.1) and not quiet.busy
    # no /proc/stat: the load average, less this process's running threads, decides
    blind = load_between(CpuTimes(0.0, None, 0.0, 2), CpuTimes(1.0, None, 1.0, 2), threads=2, load_average=3.0,
                         own_running=1)  # fmt: skip
    assert blind.others_cpus is None and blind.busy
    assert allowed_others(64, 64) == 0.25 and allowed_others(64, 8) == pytest.approx(6.4)


def test_a_busy_machine_is_re_measured_then_flagged_with_its_figures(busy: None) -> None:
    steady = _clock(itertools.repeat(1e-3))  # the repeats agree: only the load is wrong
    result = time_calls(lambda: sum(range(100)), warmup=1, repeats=5, min_warmup_s=0.0, checks=NO_WAIT, clock=steady)
    assert result.attempts == 3 and not result.trusted
    (problem,) = result.problems
    assert problem.startswith("machine busy while timing (after 3 measurements): other processes used 1.50 of 2 CPUs")
    assert result.during is not None and result.during.others_cpus == pytest.approx(1.5, abs=0.05)
    before = time_calls(lambda: None, warmup=0, repeats=2, checks=TimingChecks(idle_s=0.05, settle_s=0.0, retries=0))
    assert any(p.startswith("machine busy before timing: other processes used 1.5") for p in before.problems)
    with pytest.warns(BusyMachineWarning, match="measure: not trustworthy: machine busy"):
        timing.measure(lambda: None, warmup=0, repeats=2, checks=NO_WAIT)


def test_a_quiet_machine_passes_on_the_first_measurement(quiet: None) -> None:
    result = time_calls(lambda: None, warmup=0, repeats=1, checks=NO_WAIT)
    assert result.trusted and result.attempts == 1 and result.during.others_cpus == pytest.approx(0.0, abs=1e-6)


def _clock(durations: Iterable[float]):
    """A clock whose consecutive (start, stop) readings are ``durations`` apart."""
    now = itertools.count()
    steps = iter(durations)

    def clock() -> float:
        tick = next(now)
        if tick % 2 == 0:
            clock.t = getattr(clock, "t", 0.0) + 1.0
            return clock.t
        return clock.t + next(steps)

    return clock


def test_a_wide_spread_is_re_measured_and_a_narrow_one_passes(quiet: None) -> None:
    noisy, steady = [1e-3, 1e-3, 1e-3, 3e-3, 3e-3], [1e-3, 1.02e-3, 1e-3, 1.01e-3, 1e-3]
    result = time_calls(lambda: None, warmup=0, repeats=5, checks=NO_WAIT, clock=_clock(noisy + steady))
    assert result.trusted and result.attempts == 2 and result.median == pytest.approx(1e-3)
    result = time_calls(lambda: None, warmup=0, repeats=5, checks=NO_WAIT, clock=_clock(noisy * 3))
    assert result.attempts == 3 and result.problems == [
        "repeats spread too widely (after 3 measurements): interquartile range / median 2.00 (at most 0.25); median"
        " 1.000 ms, min 1.000, max 3.000 over 5 repeats"
    ]


def test_comparisons_interleave_their_repeats() -> None:
    calls: list[str] = []
    out = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=2, repeats=3,
                           min_warmup_s=0.0, checks=None)  # fmt: skip
    assert calls == ["a", "a", "b", "b", "a", "b", "a", "b", "a", "b"]  # warm-ups, then round-robin
    assert len(out["a"].times) == len(out["b"].times) == 3

    calls.clear()
    timer = PathTimer(1, torch.device("cpu"), warmup=0, repeats=3, min_warmup_s=0.0, checks=None)
    timer.run(BenchResult("base", "dense"), lambda: lambda: calls.append("base"))
    calls.clear()
    row = timer.run(BenchResult("path", "int8"), lambda: lambda: calls.append("path"))
    assert calls[:6] == ["base", "path"] * 3  # the path's repeats alternate with the baseline's (then its memory)
    assert row.extra["baseline_ms_interleaved"] > 0 and row.speedup == pytest.approx(
        row.extra["baseline_ms_interleaved"] / row.latency_ms
    )


def test_untrusted_rows_are_marked_and_advice_is_refused(busy: None) -> None:
    torch.manual_seed(0)
    rows = benchmark_model(nn.Linear(16, 16), torch.randn(2, 16), paths=("fp32 eager", "csr"), sparsities=(0.9,),
                           warmup=0, repeats=2, min_warmup_s=0.0, checks=TimingChecks(idle_s=0.0, settle_s=0.0,
                                                                                     retries=1))  # fmt: skip
    assert all(r.untrusted.startswith("machine busy while timing (after 2 measurements)") for r in rows)
    assert rows[1].extra["timing"]["attempts"] == 2 and rows[1].extra["timing"]["load_during"]["busy"]
    table = format_table(rows)
    assert "fp32 eager (!)" in table and "(!) not trustworthy (re-run on a quiet machine):" in table
    advice = advise(rows)
    assert advice[0].startswith("Refusing to advise: 2 of 2 measured paths are not trustworthy")
    assert advice[1].startswith("fp32 eager: machine busy while timing") and "other processes used 1.5" in advice[1]


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="needs /proc/stat")
def test_a_real_busy_loop_in_another_process_is_detected() -> None:
    """Busy loops on every CPU: whatever else runs here, the report must show other processes computing."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.3)
        result = time_calls(lambda: torch.ones(64).sum(), warmup=1, repeats=20, min_warmup_s=0.0,
                            checks=TimingChecks(retries=0, idle_s=0.2))  # fmt: skip
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    assert not result.trusted and result.before.busy and result.before.others_cpus > result.before.allowed
    assert any("other processes used" in p for p in result.problems)


def test_machine_info_goes_with_every_table() -> None:
    info = machine_info(load_s=0.05)
    assert {"cpu", "cpu_flags", "threads", "usable_cpus", "load_before", "versions"} <= set(info)
    assert {"torch", "lightning", "torchao"} <= set(info["versions"]) and info["versions"]["lightning"]
    lines = describe_machine(info)
    assert lines[0].startswith(f"machine: cpu, {info['cpu']}") and f"{info['threads']} torch threads" in lines[0]
    assert lines[1].startswith("versions: torch ") and "lightning " in lines[1]
    assert lines[2].startswith("load before the run (")
    assert format_table([], lines).startswith(lines[0])


# ---------------------------------------------------------------------------------------------------- lc-bench
@pytest.fixture
def builder(tmp_path: Path) -> str:
    path = tmp_path / "tiny.py"
    path.write_text("import torch\ndef build():\n    torch.manual_seed(0)\n    return torch.nn.Linear(16, 16)\n")
    return f"{path}:build"


def _bench(args: list[str], builder: str, tmp_path: Path) -> int:
    base = ["--model", builder, "--paths", "fp32 eager", "csr", "--sparsities", "0.9", "--warmup", "0", "--repeats",
            "1", "--device", "cpu", "--no-plot", "--out", str(tmp_path / "run")]  # fmt: skip
    return bench_cli.main([*base, *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repeats", "0"], "argument --repeats: must be an int >= 1, got '0'"),
        (["--warmup", "-1"], "argument --warmup: must be an int >= 0, got '-1'"),
        (["--input-shape", "2,,3"], "argument --input-shape: must be positive integers separated by commas"),
        (["--input-shape", "2,a"], "argument --input-shape: must be positive integers separated by commas"),
        (["--sparsities", "1.5"], "argument --sparsities: must be a fraction in [0, 1), got '1.5'"),
        (["--paths", "fp64"], "argument --paths: invalid choice: 'fp64'"),
        (["--max-spread", "0"], "argument --max-spread: must be a number > 0, got '0'"),
    ],
)
def test_bad_options_exit_2_naming_the_option(args, message, builder, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as err:
        _bench(args, builder, tmp_path)
    assert err.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_model_that_does_not_run_on_the_inputs_is_a_user_error(builder, tmp_path, capsys) -> None:
    assert _bench(["--input-shape", "2,32"], builder, tmp_path) == 2
    err = capsys.readouterr().err
    assert (
        "lc-bench: error: --model" in err and "does not run on inputs of shape 2,32 (--input-shape / --tokens)" in err
    )
    assert "mat1 and mat2 shapes cannot be multiplied" in err and not (tmp_path / "run").exists()


def test_a_model_that_cannot_be_loaded_is_a_user_error(tmp_path, capsys) -> None:
    code = bench_cli.main(["--model", "not_a_model_name", "--input-shape", "1,4", "--out", str(tmp_path / "run")])
    assert code == 2 and "lc-bench: error: ValueError: " in capsys.readouterr().err


def test_unavailable_paths_stay_rows_and_exit_0(builder, tmp_path, capsys, quiet) -> None:
    assert _bench(["--input-shape", "2,16", "--paths", "fp32 eager", "2:4"], builder, tmp_path) == 0
    data = json.loads((tmp_path / "run" / "bench.json").read_text())
    rows = {r["path"]: r for r in data["results"]}
    assert rows["fp32 eager"]["available"] and rows["fp32 eager"]["untrusted"] == ""
    assert torch.cuda.is_available() or not rows["2:4 semi-structured (bf16)"]["available"]
    assert data["meta"]["untrusted"] == 0 and data["meta"]["versions"]["lightning"]
    assert capsys.readouterr().out.startswith("machine: cpu, ")


def test_a_busy_run_exits_3_and_refuses_to_advise(builder, tmp_path, capsys, busy) -> None:
    assert _bench(["--input-shape", "2,16", "--retries", "0"], builder, tmp_path) == 3
    out = capsys.readouterr().out
    assert "(!) not trustworthy (re-run on a quiet machine):" in out and "  - Refusing to advise: 2 of 2" in out
    data = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert data["meta"]["untrusted"] == 2 and data["meta"]["load_before"]["busy"]
    assert all("other processes used 1.5" in r["untrusted"] for r in data["results"])


def test_a_pickled_model_file_loads_only_with_allow_pickle(tmp_path, capsys, quiet) -> None:
    torch.manual_seed(0)
    torch.save(nn.Linear(16, 16), tmp_path / "model.pt")
    args = ["--model", str(tmp_path / "model.pt"), "--input-shape", "2,16", "--paths", "fp32 eager", "--warmup", "0",
            "--repeats", "1", "--device", "cpu", "--no-plot", "--out", str(tmp_path / "run")]  # fmt: skip
    assert bench_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "lc-bench: error: " in err and "model.pt" in err and "allow_pickle" in err.replace("-", "_")
    assert not (tmp_path / "run").exists()
    with pytest.warns(UserWarning):
        assert bench_cli.main([*args, "--allow-pickle"]) == 0
    assert (tmp_path / "run" / "bench.json").is_file()
