"""DistillationModule: the loss, a frozen teacher outside every checkpoint and optimizer, exact resume, composition with
compression callbacks, feature pairs, the teacher cache, and clear errors on bad input."""

from __future__ import annotations

import copy
import functools
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import QUIET
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_compress.distillation.distillation_module import DistillationModule
from lightning_compress.distillation.teacher import load_teacher
from lightning_compress.models import SmallCNN
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning
from lightning_compress.sparsity.nm_masks import is_nm_sparse
from lightning_compress.sparsity.nm_sparsity import NMSparsity
from lightning_compress.training.classification import ClassificationModule

SGD = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)
CLASSES = 4


def dataset(n: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, :, :4].mean((1, 2, 3)) > 0).long()
    return TensorDataset(x, y)


def loader(n: int = 64, batch_size: int = 16) -> DataLoader:
    return DataLoader(dataset(n), batch_size=batch_size, shuffle=False)


def student_cnn() -> SmallCNN:
    return SmallCNN(num_classes=CLASSES, channels=(4, 8), hidden=16, image_size=8)


def teacher_cnn(num_classes: int = CLASSES) -> SmallCNN:
    return SmallCNN(num_classes=num_classes, channels=(8, 16), hidden=32, image_size=8)


def student_module() -> ClassificationModule:
    return ClassificationModule(student_cnn(), num_classes=CLASSES, optimizer=SGD)


FEATURES = [
    {"student": "features.4", "teacher": "features.4"},  # (B, 8, 4, 4) -> (B, 16, 4, 4): a 1x1 projection
    {"student": "classifier.2", "teacher": "classifier.2", "weight": 0.5, "loss": "cosine"},  # (B, 16) -> (B, 32)
]


