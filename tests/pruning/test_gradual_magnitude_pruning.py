import logging
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import QUIET, TinyNet, assert_pruned_are_zero, fit, loader
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_compress.core.masks import unpack_mask
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning
from lightning_compress.pruning.magnitude import num_to_prune
from lightning_compress.pruning.schedule import sparsity_at_step


class ZeroChecker(Callback):
    """Checks after every training batch (so after every optimizer step) that pruned weights are exactly zero."""

    def __init__(self, pruning: GradualMagnitudePruning) -> None:
        self.pruning = pruning
        self.checks = 0
        self.sparsity_by_step: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.checks += assert_pruned_are_zero(self.pruning)
        self.sparsity_by_step[trainer.global_step] = self.pruning.masks.sparsity()


def pruned_count(pruning: GradualMagnitudePruning) -> int:
    return sum(int((p.detach() == 0).sum()) for p in pruning.masks.params)


# --------------------------------------------------------------------------------------------------- exact sparsity
def test_global_scope_reaches_exact_sparsity_and_holds() -> None:
    L.seed_everything(0)
    model = TinyNet()
    pruning = GradualMagnitudePruning(0.8, end_epoch=2, update_every_n_steps=3, verbose=0)
    checker = ZeroChecker(pruning)
    fit(model, [pruning, checker], max_epochs=4)
    total = sum(p.numel() for p in pruning.masks.params)  # conv 12 + fc1 768 + fc2 96
    assert pruning.masks.names == ["conv.weight", "fc1.weight", "fc2.weight"]
    assert pruned_count(pruning) == num_to_prune(0.8, total) == sum(int((~m).sum()) for m in pruning.masks.masks)
    assert checker.checks == 32
    # reached at end_epoch (step 16), held afterwards, and not before
    assert checker.sparsity_by_step[16] == pytest.approx(num_to_prune(0.8, total) / total)
    assert checker.sparsity_by_step[15] < checker.sparsity_by_step[16]
    assert len({checker.sparsity_by_step[s] for s in range(16, 33)}) == 1


def test_fast_dev_run_prunes_to_the_final_target_at_once() -> None:
    L.seed_everything(0)
    pruning = GradualMagnitudePruning(0.8, start_epoch=2, end_epoch=8, verbose=0)
    checker = ZeroChecker(pruning)
    fit(TinyNet(), [pruning, checker], max_epochs=12, fast_dev_run=2)
    total = sum(p.numel() for p in pruning.masks.params)
    assert checker.checks == 2 and pruned_count(pruning) == num_to_prune(0.8, total)


def test_layer_scope_is_exact_per_layer() -> None:
    L.seed_everything(0)
    model = TinyNet()
    pruning = GradualMagnitudePruning(0.6, scope="layer", update_every_n_steps=4, verbose=0)  # end_epoch = the end
    fit(model, [pruning], max_epochs=2)
    for p in pruning.masks.params:
        assert int((p.detach() == 0).sum()) == num_to_prune(0.6, p.numel())


def test_schedule_follows_real_optimizer_steps_with_accumulation_and_limits() -> None:
    # 8 batches limited to 6, accumulating 2: 3 optimizer steps per epoch; start 0.5 -> step 2 (round half even),
    # end 2.5 -> step 8 (7.5 rounded to even); 4 epochs -> 12 steps.
    L.seed_everything(0)
    model = TinyNet()
    pruning = GradualMagnitudePruning(
        0.5, initial_sparsity=0.1, start_epoch=0.5, end_epoch=2.5, schedule="linear", update_every_n_steps=1, verbose=0
    )
    checker = ZeroChecker(pruning)
    fit(model, [pruning, checker], max_epochs=4, accumulate_grad_batches=2, limit_train_batches=6)
    total = sum(p.numel() for p in pruning.masks.params)
    assert (pruning._start_step, pruning._end_step) == (2, 8)
    assert checker.checks == 24
    # the masks of optimizer step s are set at its first micro-batch, whose end is the last record for global_step s
    for step in range(12):
        target = sparsity_at_step(step, 2, 8, 0.1, 0.5, "linear") if step >= 2 else 0.0
        assert checker.sparsity_by_step[step] == pytest.approx(num_to_prune(target, total) / total), step


