"""DistillationModule under Lightning's ``ModelParallelStrategy`` (FSDP2, 2 CPU processes, gloo): the student and the
frozen teacher both sharded, the teacher cache per rank, GradualMagnitudePruning on the sharded student in the same
Trainer (runs: ``tests/sharded/distill_fsdp2_run.py`` in subprocesses); the inference_mode trap of torch 2.14 (an
FSDP2 module that once ran under inference_mode fails at later forwards), avoided by running sharded teachers under
no_grad with inference mode off; per-rank cache files (one process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_compress.core.tensor_file import read_tensor_file
from lightning_compress.distillation.teacher_cache import FORMAT, TeacherCache
from lightning_compress.pruning.magnitude import num_to_prune

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("teacher_inference_mode_run.py")
DISTILL = Path(__file__).with_name("distill_fsdp2_run.py")


def test_sharded_teacher_runs_repeatedly_without_grads(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PORT": "29547"}
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """The cached, the uncached and the feature-pair fit, one after the other in the same two processes."""
    out = tmp_path_factory.mktemp("distill")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(DISTILL), str(out)], cwd=out, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {mode: [torch.load(out / mode / f"rank{r}.pt", weights_only=False) for r in range(2)]
            for mode in ("cached", "plain", "features")}  # fmt: skip


@pytest.mark.slow  # the three fits in 2 processes take over a minute on the shared 2 cores
def test_teacher_is_sharded_frozen_and_outside_the_optimizer(runs: dict[str, list[dict[str, Any]]]) -> None:
    for ranks in runs.values():
        assert [r["world_size"] for r in ranks] == [2, 2]
        assert ranks[0]["fingerprint"] == ranks[1]["fingerprint"]  # of the whole teacher, taken before sharding
        for r in ranks:
            assert r["student_dtensor"] and r["teacher_dtensor"]
            for name, shape in r["teacher_global_shapes"].items():  # each rank holds half the rows
                assert r["teacher_local_shapes"][name] == (shape[0] // 2, *shape[1:]), name
            assert not r["teacher_requires_grad"] and r["teacher_grads"] == []  # no gradient ever reached it
            assert r["teacher_in_optimizer"] == [] and r["teacher_optimizer_state"] == []
            projections = len(r["projections"])  # the feature run's projection: sharded too, trained with the student
            assert r["optimizer_params"] == r["student_params"] + projections and r["student_params"] == 4
            assert all(sharded and trained for _, sharded, trained in r["projections"])
            assert r["teacher_in_state_dict"] == []  # nor in the checkpoint
    assert [len(r["projections"]) for r in runs["features"]] == [1, 1]  # WidthProjection(31 -> 32).linear.weight


@pytest.mark.slow  # the three fits in 2 processes take over a minute on the shared 2 cores
def test_student_learns_and_gmp_prunes_the_sharded_student(runs: dict[str, list[dict[str, Any]]]) -> None:
    for ranks in runs.values():
        for r in ranks:
            losses = r["losses"]
            assert len(losses) == 12  # 3 epochs x 4 steps of 8 examples per rank
            assert sum(losses[-4:]) < 0.5 * sum(losses[:4])  # the KD loss of the last epoch under half the first's
        pruned = ranks[0]["gmp_num_pruned"]
        assert pruned == ranks[1]["gmp_num_pruned"]
        assert sum(pruned.values()) == num_to_prune(0.5, ranks[0]["gmp_total"]) == 186  # of 8*31 + 31*4 weights
        zeros = sum(int((r["student"][name] == 0).sum()) for r in ranks for name in pruned)
        assert zeros == 186  # pruned weights are zero on both shards (and no other weight is exactly zero)


@pytest.mark.slow  # the three fits in 2 processes take over a minute on the shared 2 cores
def test_cached_and_uncached_runs_train_the_same_student(runs: dict[str, list[dict[str, Any]]]) -> None:
    """Bit-exact here (tolerance 0): the cached rows are the teacher's outputs on the same batches, or on a subset of
    them, and the sharded teacher's forward gives the same bits on them."""
    for cached, plain in zip(runs["cached"], runs["plain"]):
        assert cached["losses"] == plain["losses"]
        for name, value in plain["student"].items():
            assert torch.equal(cached["student"][name], value), name


@pytest.mark.slow  # the three fits in 2 processes take over a minute on the shared 2 cores
def test_each_rank_caches_exactly_its_own_batches(runs: dict[str, list[dict[str, Any]]]) -> None:
    ranks = runs["cached"]
    seen = [{key for batch in r["batch_keys"] for key in batch} for r in ranks]
    assert [len(s) for s in seen] == [20, 32]  # rank 0: 32 examples, 12 of them repeats (see the run script)
    assert not seen[0] & seen[1]  # the sampler deals disjoint examples: nothing crosses ranks
    for r, keys in zip(ranks, seen):
        cache = r["cache"]
        assert set(cache["keys"]) == set(cache["own"]) == keys and len(cache["keys"]) == len(keys)
        assert cache["misses"] == len(keys) and cache["hits"] == 3 * 32 - len(keys)  # each example computed once
        tensors, meta = read_tensor_file(Path(cache["file"]), FORMAT, "teacher cache file", "a teacher-cache file")
        assert meta["rows"] == str(len(keys)) and tensors["logits"].shape == (len(keys), 4)
        assert {bytes(row.tolist()) for row in tensors["keys"]} == keys  # the file holds this rank's rows only
    # Rank 0's third batch was all cached while rank 1 needed the sharded teacher: rank 0 ran it with the others
    # (the forward is a collective) once; rank 1 always had something missing in epoch 0 and nothing after.
    assert [r["cache"]["collective_runs"] for r in ranks] == [1, 0]


def test_rank_files_do_not_absorb_other_ranks_rows(tmp_path: Path) -> None:
    """A rerun reads every rank's file (a row is right whichever rank computed it), but a rank writes back only its
    own rows: the files stay the ranks' own, not copies of each other."""

    def teacher(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.sum(1), -x.sum(1), x[:, 0]], dim=1)

    a, b, c = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    for rank, x in ((0, a), (1, b)):
        cache = TeacherCache(tmp_path, fingerprint="f")
        cache.logits(x, teacher)
        cache.save(rank=rank)
    rerun0 = TeacherCache(tmp_path, fingerprint="f")
    assert rerun0.load(rank=0) == 8  # both files
    got = rerun0.logits(torch.cat([b, c]), teacher)  # b from rank 1's file, c new
    assert torch.equal(got, teacher(torch.cat([b, c]))) and rerun0.hits == 4 and rerun0.misses == 4
    rerun0.save(rank=0)
    files = {rank: read_tensor_file(rerun0.file(rank), FORMAT, "f", "f")[0]["keys"].shape[0] for rank in (0, 1)}
    assert files == {0: 8, 1: 4}  # rank 0: a and c; rank 1's rows b not copied into it
    assert len(rerun0.keys()) == 12 and len(rerun0.keys(own=True)) == 8