class CountCalls:
    def __init__(self, module: nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        self.calls += 1


def fit(
    module: L.LightningModule,
    callbacks: list[Callback] | None = None,
    epochs: int = 2,
    val: bool = False,
    **kwargs: Any,
) -> L.Trainer:
    trainer = L.Trainer(max_epochs=epochs, callbacks=callbacks or [], **{**QUIET, **kwargs})
    trainer.fit(module, loader(), loader(32) if val else None)
    return trainer


# ------------------------------------------------------------------------------------------------------------ the loss
def test_training_step_is_alpha_ce_plus_t2_kl() -> None:
    torch.manual_seed(0)
    teacher = teacher_cnn()
    module = DistillationModule(student_module(), teacher, temperature=3.0, alpha=0.3)
    x, y = next(iter(loader()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer
        loss = module.training_step((x, y), 0)
    s = module.student(x)
    with torch.no_grad():
        t = teacher(x)
    p_t, log_p_s = torch.softmax(t / 3, -1), torch.log_softmax(s / 3, -1)
    kd = 9 * (p_t * (p_t.log() - log_p_s)).sum(-1).mean()
    torch.testing.assert_close(loss, 0.3 * F.cross_entropy(s, y) + 0.7 * kd)


def test_alpha_one_is_plain_cross_entropy_bit_for_bit() -> None:
    torch.manual_seed(0)
    plain = student_module()
    distilled_student = copy.deepcopy(plain)
    teacher = teacher_cnn()
    calls = CountCalls(teacher)
    fit(plain)
    module = DistillationModule(distilled_student, teacher, alpha=1.0)
    fit(module)
    assert calls.calls == 0  # no wasted teacher work
    for (name, a), b in zip(plain.state_dict().items(), module.student.state_dict().values()):
        assert torch.equal(a, b), name


def test_temperature_schedule_follows_training_progress() -> None:
    seen: dict[int, float] = {}

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            seen[trainer.global_step - 1] = float(trainer.callback_metrics["distill/temperature"])

    module = DistillationModule(student_module(), teacher_cnn(), temperature=lambda p: 8.0 - 6.0 * p, alpha=0.5)
    fit(module, [Record()], epochs=2)  # 8 steps
    assert seen == {step: 8.0 - 6.0 * step / 8 for step in range(8)}


# ------------------------------------------------------------------------------------------------------- the teacher
def test_teacher_is_frozen_out_of_the_optimizer_and_in_eval_mode() -> None:
    torch.manual_seed(0)
    teacher = teacher_cnn()
    before = copy.deepcopy(teacher.state_dict())
    module = DistillationModule(student_module(), teacher, alpha=0.5, features=FEATURES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = fit(module)
    assert not [w for w in caught if "eval mode" in str(w.message)]
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, before[name]), name  # BatchNorm running stats included
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert not teacher.training and not any(m.training for m in teacher.modules())
    optimizer = trainer.optimizers[0]
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not in_optimizer & {id(p) for p in teacher.parameters()}
    assert not set(map(id, optimizer.state)) & {id(p) for p in teacher.parameters()}
    assert {id(p) for p in module.projections.parameters()} <= in_optimizer
    assert {id(p) for p in module.student.parameters()} <= in_optimizer
    module.train()
    assert module.student.training and not teacher.training
    assert all(id(p) not in {id(q) for q in teacher.parameters()} for p in module.parameters())


def test_checkpoint_holds_the_student_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = teacher_cnn()
    module = DistillationModule(student_module(), teacher, features=FEATURES)
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="last")
    fit(module, [ckpt], epochs=1, enable_checkpointing=True)
    state = torch.load(ckpt.best_model_path, weights_only=True)
    keys = list(state["state_dict"])
    assert keys and all(k.startswith(("student.", "projections.")) for k in keys)
    assert not any("teacher" in k for k in keys)
    saved = sum(v.numel() for v in state["state_dict"].values())
    expected = sum(v.numel() for v in module.student.state_dict().values()) + sum(
        p.numel() for p in module.projections.parameters()
    )
    assert saved == expected < sum(p.numel() for p in teacher.parameters())
    assert state["distillation"]["teacher"] == "SmallCNN"
    assert state["distillation"]["projections"] == [[8, 16, 1], [16, 32, -1]]

    # a fresh module (teacher from its source, projections from the checkpoint) tests from the checkpoint strictly
    fresh = DistillationModule(student_module(), teacher, features=FEATURES)
    tester = L.Trainer(**QUIET)
    (result,) = tester.test(fresh, loader(), ckpt_path=ckpt.best_model_path, verbose=False)
    assert 0 <= result["test/acc"] <= 1
    for name, value in module.student.state_dict().items():
        assert torch.equal(value, fresh.student.state_dict()[name]), name


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def test_crash_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    """The teacher comes from a file and is reloaded by the resumed process; projections and momentum resume."""
    torch.manual_seed(7)
    teacher_file = tmp_path / "teacher.pt"
    torch.save(teacher_cnn().state_dict(), teacher_file)

    def build() -> DistillationModule:
        return DistillationModule(
            student_module(),
            teacher_file,
            teacher_model=teacher_cnn(),
            alpha=0.3,
            temperature=lambda p: 4.0 - 2.0 * p,
            features=FEATURES,
        )

    def pruning() -> GradualMagnitudePruning:
        return GradualMagnitudePruning(0.5, start_epoch=0.5, end_epoch=3, update_every_n_steps=3, verbose=0)

    L.seed_everything(0)
    module_a = build()
    fit(module_a, [pruning()], epochs=4, val=True)

    L.seed_everything(0)
    ckpt_dir = tmp_path / "ckpt"
    ckpt = ModelCheckpoint(dirpath=ckpt_dir, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(build(), [pruning(), ckpt, CrashAt(10)], epochs=4, val=True, enable_checkpointing=True)
    assert sorted(os.listdir(ckpt_dir)) == ["epoch=0.ckpt", "epoch=1.ckpt"]

    L.seed_everything(123)  # a fresh process: other initial weights, the teacher reloaded from its file
    module_c = build()
    trainer = L.Trainer(max_epochs=4, callbacks=[pruning()], **QUIET)
    trainer.fit(module_c, loader(), loader(32), ckpt_path=ckpt_dir / "epoch=1.ckpt")
    assert 0 <= trainer.callback_metrics["val/acc"] <= 1  # the student's own validation metrics

    state_a, state_c = module_a.state_dict(), module_c.state_dict()
    assert list(state_a) == list(state_c)
    for name, value in state_a.items():
        assert torch.equal(value, state_c[name]), name


# --------------------------------------------------------------------------------------------------- composition
def test_pruning_touches_the_student_only() -> None:
    torch.manual_seed(0)
    teacher = teacher_cnn()
    before = copy.deepcopy(teacher.state_dict())
    module = DistillationModule(student_module(), teacher, alpha=0.5)
    pruning = GradualMagnitudePruning(0.75, end_epoch=1, update_every_n_steps=1, verbose=0)
    fit(module, [pruning], epochs=2)
    # the same names as pruning the ClassificationModule alone
    assert pruning.masks.names == [
        "model.features.0.weight",
        "model.features.4.weight",
        "model.classifier.1.weight",
        "model.classifier.4.weight",
    ]
    weights = [module.student.get_parameter(n) for n in pruning.masks.names]
    total = sum(w.numel() for w in weights)
    assert sum(int((w == 0).sum()) for w in weights) == round(0.75 * total)
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert module.compression_target is module.student


@pytest.mark.parametrize("policy", ["fixed", "dynamic"])
def test_nm_sparsity_touches_the_student_only(policy: str) -> None:
    torch.manual_seed(0)
    teacher = teacher_cnn()
    before = copy.deepcopy(teacher.state_dict())
    module = DistillationModule(student_module(), teacher, alpha=0.5)
    nm = NMSparsity(policy=policy, skip_first_conv=True, verbose=0)
    fit(module, [nm], epochs=1)
    assert all(name.startswith("model.") for name in nm.masks.names)
    for name in nm.masks.names:
        weight = module.student.get_parameter(name).detach()
        assert is_nm_sparse(weight, 2, 4) and int((weight == 0).sum()) >= weight.numel() // 2, name
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, before[name]), name


# ------------------------------------------------------------------------------------------------------ features
def test_feature_pairs_build_projections_from_the_first_batch_and_train_them() -> None:
    torch.manual_seed(0)
    module = DistillationModule(student_module(), teacher_cnn(), alpha=0.0, features=FEATURES)
    assert len(module.projections) == 0  # built in setup, from one batch of the train dataloader
    seen: list[dict[str, float]] = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            seen.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    trainer = L.Trainer(max_epochs=3, callbacks=[Record()], **QUIET)
    projection_weights = {}

    class Snapshot(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            projection_weights.update({k: v.clone() for k, v in pl_module.projections.state_dict().items()})

    trainer.callbacks.append(Snapshot())
    trainer.fit(module, loader())
    assert [type(p).__name__ for p in module.projections] == ["WidthProjection", "WidthProjection"]
    assert module.projections[0].linear.weight.shape == (16, 8) and module.projections[0].dim == 1
    assert module.projections[1].linear.weight.shape == (32, 16) and module.projections[1].dim == -1
    for name, value in module.projections.state_dict().items():
        assert not torch.equal(value, projection_weights[name]), f"{name} was not trained"
    assert seen[-1]["train/feature_0"] < seen[0]["train/feature_0"]
    assert "train/kd" in seen[-1] and "train/feature_1" in seen[-1]


def test_same_width_features_need_no_projection() -> None:
    teacher = SmallCNN(num_classes=CLASSES, channels=(4, 16), hidden=32, image_size=8)  # first stage as wide
    module = DistillationModule(
        student_module(), teacher, features=[{"student": "features.0", "teacher": "features.0", "loss": "mse"}]
    )
    module.prepare(next(iter(loader())))
    assert isinstance(module.projections[0], nn.Identity) and not list(module.projections.parameters())


transformers = pytest.importorskip("transformers")


def tiny_bert(hidden: int, layers: int, attn: str = "eager", num_labels: int = 2) -> Any:
    config = transformers.BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        vocab_size=100,
        num_labels=num_labels,
        attn_implementation=attn,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForSequenceClassification(config)


def text_loader(n: int = 16, batch_size: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (n, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, 7:] = 0
    labels = (ids[:, 0] > 50).long()
    rows = [{"input_ids": i, "attention_mask": m, "labels": y} for i, m, y in zip(ids, mask, labels)]
    return DataLoader(rows, batch_size=batch_size)  # default collate: a dict of stacked tensors


def test_hugging_face_hidden_states_attentions_and_layers() -> None:
    torch.manual_seed(0)
    teacher, student = tiny_bert(32, 4), tiny_bert(16, 2)
    features = [
        {"student": "hidden_states.2", "teacher": "hidden_states.4"},  # (B, L, 16) -> (B, L, 32)
        {"student": "attentions.1", "teacher": "attentions.3", "weight": 10.0},  # (B, 2, L, L): same shape
        {"student": "bert.encoder.layer.0", "teacher": "bert.encoder.layer.1", "loss": "cosine"},
    ]
    module = DistillationModule(student, teacher, num_classes=2, alpha=0.5, features=features, temperature=2.0)
    calls = CountCalls(teacher)
    trainer = L.Trainer(max_epochs=1, **QUIET)
    trainer.fit(module, text_loader())
    assert calls.calls == 1 + 4  # the probe in setup, then one call per training step
    kinds = [type(p).__name__ for p in module.projections]
    assert kinds == ["WidthProjection", "Identity", "WidthProjection"]
    assert module.projections[0].linear.weight.shape == (32, 16)
    metrics = trainer.callback_metrics
    assert all(torch.isfinite(metrics[f"train/feature_{i}"]) for i in range(3))


def test_attention_maps_need_eager_attention() -> None:
    module = DistillationModule(
        tiny_bert(16, 2, attn="sdpa"),
        tiny_bert(32, 4),
        num_classes=2,
        features=[{"student": "attentions.1", "teacher": "attentions.3"}],
    )
    batch = next(iter(text_loader()))
    with pytest.raises(
        ValueError, match='returned no attentions for feature .attentions.1.*attn_implementation="eager"'
    ):
        module.prepare(batch)


def test_bf16_teacher() -> None:
    torch.manual_seed(0)
    teacher = teacher_cnn()
    module = DistillationModule(student_module(), teacher, teacher_dtype="bf16", features=FEATURES[:1])
    assert all(p.dtype == torch.bfloat16 for p in teacher.parameters())
    module.float()  # a precision plugin's cast reaches the teacher, which keeps its dtype
    assert all(p.dtype == torch.bfloat16 for p in teacher.parameters())
    trainer = fit(module, epochs=1)
    assert torch.isfinite(trainer.callback_metrics["train/kd"])


# ----------------------------------------------------------------------------------------------------------- cache
def test_cache_runs_the_teacher_once_and_changes_nothing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = teacher_cnn()
    start = student_module()

    uncached = DistillationModule(copy.deepcopy(start), teacher, alpha=0.2)
    fit(uncached, epochs=3)

    calls = CountCalls(teacher)
    cached = DistillationModule(copy.deepcopy(start), teacher, alpha=0.2, teacher_cache=tmp_path)
    trainer = fit(cached, epochs=3)
    assert calls.calls == 4  # the 4 batches of the first epoch, never again
    assert trainer.callback_metrics["distill/cache_hit_rate"] == pytest.approx(2 / 3)
    for name, value in uncached.student.state_dict().items():
        assert torch.equal(value, cached.student.state_dict()[name]), name  # the same logits, bit for bit
    (file,) = tmp_path.glob("teacher-logits-*.rank0.safetensors")

    # another job with the same teacher (a sweep job): every logit comes from the file
    again = DistillationModule(copy.deepcopy(start), teacher, alpha=0.2, teacher_cache=str(tmp_path))
    fit(again, epochs=1)
    assert calls.calls == 4
    assert str(again.teacher_fingerprint()) in file.name


# ------------------------------------------------------------------------------------------------- teacher sources
def test_teacher_from_a_lightning_checkpoint_of_a_classification_module(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = ClassificationModule(teacher_cnn(), num_classes=CLASSES, optimizer=SGD)
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="teacher")
    fit(trained, [ckpt], epochs=1, enable_checkpointing=True)
    module = DistillationModule(student_module(), ckpt.best_model_path, teacher_model=teacher_cnn())
    x, _ = next(iter(loader()))
    trained.eval()
    torch.testing.assert_close(module.teacher(x), trained(x), rtol=0, atol=0)
    assert module.hparams.teacher == ckpt.best_model_path


def test_teacher_from_a_hugging_face_folder_and_a_pickled_module(tmp_path: Path) -> None:
    bert = tiny_bert(16, 2).eval()
    bert.save_pretrained(tmp_path / "bert")
    batch = next(iter(text_loader()))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    loaded = load_teacher(tmp_path / "bert")
    torch.testing.assert_close(loaded(**inputs).logits, bert(**inputs).logits)
    cnn = teacher_cnn().eval()
    torch.save(cnn, tmp_path / "cnn.pt")
    x = torch.randn(2, 1, 8, 8)
    with pytest.warns(UserWarning, match="allow_pickle=True"):  # a whole pickled module: only with the opt-in
        torch.testing.assert_close(load_teacher(tmp_path / "cnn.pt", allow_pickle=True)(x), cnn(x))


# ------------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 1.5}, r"`alpha` must be in \[0, 1\] \(the weight of the label loss\), got 1.5"),
        ({"alpha": -0.1}, r"`alpha` must be in \[0, 1\].*got -0.1"),
        ({"alpha": True}, r"`alpha` must be in \[0, 1\].*got True"),
        ({"temperature": 0}, "`temperature` must be > 0, got 0"),
        ({"temperature": -2.0}, "`temperature` must be > 0, got -2.0"),
        ({"temperature": "hot"}, "`temperature` must be a number > 0 or a callable.*got 'hot'"),
        (
            {"temperature": lambda p: 1.0 - p},
            r"`temperature` schedules must return values > 0, got temperature\(1.0\) = 0.0",
        ),
        ({"teacher_dtype": "int8"}, "`teacher_dtype` can be None, bf16 or fp16, got 'int8'"),
        (
            {"features": [{"student": "features.4"}]},
            r"`features\[0\]`.*missing 1 required positional argument: 'teacher'",
        ),
        (
            {"features": [{"student": "a", "teacher": "b", "weight": -1}]},
            r"`features\[0\]`: `weight` must be a number >= 0, got -1",
        ),
        ({"features": [{"student": "a", "teacher": "b", "loss": "l1"}]}, r"`loss` can be mse or cosine, got 'l1'"),
        ({"features": FEATURES, "teacher_cache": True}, "`teacher_cache` keeps the teacher's logits only"),
    ],
)
def test_bad_arguments_raise_in_init(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DistillationModule(student_module(), teacher_cnn(), **kwargs)


def test_all_bad_arguments_are_reported_at_once() -> None:
    with pytest.raises(ValueError) as err:
        DistillationModule(student_module(), teacher_cnn(), alpha=2, temperature=0)
    assert "`alpha`" in str(err.value) and "`temperature`" in str(err.value)


def test_feature_names_that_do_not_exist_list_the_available_ones() -> None:
    with pytest.raises(
        ValueError,
        match=r"`features\[0\].student` names a feature that SmallCNN does not have: "
        r"'features.9'; available: features, features.0, .*classifier.4",
    ):
        DistillationModule(
            student_module(), teacher_cnn(), features=[{"student": "features.9", "teacher": "features.4"}]
        )
    with pytest.raises(ValueError, match=r"`features\[0\].teacher` .*'hidden_states.1'"):
        DistillationModule(
            student_module(), teacher_cnn(), features=[{"student": "features.4", "teacher": "hidden_states.1"}]
        )
    with pytest.raises(ValueError, match=r"'hidden_states.5'; available: .*hidden_states.4, attentions.0"):
        DistillationModule(
            tiny_bert(16, 2),
            tiny_bert(32, 4),
            num_classes=2,
            features=[{"student": "hidden_states.1", "teacher": "hidden_states.5"}],
        )


def test_a_projection_that_cannot_be_built_fails_before_training() -> None:
    module = DistillationModule(
        student_module(), teacher_cnn(), features=[{"student": "features.0", "teacher": "features.4"}]
    )
    with pytest.raises(
        ValueError,
        match=r"cannot build a projection for feature pair student 'features.0' \(2, 4, 8, 8\) "
        r"-> teacher 'features.4' \(2, 16, 4, 4\)",
    ):
        fit(module, epochs=1)


def test_label_count_mismatch_fails_before_the_first_step() -> None:
    student = student_module()
    before = {k: v.clone() for k, v in student.named_parameters()}
    module = DistillationModule(student, teacher_cnn(num_classes=5))
    with pytest.raises(ValueError, match="the teacher outputs 5 classes but the student outputs 4"):
        module.check_num_classes(next(iter(loader())))  # what lc-train calls before `fit`
    trainer = L.Trainer(max_epochs=1, **QUIET)
    with pytest.raises(ValueError, match="the teacher outputs 5 classes but the student outputs 4"):
        trainer.fit(module, loader())  # checked in the first training step, before its backward pass
    assert trainer.global_step == 0
    for name, value in student.named_parameters():
        assert torch.equal(value, before[name]), name


def test_bad_teacher_sources(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match="`teacher` must be an nn.Module or an existing path, got 'nowhere.ckpt'"
    ):
        DistillationModule(student_module(), "nowhere.ckpt")
    torch.save({"state_dict": {f"model.{k}": v for k, v in teacher_cnn().state_dict().items()}}, tmp_path / "t.ckpt")
    with pytest.raises(ValueError, match="holds weights only; pass `teacher_model`"):
        DistillationModule(student_module(), tmp_path / "t.ckpt")
    with pytest.raises(ValueError, match="do not fit `teacher_model` \\(SmallCNN\\)"):
        DistillationModule(student_module(), tmp_path / "t.ckpt", teacher_model=teacher_cnn(num_classes=7))
    with pytest.raises(ValueError, match="holds no config.json"):
        DistillationModule(student_module(), tmp_path)
    with pytest.raises(
        ValueError, match="`teacher` must be an nn.Module, a Hugging Face model folder or a checkpoint path, got None"
    ):
        DistillationModule(student_module(), None)  # type: ignore[arg-type]


def test_a_bare_student_takes_num_classes_or_reads_it_later() -> None:
    with pytest.raises(ValueError, match="`num_classes` must be an int >= 2 or None .* when `student` is a bare"):
        DistillationModule(student_cnn(), teacher_cnn(), num_classes=1)
    assert DistillationModule(student_cnn(), teacher_cnn()).student.num_classes is None  # read in setup
    module = DistillationModule(student_cnn(), teacher_cnn(), num_classes=CLASSES, optimizer=SGD)
    assert isinstance(module.student, ClassificationModule) and module.student.num_classes == CLASSES