def test_end_epoch_none_means_the_last_step() -> None:
    L.seed_everything(0)
    pruning = GradualMagnitudePruning(0.75, verbose=0, update_every_n_steps=5)
    checker = ZeroChecker(pruning)
    fit(TinyNet(), [pruning, checker], max_epochs=2)
    total = sum(p.numel() for p in pruning.masks.params)
    assert checker.sparsity_by_step[16] == pytest.approx(num_to_prune(0.75, total) / total)
    assert checker.sparsity_by_step[15] < checker.sparsity_by_step[16]


# ------------------------------------------------------------------------------------ zeros after every step
@pytest.mark.parametrize(
    ("optimizer", "trainer_kwargs"),
    [
        ("sgd", {}),
        ("adamw", {}),
        ("sgd", {"accumulate_grad_batches": 2}),
        ("adamw", {"gradient_clip_val": 0.1}),
        ("adamw", {"precision": "bf16-mixed"}),
    ],
    ids=["sgd-momentum", "adamw-weight-decay", "accumulate-2", "gradient-clipping", "bf16-mixed"],
)
def test_pruned_weights_stay_exactly_zero(optimizer: str, trainer_kwargs: dict) -> None:
    L.seed_everything(0)
    model = TinyNet(optimizer)
    pruning = GradualMagnitudePruning(0.7, end_epoch=2, update_every_n_steps=2, verbose=0)
    model.pruning = pruning
    checker = ZeroChecker(pruning)
    fit(model, [pruning, checker], max_epochs=3, **trainer_kwargs)
    assert checker.checks == 24
    total = sum(p.numel() for p in pruning.masks.params)
    assert pruned_count(pruning) == num_to_prune(0.7, total)
    if "gradient_clip_val" in trainer_kwargs:
        assert model.clip_checks > 0


def test_manual_optimisation_with_two_optimizers() -> None:
    L.seed_everything(0)
    model = TinyNet(manual=True)
    pruning = GradualMagnitudePruning(0.6, end_epoch=1, update_every_n_steps=2, verbose=0)
    model.pruning = pruning
    fit(model, [pruning], max_epochs=2)
    assert model.trainer.global_step == 32  # two optimizer steps per batch; the schedule counts batches
    assert (pruning._start_step, pruning._end_step) == (0, 8)
    total = sum(p.numel() for p in pruning.masks.params)
    assert pruned_count(pruning) == num_to_prune(0.6, total)


def test_two_callbacks_on_one_weight_combine_as_and() -> None:
    L.seed_everything(0)
    model = TinyNet()
    everything = GradualMagnitudePruning(0.5, end_epoch=1, update_every_n_steps=2, verbose=0)
    fc1_only = GradualMagnitudePruning(
        0.8, end_epoch=2, update_every_n_steps=3, filter_fn=lambda m, fqn: fqn == "fc1", verbose=0
    )
    assert everything.state_key != fc1_only.state_key
    fit(model, [everything, fc1_only, ZeroChecker(everything), ZeroChecker(fc1_only)], max_epochs=3)
    a, b = everything.masks["fc1.weight"], fc1_only.masks["fc1.weight"]
    assert torch.equal(model.fc1.weight.detach() != 0, a & b)
    assert int((~b).sum()) == num_to_prune(0.8, b.numel())
    assert not (~a & b).any()  # fc1_only saw the other callback's zeros as the smallest weights and pruned them first


