"""GradualMagnitudePruning and NMSparsity under Lightning's ``ModelParallelStrategy`` (FSDP2, 2 CPU processes, gloo):
masks on the local shards, the distributed magnitude threshold against a single process on the same whole weights,
the exact global count, 2:4 on every shard, checkpoints (bit-exact resume after a kill; a consolidated checkpoint that
strict-loads into the plain architecture). The runs are ``tests/sharded/fsdp2_masks_run.py`` in subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_compress.core.bit_packing import unpack_mask
from lightning_compress.core.masks import ParameterMasks
from lightning_compress.pruning.magnitude import num_to_prune, prune_by_magnitude_
from lightning_compress.sparsity.nm_masks import is_nm_sparse

SCRIPT = Path(__file__).with_name("fsdp2_masks_run.py")
ROOT = Path(__file__).resolve().parents[2]
NM_LAYERS = ("net.0.weight", "net.4.weight")


def run(out: Path, mode: str, expect_ok: bool = True) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), mode], cwd=out, env=env, capture_output=True, text=True, timeout=240
    )
    if expect_ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def load(out: Path) -> list[dict[str, Any]]:
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def whole(parts: list[torch.Tensor]) -> torch.Tensor:
    """The whole tensor from the ranks' shards (rank order is row order)."""
    return torch.cat(parts, dim=0)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("fsdp2_straight")
    run(out, "straight")
    return out, load(out)


def test_shards_are_uneven_rows(straight: tuple[Path, list[dict[str, Any]]]) -> None:
    _, ranks = straight
    assert [r["world_size"] for r in ranks] == [2, 2]
    # 31 rows: 16 on rank 0, 15 on rank 1; the masks have the local shapes
    assert ranks[1]["row_start"]["net.0.weight"] == 16
    for r in ranks:
        for name, mask in zip(r["gmp_names"], r["gmp_masks"]):
            assert mask.shape == r["weights"][name].shape


def test_distributed_threshold_equals_single_process(straight: tuple[Path, list[dict[str, Any]]]) -> None:
    """At every mask update: the same threshold on both ranks, equal to one process's on the whole weights, the same
    masks, exactly round(target * n) pruned, and fewer bytes all-reduced than a gather would move."""
    _, ranks = straight
    names = ranks[0]["gmp_names"]
    assert len(ranks[0]["records"]) >= 2  # the schedule's updates (cubic ramp, then the final target)
    for rec0, rec1 in zip(ranks[0]["records"], ranks[1]["records"]):
        assert rec0["step"] == rec1["step"] and rec0["threshold"] == rec1["threshold"]
        weights = [whole([a, b]) for a, b in zip(rec0["before_weights"], rec1["before_weights"])]
        before = [whole([a, b]) for a, b in zip(rec0["before_masks"], rec1["before_masks"])]
        params = {n: torch.nn.Parameter(w.clone()) for n, w in zip(names, weights)}
        single = ParameterMasks(params)
        single.set_masks(before)
        selection = prune_by_magnitude_(single, rec0["target"])
        assert selection.threshold == rec0["threshold"]
        total = sum(w.numel() for w in weights)
        assert rec0["total"] == total and rec0["pruned"] == selection.pruned == num_to_prune(rec0["target"], total)
        for name, mask, a, b in zip(names, single.masks, rec0["after_masks"], rec1["after_masks"]):
            assert torch.equal(mask, whole([a, b])), name
        # int32 counts: 32,641 high-bit bins + 1 NaN/Inf count per tensor, two rounds of 256, one tie count per
        # tensor and shard; the same for any model size. A gather brings every element a rank does not hold.
        tensors = len(names)
        assert rec0["bytes_all_reduced"] == rec1["bytes_all_reduced"] == 4 * (32641 + tensors + 512 + 2 * tensors)
        for rec, r in ((rec0, 0), (rec1, 1)):
            local = sum(w.numel() for w in (rec0, rec1)[r]["before_weights"])
            assert rec["bytes_gather"] == 4 * (total - local)


