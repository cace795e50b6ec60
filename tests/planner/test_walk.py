"""The walk's order, stopping rule, skips, resume and outputs, on a tiny model with faked measurements (the numbers a
fake measurer returns decide; the files, the state and the choice are real)."""

from __future__ import annotations

import json

import pytest
import torch
from planner_fakes import Crash, FakeMeasurer, cpu_facts, fake_steps, tiny_data, tiny_model

from lightning_compress.bench.results import BenchResult
from lightning_compress.planner.budget import Budget
from lightning_compress.planner.pruning_steps import NM24, Unstructured
from lightning_compress.planner.walk import compress

TIGHT = Budget(max_drop=0.5, latency_ratio=0.3)


def _walk(tmp_path, numbers, steps=None, budget=TIGHT, measurer=None, **kw):
    measurer = measurer or FakeMeasurer(numbers)
    steps = steps if steps is not None else fake_steps()
    plot = kw.pop("plot", False)
    result = compress(tiny_model(), tiny_data(), budget, tmp_path / "run", measurer=measurer, step_impls=steps,
                      facts=cpu_facts(), export_formats=(), progress=False, plot=plot, **kw)  # fmt: skip
    return result, measurer, steps


def test_a_budget_met_by_ptq_stops_there(tmp_path) -> None:
    result, measurer, steps = _walk(tmp_path, {"fp32": (0.98, 1.0), "ptq_int8": (0.978, 4.0)})
    assert result.met and result.chosen.name == "ptq_int8"
    assert measurer.calls == ["fp32", "ptq_int8"]
    assert [s.runs for s in steps.values()] == [1, 0, 0, 0, 0, 0, 0]
    assert [r.step for r in result.records] == ["ptq_int8"]
    state = json.loads((tmp_path / "run" / "planner_state.json").read_text())
    assert [r["step"] for r in state["records"]] == ["ptq_int8"]
    assert (tmp_path / "run" / "chosen" / "model.safetensors").is_file()


def test_a_budget_met_only_by_distillation_walks_every_earlier_step_and_records_why(tmp_path) -> None:
    numbers = {"fp32": (0.98, 1.0), "ptq_int8": (0.95, 4.0), "ptq_sensitivity": (0.976, 2.0),
               "qat_int8": (0.97, 4.0), "prune_distill": (0.977, 5.0)}  # fmt: skip
    skips = fake_steps(int4_weight_only="INT4 weight-only is for LLM-style models", nm24="no sparse tensor cores")
    result, measurer, _ = _walk(tmp_path, numbers, steps=skips)
    assert result.met and result.chosen.name == "prune_distill"
    assert measurer.calls == ["fp32", "ptq_int8", "ptq_sensitivity", "qat_int8", "prune_distill"]
    why = {r.step: (r.status, r.reason, [c.shortfalls for c in r.candidates]) for r in result.records}
    assert why["ptq_int8"] == ("done", "", [["accuracy drop 3.00 points > 0.5"]])
    assert why["ptq_sensitivity"] == ("done", "", [["latency 0.500x fp32 > 0.3x"]])
    assert why["qat_int8"] == ("done", "", [["accuracy drop 1.00 points > 0.5"]])
    assert why["int4_weight_only"][:2] == ("skipped", "INT4 weight-only is for LLM-style models")
    assert why["prune_distill"] == ("done", "", [[]])
    assert "unstructured" not in why  # not run: the budget is met
    table = (tmp_path / "run" / "candidates.md").read_text()
    assert "| ptq_sensitivity | ptq_sensitivity | 97.60 | 0.40 |" in table
    assert "latency 0.500x fp32 > 0.3x" in table and "skipped" in table