# -------------------------------------------------------------------------------------------- logging, verbose
def test_logs_overall_and_per_layer_sparsity(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    L.seed_everything(0)
    pruning = GradualMagnitudePruning(0.5, end_epoch=1, update_every_n_steps=4, verbose=2)
    logger = CSVLogger(tmp_path, name="run")
    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    lightning_logger = logging.getLogger("lightning.pytorch")  # does not propagate to the root logger
    lightning_logger.addHandler(caplog.handler)
    try:
        fit(TinyNet(), [pruning], max_epochs=1, logger=logger)
    finally:
        lightning_logger.removeHandler(caplog.handler)
    text = (Path(logger.log_dir) / "metrics.csv").read_text()
    header = text.splitlines()[0].split(",")
    assert {"compress/sparsity", "compress/sparsity/fc1.weight", "compress/sparsity/conv.weight"} <= set(header)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("Sparsity: 0.00% -> ") for line in lines)
    assert any(line.startswith("  fc1.weight: ") for line in lines)
    assert any(line.startswith("Sparsity: ") and line.split(" -> ")[1].startswith("50.00%") for line in lines)


# ----------------------------------------------------------------------------------------- checkpoint and resume
class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def _pruning() -> GradualMagnitudePruning:
    # updates at steps 4, 9, 14, 19, 24: the resume at step 16 falls between two, so the saved masks must be used
    return GradualMagnitudePruning(0.9, start_epoch=0.5, end_epoch=3, update_every_n_steps=5, verbose=0)


