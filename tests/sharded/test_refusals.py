"""Callback / strategy pairs that cannot work sharded are refused before training, naming the callback, the strategy and
what to use instead. The decision is one table, ``core.sharding.SHARDED_SUPPORT``; the unit tests check every callback's
``setup`` against it without launching processes (the strategy's class and sizes are read), and a 2-process run
(``tests/sharded/refusal_run.py``, gloo) checks the refusals inside ``Trainer.fit``: tensor parallelism, weights split
along another dimension, a model sharded only in part, QAT and PTQ under FSDP2."""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

import lightning_compress as lc
from lightning_compress.core.sharding import SHARDED_SUPPORT, check_sharding, tensor_parallel_size

ROOT = Path(__file__).resolve().parents[2]
REFUSALS = Path(__file__).with_name("refusal_run.py")


class DeepSpeedStrategy:
    """Stands for Lightning's DeepSpeedStrategy (not installed here): the check goes by the class name only."""


def trainer(strategy: Any, devices: int = 1) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False)


def model_parallel_trainer() -> L.Trainer:
    return trainer(ModelParallelStrategy())


def unsupported() -> list[Callback]:
    """One instance of every callback that refuses all sharded strategies."""
    return [
        lc.OneShotPruning(method="magnitude", sparsity=0.5), lc.QuantizationAwareTraining(),
        lc.PostTrainingQuantization(), lc.OneShotQuantization(), lc.ExportCallback(),
        lc.CompressionPlanner(max_drop=0.01, size_ratio=0.5, run_dir="unused"),
    ]  # fmt: skip


STRATEGIES = {
    "ModelParallelStrategy": model_parallel_trainer,
    "FSDPStrategy": lambda: SimpleNamespace(strategy=FSDPStrategy()),  # FSDPStrategy refuses the CPU at fit
    "DeepSpeedStrategy": lambda: SimpleNamespace(strategy=DeepSpeedStrategy()),
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("callback", unsupported(), ids=lambda c: type(c).__name__)
def test_whole_model_callbacks_refuse_every_sharded_strategy(callback: Callback, strategy: str) -> None:
    name = type(callback).__name__
    with pytest.raises(
        ValueError, match=rf"^{name} does not work under {strategy}: .*whole.*\. Use DDP \(`strategy='ddp'`\)"
    ):
        callback.setup(STRATEGIES[strategy](), None, "fit")  # fmt: skip
    check_sharding(trainer("auto"), callback)  # one process (and DDP): no refusal


def test_one_shot_pruning_names_whole_weights_and_allows_one_process() -> None:
    with pytest.raises(
        ValueError, match=r"OneShotPruning does not work under ModelParallelStrategy.*whole weights.*DDP"
    ):
        lc.OneShotPruning(method="magnitude", sparsity=0.5).setup(model_parallel_trainer(), None, "fit")
    lc.OneShotPruning(method="magnitude", sparsity=0.5).setup(trainer("auto"), None, "fit")


def test_qat_names_the_whole_graph() -> None:
    with pytest.raises(ValueError, match=r"QuantizationAwareTraining does not work under ModelParallelStrategy.*PT2E"):
        lc.QuantizationAwareTraining().setup(model_parallel_trainer(), None, "fit")


@pytest.mark.parametrize("callback", [lc.GradualMagnitudePruning(0.5), lc.NMSparsity(2, 4)])
def test_masking_callbacks_accept_model_parallel_and_refuse_fsdp1_and_deepspeed(callback: Callback) -> None:
    callback.setup(model_parallel_trainer(), None, "fit")  # FSDP2 through ModelParallelStrategy: supported
    name = type(callback).__name__
    with pytest.raises(ValueError, match=rf"{name} does not work under FSDPStrategy.*flat parameter.*ModelParallel"):
        callback.setup(STRATEGIES["FSDPStrategy"](), None, "fit")
    with pytest.raises(ValueError, match=rf"{name} does not work under DeepSpeedStrategy.*Use ModelParallelStrategy"):
        callback.setup(STRATEGIES["DeepSpeedStrategy"](), None, "fit")


def test_a_subclass_inherits_its_parents_entry() -> None:
    class MyPruning(lc.GradualMagnitudePruning):
        pass

    with pytest.raises(ValueError, match=r"MyPruning does not work under FSDPStrategy"):
        MyPruning(0.5).setup(STRATEGIES["FSDPStrategy"](), None, "fit")


@pytest.mark.parametrize(
    ("sizes", "devices", "expected"),
    [({}, 1, 1), ({}, 2, 2), ({"data_parallel_size": 2, "tensor_parallel_size": 1}, 2, 1),
     ({"data_parallel_size": 1, "tensor_parallel_size": 2}, 2, 2)],
)  # fmt: skip
def test_tensor_parallel_size_resolves_auto_as_lightning(sizes: dict[str, int], devices: int, expected: int) -> None:
    assert tensor_parallel_size(trainer(ModelParallelStrategy(**sizes), devices).strategy) == expected


@pytest.mark.parametrize("component", ["GradualMagnitudePruning", "NMSparsity", "DistillationModule"])
def test_tensor_parallelism_is_refused_before_training(component: str) -> None:
    for strategy in (ModelParallelStrategy(), ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=2)):
        with pytest.raises(ValueError, match=rf"{component} does not work with tensor parallelism.*size 2.*"
                                             r"data_parallel_size=<devices>, tensor_parallel_size=1"):  # fmt: skip
            check_sharding(trainer(strategy, devices=2), component)
    check_sharding(trainer(ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1), 2), component)


