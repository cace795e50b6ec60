"""Callback / strategy pairs that cannot work sharded are refused before training, naming the strategy and what to use
instead (no processes are launched: the callbacks' ``setup`` checks the strategy's class)."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning
from lightning_compress.pruning.one_shot.one_shot_pruning import OneShotPruning
from lightning_compress.sparsity.nm_sparsity import NMSparsity


def model_parallel_trainer() -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, strategy=ModelParallelStrategy(), logger=False)


def test_one_shot_pruning_refuses_a_sharded_strategy() -> None:
    with pytest.raises(
        ValueError, match=r"OneShotPruning does not work under ModelParallelStrategy.*whole weights.*DDP"
    ):
        OneShotPruning(method="magnitude", sparsity=0.5).setup(model_parallel_trainer(), None, "fit")


@pytest.mark.parametrize("callback", [GradualMagnitudePruning(0.5), NMSparsity(2, 4)])
def test_masking_callbacks_accept_model_parallel_and_refuse_fsdp1(callback: object) -> None:
    callback.setup(model_parallel_trainer(), None, "fit")  # FSDP2 through ModelParallelStrategy: supported
    fsdp1 = SimpleNamespace(strategy=FSDPStrategy())
    name = type(callback).__name__
    with pytest.raises(ValueError, match=rf"{name} does not work under FSDPStrategy.*flat parameter.*ModelParallel"):
        callback.setup(fsdp1, None, "fit")


def test_one_shot_pruning_allows_ddp_and_one_process() -> None:
    OneShotPruning(method="magnitude", sparsity=0.5).setup(L.Trainer(accelerator="cpu", logger=False), None, "fit")