def test_crash_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    epochs = 4
    # A: uninterrupted
    L.seed_everything(0)
    model_a, pruning_a = TinyNet(), _pruning()
    fit(model_a, [pruning_a], max_epochs=epochs)

    # B: same start, crashes mid-schedule (epoch 2, step 20) after writing checkpoints at the ends of epochs 0 and 1
    L.seed_everything(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(TinyNet(), [_pruning(), ckpt, CrashAt(20)], max_epochs=epochs, enable_checkpointing=True)
    assert sorted(os.listdir(tmp_path)) == ["epoch=0.ckpt", "epoch=1.ckpt"]
    state = torch.load(tmp_path / "epoch=1.ckpt", weights_only=True)
    (saved,) = [v for k, v in state["callbacks"].items() if k.startswith("GradualMagnitudePruning")]
    assert 0 < saved["sparsity"] < 0.9 and saved["last_update_step"] == 14

    # C: a fresh process would build a new model (another init) and resume from the mid-schedule checkpoint
    L.seed_everything(123)
    model_c, pruning_c = TinyNet(), _pruning()
    trainer = L.Trainer(max_epochs=epochs, callbacks=[pruning_c], **QUIET)
    trainer.fit(model_c, loader(), ckpt_path=tmp_path / "epoch=1.ckpt")

    for a, c in zip(pruning_a.masks.masks, pruning_c.masks.masks):
        assert torch.equal(a, c)
    for (name, a), c in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        assert torch.equal(a, c), name


def test_final_state_dict_loads_strictly_and_test_from_checkpoint(tmp_path: Path) -> None:
    L.seed_everything(0)
    model, pruning = TinyNet(), GradualMagnitudePruning(0.8, end_epoch=1, verbose=0)
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer = L.Trainer(max_epochs=2, callbacks=[pruning, ckpt], **{**QUIET, "enable_checkpointing": True})
    trainer.fit(model, loader())

    fresh = TinyNet()
    fresh.load_state_dict(model.state_dict(), strict=True)  # standard names: no weight_orig / weight_mask
    assert set(fresh.state_dict()) == {"conv.weight", "conv.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}

    state = torch.load(ckpt.best_model_path, weights_only=True)
    (saved,) = [v for k, v in state["callbacks"].items() if k.startswith("GradualMagnitudePruning")]
    keep = unpack_mask(saved["masks"]["fc1.weight"], saved["shapes"]["fc1.weight"])
    assert torch.equal(state["state_dict"]["fc1.weight"] != 0, keep)

    tester = L.Trainer(callbacks=[GradualMagnitudePruning(0.8, end_epoch=1, verbose=0)], **QUIET)
    (result,) = tester.test(TinyNet(), loader(), ckpt_path=ckpt.best_model_path, verbose=False)
    assert 0.0 <= result["test_acc"] <= 1.0


# ------------------------------------------------------------------------------------------------------- DDP
def test_ddp_masks_identical_on_every_rank(run_ddp_script) -> None:
    ranks = run_ddp_script("ddp_gmp_script.py")
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    for name in ranks[0]["masks"]:
        assert torch.equal(ranks[0]["masks"][name], ranks[1]["masks"][name]), name
    total = sum(torch.Size(s).numel() for s in ranks[0]["shapes"].values())
    for r in ranks:
        assert r["weights_differ_from_rank0_start"] is not None
        assert r["pruned_zeros"] == num_to_prune(0.75, total)


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"final_sparsity": 1.2}, r"`final_sparsity` must be in \[0, 1\), got 1.2"),
        ({"final_sparsity": 1.0}, r"`final_sparsity` must be in \[0, 1\), got 1.0"),
        ({"final_sparsity": -0.1}, r"`final_sparsity` must be in \[0, 1\), got -0.1"),
        (
            {"final_sparsity": 0.5, "initial_sparsity": 0.7},
            r"`initial_sparsity` must be <= `final_sparsity` \(0.5\), got 0.7",
        ),
        (
            {"final_sparsity": 0.5, "start_epoch": 2, "end_epoch": 2},
            r"`end_epoch` must be a number > `start_epoch` \(2\) or None, got 2",
        ),
        (
            {"final_sparsity": 0.5, "start_epoch": 3, "end_epoch": 1.5},
            r"`end_epoch` must be a number > `start_epoch` \(3\) or None, got 1.5",
        ),
        ({"final_sparsity": 0.5, "start_epoch": -1}, r"`start_epoch` must be a number >= 0, got -1"),
        ({"final_sparsity": 0.5, "scope": "net"}, r"`scope` can be global or layer, got 'net'"),
        ({"final_sparsity": 0.5, "schedule": "exp"}, r"`schedule` can be cubic, linear, constant or a callable"),
        (
            {"final_sparsity": 0.5, "schedule": lambda p: 2 * p},
            r"`schedule` must return values in \[0, 1\], got schedule\(1.0\) = 2.0",
        ),
        ({"final_sparsity": 0.5, "update_every_n_steps": 0}, r"`update_every_n_steps` must be an int >= 1, got 0"),
        ({"final_sparsity": 0.5, "verbose": 3}, r"`verbose` can be 0, 1 or 2, got 3"),
        ({"final_sparsity": 0.5, "filter_fn": "fc1"}, r"`filter_fn` must be a callable\(module, fqn\) -> bool or None"),
    ],
)
def test_bad_arguments_raise_in_init(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GradualMagnitudePruning(**kwargs)


def test_all_bad_arguments_are_reported_at_once() -> None:
    with pytest.raises(ValueError, match=r"`final_sparsity`.*; `scope`.*; `verbose`"):
        GradualMagnitudePruning(1.5, scope="x", verbose=5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"final_sparsity": 0.5, "filter_fn": lambda m, fqn: False},
            r"`filter_fn` selected no parameter of TinyNet",
        ),
        (
            {"final_sparsity": 0.5, "end_epoch": 5},
            r"the schedule ends at step 40 \(`end_epoch=5`, 8 optimizer steps per epoch\) but training has only 24"
            r" optimizer steps; lower `end_epoch` or train longer",
        ),
        (
            {"final_sparsity": 0.5, "start_epoch": 1, "end_epoch": 3.5},
            r"the schedule ends at step 28 .* training has only 24",
        ),
        (
            {"final_sparsity": 0.5, "start_epoch": 3},
            r"the schedule starts at step 24 \(`start_epoch=3`, 8 optimizer steps per epoch\) but training has only 24"
            r" optimizer steps; lower `start_epoch` or train longer",
        ),
    ],
)
def test_run_dependent_errors_raise_before_any_training_step(kwargs: dict, match: str) -> None:
    model = TinyNet()
    with pytest.raises(ValueError, match=match):
        fit(model, [GradualMagnitudePruning(**kwargs, verbose=0)], max_epochs=3)
    assert model.training_steps_run == 0