def test_steps_this_machine_cannot_benefit_from_are_skipped_with_the_reason(tmp_path) -> None:
    slow = BenchResult("CSR 90%", "unstructured", latency_ms=3.0, speedup=0.4)
    steps = fake_steps()
    steps["nm24"] = NM24()
    steps["unstructured"] = Unstructured(kernel_check=lambda *a, **k: slow)
    numbers = {name: (0.90, 1.0) for name in ["fp32", *steps]}
    numbers["fp32"] = (0.98, 1.0)
    result, measurer, _ = _walk(tmp_path, numbers, steps=steps)
    records = {r.step: r for r in result.records}
    assert records["nm24"].status == "skipped" and "sparse tensor cores" in records["nm24"].reason
    assert records["unstructured"].status == "skipped"
    assert records["unstructured"].reason.startswith(
        "no sparse kernel is faster than dense here: CSR 90% measured 0.40x"
    )
    assert "nm24" not in measurer.calls and "unstructured" not in measurer.calls


def test_unstructured_runs_where_the_sparse_kernel_measured_faster(tmp_path) -> None:
    fast = BenchResult("CSR 90%", "unstructured", latency_ms=0.5, speedup=1.6)
    steps = {"unstructured": Unstructured(kernel_check=lambda *a, **k: fast)}
    result = compress(tiny_model(), tiny_data(), TIGHT, tmp_path / "run", measurer=FakeMeasurer(
        {"fp32": (0.98, 1.0), "unstructured": (0.978, 4.0)}), step_impls=steps, steps=["unstructured"],
        facts=cpu_facts(), export_formats=(), progress=False, plot=False)  # fmt: skip
    [candidate] = result.records[0].candidates
    assert result.chosen is candidate and candidate.kind == "sparse" and "1.60x dense" in candidate.note
    zeros = [(w == 0).float().mean().item() for n, w in candidate_weights(candidate.artifact).items() if "weight" in n]
    assert all(abs(z - 0.9) < 0.02 for z in zeros), zeros


def candidate_weights(path):
    from lightning_compress.export.compressed_format import load_compressed

    return load_compressed(path)


def test_a_crash_after_step_3_resumes_at_step_4_without_redoing_finished_steps(tmp_path) -> None:
    numbers = {"fp32": (0.98, 1.0), "ptq_int8": (0.95, 4.0), "ptq_sensitivity": (0.976, 2.0),
               "qat_int8": (0.97, 4.0), "int4_weight_only": (0.979, 5.0)}  # fmt: skip
    with pytest.raises(Crash):
        _walk(tmp_path, numbers, measurer=FakeMeasurer(numbers, crash_at="int4_weight_only"))
    state = json.loads((tmp_path / "run" / "planner_state.json").read_text())
    assert [r["step"] for r in state["records"]] == ["ptq_int8", "ptq_sensitivity", "qat_int8"]
    result, measurer, steps = _walk(tmp_path, numbers)
    assert [s.runs for s in steps.values()][:4] == [0, 0, 0, 1]  # steps 1-3 not redone
    assert measurer.calls == ["int4_weight_only"]  # nor re-measured (the fp32 baseline neither)
    assert result.met and result.chosen.name == "int4_weight_only"
    assert [r.step for r in result.records] == ["ptq_int8", "ptq_sensitivity", "qat_int8", "int4_weight_only"]
    assert result.records[1].candidates[0].shortfalls == ["latency 0.500x fp32 > 0.3x"]  # read back from the state


def test_resuming_with_another_budget_is_refused(tmp_path) -> None:
    _walk(tmp_path, {"fp32": (0.98, 1.0), "ptq_int8": (0.978, 4.0)})
    with pytest.raises(ValueError, match="holds a planner walk with other budget"):
        _walk(tmp_path, {"fp32": (0.98, 1.0), "ptq_int8": (0.978, 4.0)}, budget=Budget(max_drop=2, latency_ratio=0.6))
    result, _, _ = _walk(tmp_path, {"fp32": (0.98, 1.0), "ptq_int8": (0.978, 4.0)},
                         budget=Budget(max_drop=2, latency_ratio=0.6), restart=True)  # fmt: skip
    assert result.met


