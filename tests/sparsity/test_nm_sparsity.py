import logging
import warnings
from pathlib import Path

import conftest
import lightning as L
import pytest
import torch
from conftest import QUIET, fit, loader
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from lightning_compress.core.masks import unpack_mask
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning
from lightning_compress.pruning.magnitude import num_to_prune
from lightning_compress.sparsity.nm_masks import is_nm_sparse, nm_mask
from lightning_compress.sparsity.nm_sparsity import NMSparsity


class TinyNet(conftest.TinyNet):
    """The shared TinyNet with a Conv1d(1, 4, 4, padding=2), so reduction dims (4, 36, 24) are multiples of 4; tests
    set ``model.sparsity`` to the NMSparsity whose masks it checks."""

    kernel_size, padding, watch = 4, 2, "sparsity"


class EligibilityNet(TinyNet):
    """Adds a depthwise conv and a Linear(6, 4): neither can be made 2:4."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv1d(4, 4, 3, padding=1, groups=4)
        self.fc1 = nn.Linear(36, 6)
        self.fc2 = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.dw(torch.relu(self.conv(x.unsqueeze(1))))).flatten(1)
        return self.fc2(torch.relu(self.fc1(h)))


class NMChecker(Callback):
    """After every training batch (so after every optimizer step): masked weights are exactly zero and N:M."""

    def __init__(self, sparsity: NMSparsity) -> None:
        self.sparsity = sparsity
        self.nm_checks = 0
        self.fraction_by_step: dict[int, float] = {}
        self.masks_by_step: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # listed after the NMSparsity: what the masks are for the optimizer step `global_step`
        self.fraction_by_step[trainer.global_step] = self.sparsity.fraction
        self.masks_by_step[trainer.global_step] = [m.clone() for m in self.sparsity.masks.masks]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        s = self.sparsity
        for name, p, m in zip(s.masks.names, s.masks.params, s.masks.masks):
            assert (p.detach()[~m] == 0).all(), f"a pruned weight of {name} is non-zero"
            if s.fraction == 1.0:
                assert is_nm_sparse(p.detach(), s.n, s.m), name
        self.nm_checks += s.fraction == 1.0


# ---------------------------------------------------------------------------------------------- fixed policy
@pytest.mark.parametrize(
    ("optimizer", "trainer_kwargs"),
    [
        ("sgd", {}),
        ("adamw", {}),
        ("sgd", {"accumulate_grad_batches": 2}),
        ("adamw", {"gradient_clip_val": 0.1}),
    ],
    ids=["sgd-momentum", "adamw-weight-decay", "accumulate-2", "gradient-clipping"],
)
def test_fixed_masks_hold_after_every_step(optimizer: str, trainer_kwargs: dict) -> None:
    L.seed_everything(0)
    model = TinyNet(optimizer)
    sparsity = NMSparsity(start_epoch=1, policy="fixed", verbose=0)
    model.sparsity = sparsity
    checker = NMChecker(sparsity)
    fit(model, [sparsity, checker], **trainer_kwargs)
    steps_per_epoch = 8 // trainer_kwargs.get("accumulate_grad_batches", 1)
    assert sparsity._start_step == steps_per_epoch
    assert checker.fraction_by_step[steps_per_epoch - 1] == 0.0 and checker.fraction_by_step[steps_per_epoch] == 1.0
    assert sparsity.masks.names == ["conv.weight", "fc1.weight", "fc2.weight"]
    for p, m in zip(sparsity.masks.params, sparsity.masks.masks):
        assert int((~m).sum()) == p.numel() // 2
        assert torch.equal(p.detach() != 0, m)  # every kept weight moved off zero, every pruned one is zero
    # held: the masks at the start step are the final masks
    for a, b in zip(checker.masks_by_step[steps_per_epoch], sparsity.masks.masks):
        assert torch.equal(a, b)
    if "gradient_clip_val" in trainer_kwargs:
        assert model.clip_checks > 0


def test_fixed_masks_are_the_magnitude_nm_masks_at_the_start_step() -> None:
    L.seed_everything(0)
    model = TinyNet()
    seen: dict[str, torch.Tensor] = {}

    class Snapshot(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == 4:  # before NMSparsity's hook of this batch (it is listed after this one)
                seen.update({n: p.detach().clone() for n, p in pl_module.named_parameters() if n.endswith("weight")})

    sparsity = NMSparsity(start_epoch=0.5, verbose=0)
    fit(model, [Snapshot(), sparsity], max_epochs=1)
    for name, mask in zip(sparsity.masks.names, sparsity.masks.masks):
        assert torch.equal(mask, nm_mask(seen[name], 2, 4)), name


@pytest.mark.parametrize("policy", ["fixed", "dynamic"])
def test_manual_optimisation_with_two_optimizers(policy: str) -> None:
    L.seed_everything(0)
    model = TinyNet(manual=True)
    sparsity = NMSparsity(policy=policy, verbose=0)
    checker = NMChecker(sparsity)
    fit(model, [sparsity, checker], max_epochs=1)
    assert checker.nm_checks == 8


# -------------------------------------------------------------------------------------------- dynamic policy
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_dynamic_masks_move_and_weights_stay_nm(optimizer: str, tmp_path: Path) -> None:
    L.seed_everything(0)
    model = TinyNet(optimizer)
    sparsity = NMSparsity(policy="dynamic", update_every_n_steps=2, verbose=0)
    checker = NMChecker(sparsity)
    logger = CSVLogger(tmp_path, name="run")
    fit(model, [sparsity, checker], max_epochs=3, logger=logger)
    assert checker.nm_checks == 24
    first, last = checker.masks_by_step[0], sparsity.masks.masks
    assert any(not torch.equal(a, b) for a, b in zip(first, last)), "dynamic masks never changed"
    for p, m in zip(sparsity.masks.params, last):
        assert torch.equal(p.detach() != 0, m) and is_nm_sparse(p.detach())
    text = (Path(logger.log_dir) / "metrics.csv").read_text()
    assert "compress/nm_mask_changed" in text.splitlines()[0]


def test_dynamic_updates_the_dense_weights_with_the_sparse_point_gradient() -> None:
    """One SGD step by hand: dense <- dense - lr * (grad at the masked weights + decay * pruned dense weights)."""
    L.seed_everything(0)
    model = TinyNet()
    model.configure_optimizers = lambda: torch.optim.SGD(model.parameters(), lr=0.1)  # type: ignore[method-assign]
    sparsity = NMSparsity(policy="dynamic", update_every_n_steps=100, sr_ste_decay=0.5, verbose=0)
    fit(model, [sparsity], max_epochs=1, limit_train_batches=1)  # one step; masks from the initial weights

    L.seed_everything(0)
    ref = TinyNet()
    x, y = next(iter(loader()))
    masks = {n: nm_mask(p) for n, p in ref.named_parameters() if n.endswith("weight")}
    dense = {n: p.detach().clone() for n, p in ref.named_parameters()}
    with torch.no_grad():
        for n, m in masks.items():
            ref.get_parameter(n).mul_(m)
    nn.functional.cross_entropy(ref(x), y).backward()
    for name, p in ref.named_parameters():
        grad = p.grad + (0.5 * torch.where(masks[name], 0.0, dense[name]) if name in masks else 0.0)
        expected = dense[name] - 0.1 * grad
        if name in masks:
            assert torch.allclose(sparsity._dense[sparsity.masks.names.index(name)], expected, atol=1e-6), name
            expected = expected * nm_mask(expected)
        assert torch.allclose(model.get_parameter(name).detach(), expected, atol=1e-6), name


# ------------------------------------------------------------------------------------------------------ ramp
@pytest.mark.parametrize("policy", ["fixed", "dynamic"])
def test_ramp_grows_the_nm_groups(policy: str) -> None:
    L.seed_everything(0)
    model = TinyNet()
    sparsity = NMSparsity(start_epoch=0.5, ramp_epochs=1, policy=policy, update_every_n_steps=2, verbose=0)
    checker = NMChecker(sparsity)
    fit(model, [sparsity, checker], max_epochs=3)
    assert (sparsity._start_step, sparsity._full_step) == (4, 12)
    fractions = [checker.fraction_by_step[s] for s in range(24)]
    assert fractions[:6] == [0.0] * 6 and fractions[6] == 0.25 and fractions[8] == 0.5 and fractions[12:] == [1.0] * 12
    for s in range(24):  # in each layer, round(fraction * groups) groups are 2:4 and the others dense
        for m in checker.masks_by_step[s]:
            kept = m.reshape(-1, 4).sum(-1)
            assert int((kept == 2).sum()) == round(fractions[s] * kept.numel()) == int((kept != 4).sum()), s
    if policy == "fixed":  # masks only grow
        for s in range(1, 24):
            for a, b in zip(checker.masks_by_step[s - 1], checker.masks_by_step[s]):
                assert not (b & ~a).any()
    for p in sparsity.masks.params:
        assert is_nm_sparse(p.detach())


def test_ramp_that_ends_with_training_completes_on_the_last_step() -> None:
    L.seed_everything(0)
    sparsity = NMSparsity(ramp_epochs=2, update_every_n_steps=3, verbose=0)
    checker = NMChecker(sparsity)
    fit(TinyNet(), [sparsity, checker], max_epochs=2)
    assert checker.fraction_by_step[14] < 1.0 and checker.fraction_by_step[15] == 1.0


# ------------------------------------------------------------------------------------------------ with GMP
@pytest.mark.parametrize("policy", ["fixed", "dynamic"])
def test_composes_with_gradual_magnitude_pruning(policy: str) -> None:
    L.seed_everything(0)
    model = TinyNet("adamw")
    gmp = GradualMagnitudePruning(0.7, end_epoch=2, update_every_n_steps=2, verbose=0)
    nm = NMSparsity(start_epoch=0.5, policy=policy, update_every_n_steps=3, verbose=0)

    class Both(Callback):
        checks = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            for p, g in zip(gmp.masks.params, gmp.masks.masks):
                assert (p.detach()[~g] == 0).all()
            for p, m in zip(nm.masks.params, nm.masks.masks):
                assert (p.detach()[~m] == 0).all()
            Both.checks += 1

    fit(model, [gmp, nm, Both()], max_epochs=3)
    assert Both.checks == 24
    total = sum(p.numel() for p in gmp.masks.params)
    assert int(sum((~g).sum() for g in gmp.masks.masks)) == num_to_prune(0.7, total)  # GMP's target holds
    for name, p in zip(nm.masks.names, nm.masks.params):
        assert is_nm_sparse(p.detach()), name  # every weight 2:4
        g, m = gmp.masks[name], nm.masks[name]
        assert torch.equal(p.detach() != 0, g & m), name  # both masks, nothing else


# ------------------------------------------------------------------------------------------ checkpoint, resume
class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"policy": "fixed", "start_epoch": 0.5, "ramp_epochs": 2, "update_every_n_steps": 5},
        {"policy": "dynamic", "start_epoch": 0.5, "update_every_n_steps": 5},
    ],
    ids=["fixed-ramp", "dynamic"],
)
def test_crash_then_resume_equals_uninterrupted_run(kwargs: dict, tmp_path: Path) -> None:
    # updates at steps 4, 9, 14, 19, 24: the resume at step 16 falls between two
    epochs = 4
    L.seed_everything(0)
    model_a, nm_a = TinyNet("adamw"), NMSparsity(**kwargs, verbose=0)
    fit(model_a, [nm_a], max_epochs=epochs)

    L.seed_everything(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(TinyNet("adamw"), [NMSparsity(**kwargs, verbose=0), ckpt, CrashAt(20)], max_epochs=epochs,
            enable_checkpointing=True)  # fmt: skip
    state = torch.load(tmp_path / "epoch=1.ckpt", weights_only=True)
    (key,) = [k for k in state["callbacks"] if k.startswith("NMSparsity")]
    assert "'n': 2" in key and "'m': 4" in key
    saved = state["callbacks"][key]
    assert saved["last_update_step"] == 14
    assert ("dense_pruned" in saved) == (kwargs["policy"] == "dynamic")

    L.seed_everything(123)  # a fresh process: another initialisation, then the checkpoint
    model_c, nm_c = TinyNet("adamw"), NMSparsity(**kwargs, verbose=0)
    trainer = L.Trainer(max_epochs=epochs, callbacks=[nm_c], **QUIET)
    trainer.fit(model_c, loader(), ckpt_path=tmp_path / "epoch=1.ckpt")

    for a, c in zip(nm_a.masks.masks, nm_c.masks.masks):
        assert torch.equal(a, c)
    for (name, a), c in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        assert torch.equal(a, c), name


def test_checkpoint_holds_nm_weights_and_packed_masks(tmp_path: Path) -> None:
    L.seed_everything(0)
    model, nm = TinyNet(), NMSparsity(policy="dynamic", verbose=0)
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="last")
    fit(model, [nm, ckpt], max_epochs=1, enable_checkpointing=True)
    state = torch.load(ckpt.best_model_path, weights_only=True)
    (saved,) = [v for k, v in state["callbacks"].items() if k.startswith("NMSparsity")]
    keep = unpack_mask(saved["masks"]["fc1.weight"], saved["shapes"]["fc1.weight"])
    assert torch.equal(state["state_dict"]["fc1.weight"] != 0, keep)
    assert is_nm_sparse(state["state_dict"]["fc1.weight"])
    assert saved["dense_pruned"]["fc1.weight"].numel() == keep.numel() // 2
    fresh = TinyNet()
    fresh.load_state_dict(model.state_dict(), strict=True)  # standard names, nothing added


# ------------------------------------------------------------------------------------------- logs and verbose
def test_logs_nm_sparsity_and_a_rank_zero_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    L.seed_everything(0)
    logger = CSVLogger(tmp_path, name="run")
    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    lightning_logger = logging.getLogger("lightning.pytorch")
    lightning_logger.addHandler(caplog.handler)
    try:
        fit(TinyNet(), [NMSparsity(start_epoch=0.5, verbose=1)], max_epochs=1, logger=logger)
    finally:
        lightning_logger.removeHandler(caplog.handler)
    rows = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("compress/nm_sparsity")
    assert [float(r.split(",")[column]) for r in rows[1:] if r.split(",")[column]] == [0.5]
    assert {r.getMessage() for r in caplog.records if r.getMessage().startswith("N:M")} == {
        "N:M sparsity: 0.00% -> 50.00% (2:4, step 4)"
    }


# ------------------------------------------------------------------------------------------------ eligibility
def test_ineligible_layers_are_skipped_with_one_warning_listing_them() -> None:
    L.seed_everything(0)
    model = EligibilityNet()
    sparsity = NMSparsity(verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model, [sparsity], max_epochs=1, limit_train_batches=2)
    mine = [str(w.message) for w in caught if "NMSparsity" in str(w.message)]
    assert len(mine) == 1
    assert "leaves 2 selected layer(s) dense" in mine[0]
    assert "dw.weight (4, 1, 3): depthwise conv (groups = in_channels = 4)" in mine[0]
    assert "fc2.weight (4, 6): reduction dim 6 is not a multiple of m=4" in mine[0]
    assert sparsity.masks.names == ["conv.weight", "fc1.weight"]
    assert set(sparsity.skipped) == {"dw.weight", "fc2.weight"}
    assert (model.fc2.weight != 0).all() and is_nm_sparse(model.fc1.weight.detach())


def test_strict_raises_before_any_step() -> None:
    model = EligibilityNet()
    with pytest.raises(ValueError, match=r"strict=True\): 2 selected layer\(s\) cannot be made 2:4: ") as err:
        fit(model, [NMSparsity(strict=True, verbose=0)], max_epochs=1)
    assert "fc2.weight (4, 6): reduction dim 6" in str(err.value) and "dw.weight (4, 1, 3): depthwise" in str(err.value)
    assert model.training_steps_run == 0


def test_no_eligible_layer_raises_before_any_step() -> None:
    model = EligibilityNet()
    with pytest.raises(ValueError, match=r"found no layer that can be made 2:4 in EligibilityNet: fc2.weight"):
        fit(model, [NMSparsity(filter_fn=lambda mod, fqn: fqn == "fc2", verbose=0)], max_epochs=1)
    assert model.training_steps_run == 0


def test_start_after_training_raises_before_any_step() -> None:
    model = TinyNet()
    with pytest.raises(ValueError, match=r"N:M sparsity starts at step 24 \(`start_epoch=3`, 8 optimizer steps"):
        fit(model, [NMSparsity(start_epoch=3, verbose=0)], max_epochs=3)
    with pytest.raises(ValueError, match=r"the ramp ends at step 32 .* only 24 optimizer steps; lower `ramp_epochs`"):
        fit(model, [NMSparsity(start_epoch=1, ramp_epochs=3, verbose=0)], max_epochs=3)
    assert model.training_steps_run == 0


# -------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, r"`n` must be an int with 0 < n < m \(m=4\), got 0"),
        ({"n": -1}, r"`n` must be an int with 0 < n < m \(m=4\), got -1"),
        ({"n": 4}, r"`n` must be an int with 0 < n < m \(m=4\), got 4"),
        ({"n": 5, "m": 4}, r"`n` must be an int with 0 < n < m \(m=4\), got 5"),
        ({"n": 2.0}, r"`n` must be an int with 0 < n < m, got 2.0"),
        ({"m": 4.0}, r"`m` must be an int >= 2, got 4.0"),
        ({"m": True}, r"`m` must be an int >= 2, got True"),
        ({"policy": "sr-ste"}, r"`policy` can be fixed or dynamic, got 'sr-ste'"),
        ({"start_epoch": -1}, r"`start_epoch` must be a number >= 0, got -1"),
        ({"ramp_epochs": -0.5}, r"`ramp_epochs` must be a number >= 0, got -0.5"),
        ({"update_every_n_steps": 0}, r"`update_every_n_steps` must be an int >= 1, got 0"),
        ({"sr_ste_decay": -1.0}, r"`sr_ste_decay` must be a number >= 0, got -1.0"),
        ({"filter_fn": "fc1"}, r"`filter_fn` must be a callable\(module, fqn\) -> bool or None, got 'fc1'"),
        ({"strict": "yes"}, r"`strict` must be a bool, got 'yes'"),
        ({"verbose": 3}, r"`verbose` can be 0, 1 or 2, got 3"),
    ],
)
def test_bad_arguments_raise_in_init(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NMSparsity(**kwargs)


def test_all_bad_arguments_are_reported_at_once() -> None:
    with pytest.raises(ValueError, match=r"`n`.*; `policy`.*; `verbose`"):
        NMSparsity(n=0, policy="x", verbose=5)


# ------------------------------------------------------------------------------------------------------ configs
def _compose(overrides: list[str], output_dir: Path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from lightning_compress.cli.train import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def test_nm24_composes_with_gmp(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = _compose(["compression=[gmp,nm24]"], tmp_path)
    assert list(cfg.compression) == ["gmp", "nm24"]
    nm = instantiate(cfg.compression.nm24)
    assert isinstance(nm, NMSparsity) and (nm.n, nm.m) == (2, 4)


def test_mnist_nm24_preset_trains_a_2_4_model(tmp_path: Path) -> None:
    from lightning_compress.cli.train import train

    cfg = _compose(
        ["experiment=mnist_nm24", "trainer.max_epochs=1", "+trainer.limit_train_batches=4",
         "+trainer.limit_val_batches=2", "compression.nm24.start_epoch=0.5", "test=false", "logger=csv",
         "trainer.enable_progress_bar=false", "~callbacks.progress_bar", "~callbacks.model_summary"],
        tmp_path,
    )  # fmt: skip
    train(cfg)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert is_nm_sparse(state["model.features.4.weight"]) and is_nm_sparse(state["model.classifier.1.weight"])
    assert not is_nm_sparse(state["model.features.0.weight"].reshape(16, -1)[:, :8])  # the first conv stays dense


def test_fast_dev_run_applies_the_masks_from_the_first_step() -> None:
    model = TinyNet()
    sparsity = NMSparsity(start_epoch=5, ramp_epochs=3, verbose=0)
    fit(model, [sparsity], max_epochs=10, fast_dev_run=2)
    assert sparsity.fraction == 1.0 and all(is_nm_sparse(p.detach()) for p in sparsity.masks.params)


class SkipsSomeSteps(TinyNet):
    """On odd batches: the closure and `on_before_optimizer_step`, then no `optimizer.step()`, as the 16-mixed
    precision plugin does when its GradScaler finds inf/NaN gradients."""

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        if batch_idx % 2:
            from lightning.pytorch.trainer import call

            optimizer_closure()
            call._call_callback_hooks(self.trainer, "on_before_optimizer_step", optimizer)
        else:
            optimizer.step(closure=optimizer_closure)


@pytest.mark.parametrize("policy", ["fixed", "dynamic"])
def test_a_skipped_optimizer_step_leaves_the_weights_masked(policy: str) -> None:
    L.seed_everything(0)
    sparsity = NMSparsity(policy=policy, update_every_n_steps=3, verbose=0)
    checker = NMChecker(sparsity)
    fit(SkipsSomeSteps(), [sparsity, checker], max_epochs=1)
    assert checker.nm_checks == 8
