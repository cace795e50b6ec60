"""DistillationModule + GradualMagnitudePruning + dynamic NMSparsity in one Trainer under DDP (2 CPU processes)."""

from collections.abc import Callable

import torch

from lightning_compress.core.masks import unpack_mask
from lightning_compress.pruning.magnitude import num_to_prune
from lightning_compress.sparsity.nm_masks import is_nm_sparse


def test_distillation_gmp_and_nm_under_ddp_agree_on_every_rank(run_ddp_script: Callable[[str], list[dict]]) -> None:
    ranks = run_ddp_script("ddp_compose_script.py")
    assert [r["world_size"] for r in ranks] == [2, 2]
    # the callbacks act on the student only; the teacher is frozen and untouched
    assert set(ranks[0]["gmp"]["masks"]) == set(ranks[0]["nm"]["masks"]) == {
        "model.0.weight", "model.2.weight", "model.4.weight",  # relative to the student
    }  # fmt: skip
    for r in ranks:
        assert r["teacher_unchanged"] and not r["teacher_requires_grad"]
    total = sum(torch.Size(s).numel() for s in ranks[0]["gmp"]["shapes"].values())
    for kind in ("gmp", "nm"):
        for name, packed in ranks[0][kind]["masks"].items():
            # rank 1's weights were scaled: its own masks would differ; rank 0's broadcast makes them equal
            assert torch.equal(packed, ranks[1][kind]["masks"][name]), (kind, name)
    gmp_kept = sum(int(unpack_mask(m, ranks[0]["gmp"]["shapes"][n]).sum()) for n, m in ranks[0]["gmp"]["masks"].items())
    assert total - gmp_kept == num_to_prune(0.6, total)
    for r in ranks:
        for name, shape in r["nm"]["shapes"].items():
            weight = r["student"][name]
            nm = unpack_mask(r["nm"]["masks"][name], shape)
            gmp = unpack_mask(r["gmp"]["masks"][name], shape)
            assert is_nm_sparse(nm.float(), 2, 4)
            assert torch.all(weight[~(nm & gmp)] == 0), name  # both masks hold on every rank
