"""Data-parallel calibration (2 CPU processes, gloo): with the model whole on both ranks and the calibration batches
split across them, SparseGPT, Wanda, GPTQ and AWQ give the same masks / quantized weights as one process on all the
batches; each rank saw only its share of the tokens and the statistics handed to each layer are those of all of
them; the layers of a block are dealt out to the ranks for their solves (pruning); too few batches, different
numbers on the ranks and a bad ``distributed`` are refused; ``OneShotPruning`` under Lightning's DDP runs each rank
on its share and ends with the single process's masks. The 2-process runs are
``tests/sharded/data_parallel_calibration_run.py`` in subprocesses.

Exactness: each batch's statistics are float32 and summed in float64, so grouping the sums by rank instead of batch
after batch changes only their float64 rounding, which reaches the float32 statistics only where it crosses a float32
rounding boundary (of the order of 2^-29 per element: not on these layers). So everything here is compared for
equality: the statistics, the masks, SparseGPT's updated weights, GPTQ's / AWQ's scales, zero points and weights (GPTQ
feeds each column's rounding error into the next, so a single float32 ulp in a Hessian flips codes, and the flips
grow block after block: float32 sums grouped by rank flipped 7 to 42 codes per layer here).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_compress.pruning.one_shot.prune import one_shot_prune
from lightning_compress.pruning.one_shot.sequential_calibration import LayerCalibration
from lightning_compress.quantization.weight_only.quantize import one_shot_quantize

SCRIPT = Path(__file__).with_name("data_parallel_calibration_run.py")
ROOT = Path(__file__).resolve().parents[2]

_spec = importlib.util.spec_from_file_location("data_parallel_calibration_run", SCRIPT)
assert _spec is not None and _spec.loader is not None
run_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_script)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("data_parallel_calibration")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)], cwd=out, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def single() -> Iterator[dict[str, Any]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs; restored, or every later test in this process runs on 1 thread
    try:
        yield run_script.results()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("method", ["sparsegpt", "wanda"])
def test_split_pruning_gives_the_single_process_masks(
    ranks: list[dict[str, Any]], single: dict[str, Any], method: str
) -> None:
    assert [r[method]["ranks"] for r in ranks] == [2, 2] and single[method]["ranks"] == 1
    assert [r[method]["batches"] for r in ranks] == [5, 5]
    masks = single[method]["masks"]
    assert len(masks) == 8  # embed, 3 x (fc1, fc2), head
    for r in ranks:
        assert r[method]["masks"].keys() == masks.keys()
        for name, mask in masks.items():
            assert torch.equal(r[method]["masks"][name], mask), f"{method} {name}"
            assert 1 - mask.float().mean() == 0.5
        for name, weight in single[method]["weights"].items():  # SparseGPT's kept weights updated the same way
            assert torch.equal(r[method]["weights"][name], weight), f"{method} {name}"
    for name in masks:  # and the ranks agree bit for bit
        assert torch.equal(ranks[0][method]["weights"][name], ranks[1][method]["weights"][name])


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_split_quantization_gives_the_single_process_grids(
    ranks: list[dict[str, Any]], single: dict[str, Any], method: str
) -> None:
    layers = single[method]
    assert len(layers) == 8
    assert [r[f"{method}_ranks"] for r in ranks] == [2, 2] and single[f"{method}_ranks"] == 1
    if method == "gptq":  # distributed=False: each rank alone on all the batches, the single process's weights too
        for r in ranks:
            assert r["gptq_opted_out"]["ranks"] == 1
            for name, q in layers.items():
                assert torch.equal(r["gptq_opted_out"]["weights"][name], q["weight"]), name
    if method == "awq":
        assert any(q["input_scale"] is not None for q in layers.values())
    for r in ranks:
        for name, q in layers.items():
            got = r[method][name]
            for key in ("scale", "zero", "weight"):
                assert torch.equal(got[key], q[key]), f"{name} {key}"
            if q["input_scale"] is None:  # AWQ kept the layer unscaled
                assert got["input_scale"] is None, name
            else:
                assert torch.equal(got["input_scale"], q["input_scale"]), name
    for name in layers:
        assert torch.equal(ranks[0][method][name]["weight"], ranks[1][method][name]["weight"])


def test_each_rank_saw_its_share_and_the_statistics_were_all_reduced(
    ranks: list[dict[str, Any]], single: dict[str, Any]
) -> None:
    whole = single["stats"]
    assert len(whole) == 8
    for name, s in whole.items():
        assert s["tokens"] == s["local_tokens"] == 60  # 5 batches of 12
        assert [r["stats"][name]["local_tokens"] for r in ranks] == [36, 24]  # batches 0, 2, 4 and 1, 3
        for r in ranks:
            got = r["stats"][name]
            assert got["tokens"] == 60
            for key in ("hessian", "norms", "abs_mean"):
                assert torch.equal(got[key], s[key]), f"{name} {key}"
        assert torch.equal(ranks[0]["stats"][name]["hessian"], ranks[1]["stats"][name]["hessian"])
        # opted out: each rank alone on all 5 batches, the single process's statistics exactly
        for r in ranks:
            assert r["opted_out"][name]["local_tokens"] == 60
            assert torch.equal(r["opted_out"][name]["hessian"], s["hessian"])


def test_the_layers_are_dealt_out_to_the_ranks(ranks: list[dict[str, Any]]) -> None:
    sources = ranks[0]["dealt"]["sources"]
    assert sources == ranks[1]["dealt"]["sources"]  # the same broadcasts, in the same order, on both ranks
    assert len(sources) == 8
    for rank, r in enumerate(ranks):  # each rank processed exactly the layers it is the source of
        assert r["dealt"]["processed"] == [name for name, src in sources if src == rank]
    owner = dict(sources)
    # per block, fc1 (64 x 32^2) and fc2 (32 x 64^2 = 2x fc1's cost) go to different ranks
    for i in range(3):
        assert owner[f"layers.{i}.fc2"] == 0 and owner[f"layers.{i}.fc1"] == 1
    assert owner["embed"] == 0 and owner["head"] == 0  # alone in their passes


def test_too_few_or_uneven_batches_are_refused_on_every_rank(ranks: list[dict[str, Any]]) -> None:
    for r in ranks:
        assert "splits the calibration batches across the 2 ranks" in r["too_few"]
        assert "only 1" in r["too_few"] and "distributed=False" in r["too_few"]
        assert "rank 0: 3, rank 1: 4" in r["uneven"]


def test_sharded_weights_are_refused(ranks: list[dict[str, Any]]) -> None:
    for r in ranks:
        message = r["sharded"]
        assert "needs whole weights, but 8 selected weight(s) are sharded DTensors (embed.weight and more)" in message
        assert "SparseGPT chooses masks across the rows of a column block" in message


def test_bad_distributed_argument_is_refused_before_work() -> None:
    with pytest.raises(ValueError, match=r"`distributed` can be 'auto' .* or False .*got True"):
        one_shot_prune(torch.nn.Linear(4, 4), [torch.randn(2, 4)], method="wanda", sparsity=0.5, distributed=True)
    with pytest.raises(ValueError, match=r"`distributed` can be 'auto'.*got 'yes'"):
        LayerCalibration({}, hessian=False, process=print, distributed="yes")
    with pytest.raises(ValueError, match=r"`distributed` can be 'auto' .* or False .*got 1"):
        one_shot_quantize(torch.nn.Linear(16, 4), [torch.randn(2, 16)], group_size=16, distributed=1)


@pytest.mark.slow  # Lightning starts a second process: two more imports of the library (~40 s on a busy 2-core CPU)
def test_one_shot_pruning_under_lightning_ddp_splits_the_calibration(tmp_path: Path, single: dict[str, Any]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "ddp"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"ddp{r}.pt", weights_only=False) for r in range(2)]
    # the first layer ran for the capture of block 0's inputs, again after it was pruned, and for the head: 3 passes
    # over each rank's share (batches 0, 2, 4 and 1, 3), against 3 x 5 in one process
    assert [r["calls"] for r in ranks] == [9, 6]
    for r in ranks:
        assert {name.removeprefix("net."): mask for name, mask in r["masks"].items()}.keys() == single["sparsegpt"][
            "masks"
        ].keys()
        for name, mask in r["masks"].items():
            assert torch.equal(mask, single["sparsegpt"]["masks"][name.removeprefix("net.")]), name
        for name, weight in r["weights"].items():
            assert torch.equal(weight, single["sparsegpt"]["weights"][name]), name