def test_distillation_module_checks_in_setup() -> None:
    student = lc.ClassificationModule(torch.nn.Linear(4, 3), num_classes=3)
    module = lc.DistillationModule(student, torch.nn.Linear(4, 3), alpha=0.0)
    module.trainer = trainer(ModelParallelStrategy(), devices=2)
    with pytest.raises(ValueError, match=r"DistillationModule does not work with tensor parallelism"):
        module.setup("fit")


def test_every_callback_of_the_library_is_in_the_table() -> None:
    """A new callback must say what it does sharded (the two listed here work under any strategy)."""
    anywhere = {"FinalStateCheckpoint", "CompressionCallback"}  # a ModelCheckpoint; the base class
    classes = {name for name in lc._EXPORTS if inspect.isclass(obj := getattr(lc, name))
               and (issubclass(obj, Callback) or name == "DistillationModule")}  # fmt: skip
    assert classes - anywhere == set(SHARDED_SUPPORT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # 9 fits in 2 processes: over a minute on the shared 2 cores
def test_refusals_inside_fit_two_processes(tmp_path: Path) -> None:
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "NODE_RANK": "0",
        }
        procs.append(subprocess.Popen([sys.executable, str(REFUSALS), str(tmp_path)], cwd=tmp_path, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))  # fmt: skip
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # the same refusal on both ranks, none left waiting
    results = ranks[0]
    expected = {
        "tp_gmp": r"GradualMagnitudePruning does not work with tensor parallelism.*size 2",
        "auto_nm": r"NMSparsity does not work with tensor parallelism.*size 2.*'auto'",
        "tp_distill": r"DistillationModule does not work with tensor parallelism",
        "cols_gmp": r"GradualMagnitudePruning cannot mask `model.0.weight`.*Shard\(dim=1\).*dimension 0",
        "cols_nm": r"NMSparsity cannot mask `model.2.weight`.*Shard\(dim=1\)",
        "part_gmp": r"GradualMagnitudePruning: the selected weights are partly sharded.*model.2.weight",
        "part_distill": r"DistillationModule under ModelParallelStrategy: 2 parameters are whole.*student.model.2",
        "qat": r"QuantizationAwareTraining does not work under ModelParallelStrategy.*PT2E.*DDP",
        "ptq": r"PostTrainingQuantization does not work under ModelParallelStrategy.*DDP",
    }
    import re

    assert set(results) == set(expected)
    for name, pattern in expected.items():
        result = results[name]
        assert result["error"] is not None and result["error"].startswith("ValueError: "), (name, result)
        assert re.search(pattern, result["error"]), (name, result["error"])
        assert result["global_step"] == 0, name  # refused before any training step
    # Strategy refusals come in `setup`, before configure_model shards anything; layout refusals once it has.
    assert [results[n]["configured"] for n in ("tp_gmp", "auto_nm", "tp_distill", "qat", "ptq")] == [False] * 5
    assert all(results[n]["configured"] for n in ("cols_gmp", "cols_nm", "part_gmp", "part_distill"))