def test_final_masks_exact_count_and_nm(straight: tuple[Path, list[dict[str, Any]]]) -> None:
    _, ranks = straight
    names = ranks[0]["gmp_names"]
    total = sum(whole([ranks[0]["weights"][n], ranks[1]["weights"][n]]).numel() for n in names)
    pruned = sum(int((~m).sum()) for r in ranks for m in r["gmp_masks"])
    assert pruned == num_to_prune(0.6, total) == sum(ranks[0]["gmp_num_pruned"].values())
    assert ranks[0]["gmp_num_pruned"] == ranks[1]["gmp_num_pruned"]
    for r in ranks:
        for name, mask in zip(names, r["gmp_masks"]):  # pruned weights stay zero on every shard
            assert bool((r["weights"][name][~mask] == 0).all()), name
        assert r["nm_names"] == list(NM_LAYERS)
        for name, mask in zip(r["nm_names"], r["nm_masks"]):  # 2:4 on every shard, in the masks and the weights
            assert is_nm_sparse(r["weights"][name], 2, 4) and is_nm_sparse(mask.float(), 2, 4), name
            assert bool((r["weights"][name][~mask] == 0).all())


def test_state_dicts_hold_whole_masks_on_rank0(straight: tuple[Path, list[dict[str, Any]]]) -> None:
    _, ranks = straight
    state0, state1 = ranks[0]["gmp_state"], ranks[1]["gmp_state"]
    assert state1["masks"] == {}  # only the first rank gets the gathered masks
    for i, name in enumerate(ranks[0]["gmp_names"]):
        shape = torch.Size(state0["shapes"][name])
        expected = whole([ranks[0]["gmp_masks"][i], ranks[1]["gmp_masks"][i]])
        assert torch.equal(unpack_mask(state0["masks"][name], shape), expected)
        assert state0["masks"][name].numel() == (shape.numel() + 7) // 8  # 1 bit per weight
    nm0 = ranks[0]["nm_state"]
    assert ranks[1]["nm_state"]["dense_pruned"] == {}
    for i, name in enumerate(ranks[0]["nm_names"]):  # the dense values of the pruned positions, in row order
        parts = [r["nm_dense"][i][~r["nm_masks"][i]] for r in ranks]
        assert torch.equal(nm0["dense_pruned"][name], torch.cat(parts))


def test_consolidated_checkpoint_strict_loads_into_plain_model(straight: tuple[Path, list[dict[str, Any]]]) -> None:
    from lightning.fabric.utilities.load import _load_distributed_checkpoint

    out, ranks = straight
    checkpoint = _load_distributed_checkpoint(out / "checkpoints" / "last.ckpt")
    state = checkpoint["state_dict"]
    assert not [k for k in state if "mask" in k]
    plain = torch.nn.Module()  # the unsharded architecture of the run's Net
    plain.net = torch.nn.Sequential(
        torch.nn.Linear(8, 31), torch.nn.ReLU(), torch.nn.Linear(31, 24), torch.nn.ReLU(), torch.nn.Linear(24, 4)
    )
    plain.load_state_dict(state, strict=True)
    for name, param in plain.named_parameters():
        assert torch.equal(param.detach(), whole([ranks[0]["weights"][name], ranks[1]["weights"][name]])), name
    gmp = next(v for k, v in checkpoint["callbacks"].items() if k.startswith("GradualMagnitudePruning"))
    for name, packed in gmp["masks"].items():  # the saved masks describe the consolidated weights' zeros
        mask = unpack_mask(packed, torch.Size(gmp["shapes"][name]))
        assert bool((state[name][~mask] == 0).all()), name


@pytest.mark.slow
def test_resume_after_kill_is_bit_exact(straight: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    """Both ranks SIGKILLed mid epoch 1, resumed from the epoch-0 distributed checkpoint: weights, momentum, masks and
    the N:M dense copy end bit-exactly as in the uninterrupted run."""
    _, reference = straight
    run(tmp_path, "kill", expect_ok=False)
    assert not (tmp_path / "rank0.pt").exists() and (tmp_path / "checkpoints" / "last.ckpt").is_dir()
    run(tmp_path, "resume")
    for ref, got in zip(reference, load(tmp_path)):
        assert got["global_step"] == ref["global_step"]
        for key in ("weights", "momentum"):
            for name, value in ref[key].items():
                assert torch.equal(got[key][name], value), (key, name)
        for key in ("gmp_masks", "nm_masks", "nm_dense"):
            assert all(torch.equal(a, b) for a, b in zip(got[key], ref[key])), key
        assert got["gmp_num_pruned"] == ref["gmp_num_pruned"]