def test_a_budget_no_candidate_meets_returns_the_best_and_says_by_how_much_it_misses(tmp_path) -> None:
    numbers = {name: (0.96, 2.0) for name in fake_steps()}
    numbers.update({"fp32": (0.98, 1.0), "qat_int8": (0.978, 2.5), "prune_distill": (0.977, 2.0)})
    result, _, _ = _walk(tmp_path, numbers, plot=True)
    assert not result.met and result.chosen.name == "qat_int8"  # within the accuracy budget, the fastest
    assert result.chosen.shortfalls == ["latency 0.400x fp32 > 0.3x"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "The budget cannot be met by any candidate tried" in report
    assert "**qat_int8**, which misses it by: latency 0.400x fp32 > 0.3x" in report
    assert (tmp_path / "run" / "pareto.png").stat().st_size > 1000


def test_explore_goes_on_and_chooses_the_fastest_candidate_that_meets_the_budget(tmp_path) -> None:
    numbers = {name: (0.90, 1.0) for name in fake_steps()}
    numbers.update({"fp32": (0.98, 1.0), "ptq_int8": (0.978, 4.0), "prune_distill": (0.976, 6.0)})
    result, measurer, _ = _walk(tmp_path, numbers, settings={"explore": True})
    assert result.met and result.chosen.name == "prune_distill"
    assert len(measurer.calls) == 8


def test_outputs_are_written_atomically(tmp_path, monkeypatch) -> None:
    import lightning_compress.planner.report as report
    import lightning_compress.planner.state as state

    written = []
    for module in (report, state):
        real = module.atomic_write_text
        monkeypatch.setattr(
            module, "atomic_write_text", lambda p, t, real=real: (written.append(p.name), real(p, t))[1]
        )
    _walk(tmp_path, {"fp32": (0.98, 1.0), "ptq_int8": (0.978, 4.0)})
    assert {"candidates.csv", "candidates.md", "report.md", "planner_state.json"} <= set(written)
    assert not list((tmp_path / "run").rglob("*.tmp"))
    rows = (tmp_path / "run" / "candidates.csv").read_text().splitlines()
    assert rows[0].startswith("candidate,step,accuracy %") and rows[2].startswith("ptq_int8,ptq_int8,97.80,0.20,")


def test_data_without_labels_is_refused_before_any_work(tmp_path) -> None:
    train, val = tiny_data()
    measurer = FakeMeasurer({})
    with pytest.raises(ValueError, match='metric="accuracy" needs labelled validation batches'):
        compress(tiny_model(), (train, [x for x, _ in val]), TIGHT, tmp_path / "run", measurer=measurer,
                 step_impls=fake_steps(), facts=cpu_facts(), progress=False)  # fmt: skip
    assert measurer.calls == [] and not (tmp_path / "run").exists()


def test_bad_arguments_are_listed_at_once(tmp_path) -> None:
    with pytest.raises(ValueError) as err:
        compress(torch.zeros(2), tiny_data(), TIGHT, tmp_path, steps=["ptq_int8", "magic"], metric="f1",
                 export_formats=["tflite"])  # fmt: skip
    text = str(err.value)
    for name in ("`model`", "`steps`", "`metric`", "`export_formats`"):
        assert name in text, text
    with pytest.raises(ValueError, match="`max_drop` must be a number >= 0"):
        compress(tiny_model(), tiny_data(), {"max_drop": -1, "latency_ratio": 0.3}, tmp_path)


def test_a_candidate_that_cannot_be_written_fails_its_step_and_the_walk_goes_on(tmp_path) -> None:
    from lightning_compress.planner.candidates import Candidate

    class Unsaveable:
        name = title = "ptq_int8"

        def skip_reason(self, ctx):  # noqa: ANN001, ANN202
            return None

        def run(self, ctx):  # noqa: ANN001, ANN202
            return [Candidate("ptq_int8", "pruned", ctx.network, "an MLP is no save_pruned model")]

    steps = fake_steps()
    steps["ptq_int8"] = Unsaveable()
    result, measurer, _ = _walk(tmp_path, {"fp32": (0.98, 1.0), "ptq_sensitivity": (0.978, 4.0)}, steps=steps)
    first = result.records[0]
    assert first.status == "failed" and first.reason.startswith("ptq_int8 could not be written or measured (")
    assert result.met and result.chosen.name == "ptq_sensitivity"
