"""Knowledge distillation as a LightningModule: a frozen teacher, a student, logit and feature losses.

The student's own loss, metrics and optimizers are reused; every compression callback (``GradualMagnitudePruning``,
N:M sparsity, QAT) works on the student only, through :attr:`DistillationModule.compression_target`.

Example:
    >>> import lightning as L
    >>> from lightning_compress import ClassificationModule, GradualMagnitudePruning
    >>> from lightning_compress.models import SmallCNN
    >>> student = ClassificationModule(SmallCNN(channels=(8, 16), hidden=32), num_classes=10)
    >>> module = DistillationModule(student, teacher=SmallCNN(channels=(64, 128), hidden=256), temperature=4.0)
    >>> trainer = L.Trainer(max_epochs=10, callbacks=[GradualMagnitudePruning(0.8)])  # prunes the student only
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_compress.core.batches import first_batch, move_data_to_device
from lightning_compress.core.sharding import check_sharding, is_dtensor
from lightning_compress.core.target import compression_target, find_network
from lightning_compress.core.validation import check_materialized, is_int
from lightning_compress.distillation.features import (
    FeatureCapture,
    FeaturePair,
    WidthProjection,
    build_projection,
    check_feature_name,
    width_dim,
)
from lightning_compress.distillation.losses import (
    TemperatureLike,
    _check_temperature,
    feature_loss,
    kd_loss,
    temperature_at,
)
from lightning_compress.distillation.sharded import shard_for_distillation, teacher_group
from lightning_compress.distillation.teacher import TeacherSource, load_teacher, module_fingerprint
from lightning_compress.distillation.teacher_cache import TeacherCache
from lightning_compress.training.classification import ClassificationModule, OptimizerFactory

__all__ = ["DistillationModule"]

_TEACHER_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


class DistillationModule(pl.LightningModule):
    r"""Trains a student to match a frozen teacher's logits (and, optionally, intermediate features) and the labels.

    The training loss is

    ``alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))
    + sum_i weight_i * feature_loss_i``

    where ``CE`` is the student's own ``loss`` (label smoothing included) and ``T`` the temperature, constant or a
    schedule of training progress. Validation and test are the student's own steps and metrics.

    The teacher is held outside the module tree: it is not a submodule, so it is never in ``parameters()``, in an
    optimizer, in ``state_dict()`` or in a checkpoint (a checkpoint has the student's size, and the teacher is rebuilt
    from ``teacher`` when a run resumes); ``.train()`` never reaches it, so it stays in eval mode, and Lightning's
    "modules in eval mode" warning does not count it. It moves with the module across devices (``.to``/``.cuda``).
    It runs under ``torch.inference_mode`` (no autograd graph, no saved activations); its outputs are copied out of
    inference mode before they enter the loss, since inference tensors cannot be saved for backward. A teacher whose
    parameters are FSDP2 ``DTensor`` s runs under ``torch.no_grad`` instead (FSDP2 modules that once ran under
    ``inference_mode`` fail at later forwards with torch 2.14). Under ``ModelParallelStrategy`` (FSDP2, data-parallel
    mesh only) :meth:`configure_model` shards the student and the teacher (see
    :mod:`~lightning_compress.distillation.sharded`); the teacher cache is per rank.

    Feature names are module paths relative to the student network (the ``.model`` of a ``ClassificationModule``) and
    the teacher network, or Hugging Face outputs ``hidden_states.K`` / ``attentions.K`` (see
    :mod:`~lightning_compress.distillation.features`). Where widths differ a learned linear projection of the student
    feature is added (saved in the checkpoint, trained by the student's optimizer, with its learning rate). The
    projections are built from the features of two training examples, before training: in ``setup`` from the train
    dataloader, or earlier by :meth:`prepare` / :meth:`check_num_classes`.

    Args:
        student: A ``ClassificationModule`` (or another LightningModule with ``split_batch(batch) -> (inputs,
            labels)``, ``loss(logits, labels)`` and a forward returning logits), whose loss, metrics and
            ``configure_optimizers`` are reused; or a bare ``nn.Module`` / Hugging Face model, then wrapped in a
            ``ClassificationModule(student, num_classes, optimizer=optimizer)``.
        teacher: An ``nn.Module``, a Hugging Face model, a Hugging Face model folder, or the path of a Lightning
            checkpoint / ``torch.save`` file (see :func:`~lightning_compress.distillation.teacher.load_teacher`).
        temperature: ``T > 0``, or a callable ``progress in [0, 1] -> T > 0`` (progress = optimizer steps done / total).
        alpha: Weight of the label loss, in [0, 1]; ``0`` is pure distillation, ``1`` ignores the teacher's logits.
        features: Feature pairs: :class:`~lightning_compress.distillation.features.FeaturePair` or mappings with keys
            ``student``, ``teacher``, ``weight`` (1.0) and ``loss`` (``"mse"`` or ``"cosine"``).
        teacher_model: The teacher's architecture, into which a checkpoint or state-dict file is loaded.
        teacher_dtype: ``None`` (the teacher's own dtype) or ``"bf16"`` / ``"fp16"``: the teacher's weights and floating
            inputs are cast to it (half the memory, faster on GPUs); its outputs come back as float32.
        teacher_cache: ``False`` (run the teacher on every batch), ``True`` (keep its logits in memory after computing
            each example once) or a folder (also keep them on disk, shared by every job using this teacher): see
            :mod:`~lightning_compress.distillation.teacher_cache`. Logits only: not with ``features``.
        num_classes: The label count, for a bare ``nn.Module`` student only; None: read from the width of its logits on
            the first batch, in ``setup`` (or by :meth:`prepare`).
        optimizer: An optimizer factory ``params -> Optimizer``, for a bare ``nn.Module`` student only (AdamW(1e-3)
            when omitted).
        allow_pickle: Passed to :func:`~lightning_compress.distillation.teacher.load_teacher`: unpickle a teacher file
            that holds a whole module (runs the code it names; only for files you trust). Not saved in the
            hyperparameters, so a checkpoint never turns it on.

    Raises:
        ValueError: In ``__init__``, for any invalid argument (all of them listed at once), a feature name that does
            not exist (with the available names), or a teacher file that cannot be loaded; in :meth:`prepare` (called
            by ``setup`` when there are feature pairs) or at the first training step, if teacher and student disagree
            on the label count, or a projection cannot be built.
        FileNotFoundError: If ``teacher`` is a path that does not exist.

    Example:
        >>> from lightning_compress.models import SmallCNN
        >>> module = DistillationModule(SmallCNN(channels=(8, 16), hidden=32), SmallCNN(), num_classes=10, alpha=0.0,
        ...                             features=[{"student": "features.4", "teacher": "features.4"}])
        >>> module.prepare((torch.randn(2, 1, 28, 28), torch.tensor([0, 1])))
        >>> module.training_step((torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])), 0).shape
        torch.Size([])
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: TeacherSource,
        temperature: TemperatureLike = 4.0,
        alpha: float = 0.5,
        features: Sequence[Union[FeaturePair, Mapping[str, Any]]] = (),
        teacher_model: Optional[nn.Module] = None,
        teacher_dtype: Optional[Union[str, torch.dtype]] = None,
        teacher_cache: Union[bool, str, os.PathLike] = False,
        num_classes: Optional[int] = None,
        optimizer: Optional[OptimizerFactory] = None,
        allow_pickle: bool = False,
    ) -> None:
        super().__init__()
        pairs, errors = _validate(
            student, teacher, temperature, alpha, features, teacher_dtype, teacher_cache, num_classes
        )
        if errors:
            raise ValueError("; ".join(errors))
        if not isinstance(student, pl.LightningModule):
            student = _classification_student(student, num_classes, optimizer)
        self.student = student
        self.temperature = temperature
        self.alpha = float(alpha)
        self.features = pairs
        self.teacher_dtype = _TEACHER_DTYPES.get(teacher_dtype, teacher_dtype) if teacher_dtype is not None else None
        self.teacher_source = (
            teacher
            if isinstance(teacher, (str, os.PathLike))
            else type(find_network(teacher, strict=False)[0]).__name__
        )
        net = load_teacher(teacher, teacher_model, allow_pickle=allow_pickle is True)
        if self.teacher_dtype is not None:
            net.to(self.teacher_dtype)
        object.__setattr__(self, "_teacher", net)  # not a submodule: see the class docstring

        for i, pair in enumerate(pairs):
            check_feature_name(self.student_network, pair.student, f"features[{i}].student")
            check_feature_name(net, pair.teacher, f"features[{i}].teacher")
        self.projections = nn.ModuleList()  # one per pair, built by `prepare`
        self._prepared = not pairs
        self._checked = False
        self._cache_setting = teacher_cache
        self._cache: Optional[TeacherCache] = None
        self._fingerprint: Optional[str] = None
        self._total_steps = 0.0
        self.save_hyperparameters(
            {
                "teacher": str(self.teacher_source),
                "temperature": temperature if not callable(temperature) else repr(temperature),
                "alpha": self.alpha,
                "features": [vars(p) for p in pairs],
                "teacher_dtype": str(self.teacher_dtype) if self.teacher_dtype is not None else None,
                "teacher_cache": str(teacher_cache),
            }
        )

    # ------------------------------------------------------------------------------------------------- properties
    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher network."""
        return self._teacher

    @property
    def student_network(self) -> nn.Module:
        """The student network: the ``.model`` of a ``ClassificationModule`` student, else the student itself."""
        return find_network(self.student, strict=False)[0]

    @property
    def compression_target(self) -> nn.Module:
        """What compression callbacks prune and quantize: the student's own ``compression_target`` (by default the
        student LightningModule), so that parameter names are those of a run without distillation."""
        return compression_target(self.student)

    def teacher_fingerprint(self) -> str:
        """A digest of the teacher's class, weights and dtype (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = module_fingerprint(self._teacher, extra=str(self.teacher_dtype))
        return self._fingerprint

    # ------------------------------------------------------------------------------------------------ nn.Module
    @override
    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> DistillationModule:
        super()._apply(fn, recurse)
        teacher = self.__dict__.get("_teacher")
        if recurse and teacher is not None:
            teacher._apply(fn)
            if self.teacher_dtype is not None:
                teacher.to(self.teacher_dtype)
        return self

    @override
    def forward(self, inputs: Any) -> Tensor:
        """The student's logits."""
        return self.student(inputs)

    # -------------------------------------------------------------------------------------------------- checks
    @torch.no_grad()
    def prepare(self, batch: Any) -> None:
        """Runs teacher and student on two examples of ``batch``: checks that their label counts agree, and builds the
        feature projections (once). Lightning's ``setup`` calls it on the first training batch when there are feature
        pairs; call it yourself to fail earlier.

        Raises:
            ValueError: If the teacher and the student output different label counts, or a projection cannot be built.
        """
        if getattr(self.student, "num_classes", 0) is None:
            self.student.check_num_classes(move_data_to_device(batch, self.device))
        inputs, _ = self.student.split_batch(batch)
        inputs = move_data_to_device(_head(inputs, 2), self.device)
        was_training = self.student.training
        self.student.eval()
        try:
            with FeatureCapture(self.student_network, [p.student for p in self.features]) as student_features:
                student_logits = self.student(inputs)
        finally:
            self.student.train(was_training)
        teacher_logits, teacher_features = self._run_teacher(inputs, [p.teacher for p in self.features])
        self._check_logits(student_logits, teacher_logits)
        if not self._prepared:
            projections = [
                build_projection(student_features[p.student], teacher_features[p.teacher], p) for p in self.features
            ]
            self.projections = nn.ModuleList(projections).to(self.device)
            self._prepared = True

    def check_num_classes(self, batch: Any) -> None:
        """The student's own check (if it has one), then :meth:`prepare`: fails before training on a label count that
        differs between data, student and teacher."""
        check = getattr(self.student, "check_num_classes", None)
        if callable(check):
            check(batch)
        self.prepare(batch)

    def _check_logits(self, student_logits: Tensor, teacher_logits: Tensor) -> None:
        if student_logits.shape[-1] != teacher_logits.shape[-1]:
            raise ValueError(
                f"the teacher outputs {teacher_logits.shape[-1]} classes but the student outputs "
                f"{student_logits.shape[-1]}: `teacher` ({self.teacher_source}) and `student` must predict the same "
                "labels (check the teacher's num_classes / num_labels)"
            )
        self._checked = True

    # ---------------------------------------------------------------------------------------------------- hooks
    @override
    def setup(self, stage: str) -> None:
        check_sharding(self.trainer, self)  # core.sharding.SHARDED_SUPPORT: no tensor parallelism
        needs_classes = getattr(self.student, "num_classes", 0) is None  # a bare student: read from its logits
        if (stage == "fit" and not self._prepared) or needs_classes:
            self.prepare(self._first_batch(stage))

    @override
    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy`` (a device mesh): shards the student, the projections and the frozen teacher
        with FSDP2 over the data-parallel dimension (:mod:`~lightning_compress.distillation.sharded`); under any other
        strategy: the student's own ``configure_model``."""
        if self.device_mesh is not None:
            shard_for_distillation(self)
        else:
            self.student.configure_model()

    @override
    def on_train_start(self) -> None:
        self._total_steps = float(self.trainer.estimated_stepping_batches)
        if math.isinf(self._total_steps) and callable(self.temperature):
            raise ValueError(
                "a `temperature` schedule needs the length of training, but it has no end (`max_epochs=-1` and "
                "`max_steps=-1`); set `max_epochs` or use a constant temperature"
            )
        cache = self._teacher_cache()
        if cache is not None and cache.folder is not None:
            loaded = cache.load(rank=self.global_rank)
            rank_zero_info(f"Teacher cache: {loaded} logits loaded from {cache.folder}")

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs, labels = self.student.split_batch(batch)
        with FeatureCapture(self.student_network, [p.student for p in self.features]) as student_features:
            logits = self.student(inputs)
        ce = self.student.loss(logits, labels)
        loss = self.alpha * ce if self.alpha > 0 else logits.new_zeros((), dtype=torch.float32)
        batch_size = labels.shape[0]
        if self.alpha < 1 or self.features:
            teacher_logits, teacher_features = self._teacher_outputs(inputs)
            if not self._checked:
                self._check_logits(logits, teacher_logits)
            if self.alpha < 1:
                temperature = temperature_at(self.temperature, self._progress())
                kd = kd_loss(logits, teacher_logits, temperature)
                loss = loss + (1.0 - self.alpha) * kd
                self.log("train/kd", kd, batch_size=batch_size)
                self.log("distill/temperature", temperature, batch_size=batch_size)
            for i, (pair, projection) in enumerate(zip(self.features, self.projections)):
                student_feature = projection(student_features[pair.student])
                teacher_feature = teacher_features[pair.teacher]
                value = feature_loss(student_feature, teacher_feature, pair.loss, width_dim(teacher_feature))
                loss = loss + pair.weight * value
                self.log(f"train/feature_{i}", value, batch_size=batch_size)
        self.log("train/ce", ce, batch_size=batch_size)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        return loss

    @override
    def on_train_epoch_end(self) -> None:
        cache = self._cache
        if cache is None:
            return
        self.log("distill/cache_hit_rate", cache.hit_rate(), sync_dist=True)  # each rank's own cache: the mean
        cache.save(rank=self.global_rank)

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return self._student_step("validation_step", batch, batch_idx)

    @override
    def test_step(self, batch: Any, batch_idx: int) -> Any:
        return self._student_step("test_step", batch, batch_idx)

    @override
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        inputs, _ = self.student.split_batch(batch)
        return self.student(inputs)

    @override
    def configure_optimizers(self) -> Any:
        """The student's optimizers and schedulers, with the projections' parameters added to its parameters.

        The projections are attached to the student while its ``configure_optimizers`` runs, so that they land in the
        same parameter group (and under the same scheduler) as the student's weights. If the student's optimizers
        still miss them (it picks parameters by name), they are added as a group of the first optimizer.
        """
        extra = list(self.projections.parameters())
        if not extra:
            return self.student.configure_optimizers()
        self.student.add_module("distill_projections", self.projections)
        try:
            config = self.student.configure_optimizers()
        finally:
            delattr(self.student, "distill_projections")
        optimizers = _optimizers_of(config)
        covered = {id(p) for opt in optimizers for group in opt.param_groups for p in group["params"]}
        missing = [p for p in extra if id(p) not in covered]
        if missing and optimizers:
            rank_zero_warn("the student's optimizer left out the feature projections; added them as a parameter group")
            optimizers[0].add_param_group({"params": missing})
        return config

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["distillation"] = {
            "teacher": str(self.teacher_source),
            "teacher_fingerprint": self.teacher_fingerprint(),
            "projections": [
                [p.linear.in_features, p.linear.out_features, p.dim] if isinstance(p, WidthProjection) else None
                for p in self.projections
            ],
        }

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("distillation", {})
        if not self._prepared and saved.get("projections") is not None:
            self.projections = nn.ModuleList(
                [nn.Identity() if p is None else WidthProjection(*p) for p in saved["projections"]]
            ).to(self.device)
            self._prepared = True
        fingerprint = saved.get("teacher_fingerprint")
        if fingerprint is not None and fingerprint != self.teacher_fingerprint():
            rank_zero_warn(
                f"the checkpoint was trained with another teacher ({saved.get('teacher')}) than this one "
                f"({self.teacher_source}): its weights differ"
            )

    # -------------------------------------------------------------------------------------------------- helpers
    def _progress(self) -> float:
        if self._trainer is None or not self._total_steps or math.isinf(self._total_steps):
            return 0.0
        return min(1.0, self.trainer.global_step / self._total_steps)

    def _student_step(self, name: str, batch: Any, batch_idx: int) -> Any:
        # The student's `self.log` needs the hook name that Lightning sets on the LightningModule it runs (this one).
        self.student._current_fx_name = self._current_fx_name
        try:
            return getattr(self.student, name)(batch, batch_idx)
        finally:
            self.student._current_fx_name = None

    def _teacher_cache(self) -> Optional[TeacherCache]:
        if self._cache is None and self._cache_setting is not False and self._cache_setting is not None:
            if self._cache_setting is True:
                self._cache = TeacherCache()
            else:
                self._cache = TeacherCache(self._cache_setting, fingerprint=self.teacher_fingerprint())
        return self._cache

    def _teacher_outputs(self, inputs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """The teacher's float32 logits (from the cache when there is one) and features, outside inference mode."""
        cache = self._teacher_cache()
        if cache is not None:
            group = teacher_group(self._teacher)  # a sharded teacher: the ranks run it together
            return cache.logits(inputs, lambda x: self._run_teacher(x, ())[0], group), {}
        return self._run_teacher(inputs, [p.teacher for p in self.features])

    def _run_teacher(self, inputs: Any, names: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
        teacher = self._teacher
        if teacher.training:
            teacher.eval()
        if self.teacher_dtype is not None:
            inputs = _cast_floating(inputs, self.teacher_dtype)
        # An FSDP2-sharded teacher must not run in inference mode: with torch 2.14 its later forwards (under no_grad
        # too) fail on the inference tensors FSDP2 kept ("Inference tensors do not track version counter"). It runs
        # under no_grad with inference mode off, even inside an outer inference_mode (Lightning's GPU eval loops).
        first = next(teacher.parameters(), None)
        sharded = first is not None and is_dtensor(first)
        mode = torch.inference_mode(False) if sharded else torch.inference_mode()
        with mode, torch.no_grad(), FeatureCapture(teacher, names) as captured:
            out = teacher(**inputs) if isinstance(inputs, Mapping) else teacher(inputs)
            logits = out.logits if hasattr(out, "logits") else out
        # Outside inference mode: copies are ordinary tensors, which autograd may save for the backward pass.
        return logits.to(torch.float32, copy=True), {k: v.to(torch.float32, copy=True) for k, v in captured.items()}

    def _first_batch(self, stage: str) -> Any:
        """One batch of the stage's dataloader, drawn without touching the global RNG state."""
        try:
            return first_batch(self.trainer, stage)
        except Exception as err:
            raise RuntimeError(
                f"the distillation module checks the label counts and builds its feature projections from one batch,"
                f" which could not be read from the {stage} dataloader ({err}); call"
                " `module.prepare(next(iter(train_loader)))` before `trainer.fit`"
            ) from err


def _classification_student(
    model: nn.Module, num_classes: Optional[int], optimizer: Optional[OptimizerFactory]
) -> ClassificationModule:
    # Built outside `DistillationModule.__init__`: Lightning's `save_hyperparameters` walks up the `__init__` frames of
    # enclosing LightningModules and would record the student and teacher modules as the wrapper's hyperparameters.
    return ClassificationModule(model, num_classes=num_classes, optimizer=optimizer)


def _head(inputs: Any, n: int) -> Any:
    if isinstance(inputs, Mapping):
        return {k: v[:n] if isinstance(v, Tensor) else v for k, v in inputs.items()}
    return inputs[:n]


def _cast_floating(inputs: Any, dtype: torch.dtype) -> Any:
    if isinstance(inputs, Tensor):
        return inputs.to(dtype) if inputs.is_floating_point() else inputs
    if isinstance(inputs, Mapping):
        return {k: _cast_floating(v, dtype) for k, v in inputs.items()}
    return inputs


def _optimizers_of(config: Any) -> list[torch.optim.Optimizer]:
    """The optimizers in any of the forms ``configure_optimizers`` may return."""
    if isinstance(config, torch.optim.Optimizer):
        return [config]
    if isinstance(config, Mapping):
        return _optimizers_of(config.get("optimizer"))
    if isinstance(config, (list, tuple)):
        if len(config) == 2 and isinstance(config[0], (list, tuple)):  # ([optimizers], [schedulers])
            return _optimizers_of(config[0])
        return [opt for item in config for opt in _optimizers_of(item)]
    return []


def _validate(
    student: Any,
    teacher: Any,
    temperature: Any,
    alpha: Any,
    features: Any,
    teacher_dtype: Any,
    teacher_cache: Any,
    num_classes: Any,
) -> tuple[list[FeaturePair], list[str]]:
    """The feature pairs, and every problem with the constructor arguments (naming the argument, value, what is
    allowed)."""
    errors = []
    if isinstance(student, pl.LightningModule):
        lacking = [name for name in ("split_batch", "loss") if not callable(getattr(student, name, None))]
        if lacking:
            errors.append(
                f"`student` LightningModule {type(student).__name__} lacks {', '.join(lacking)}: use a "
                "ClassificationModule, or a bare nn.Module with `num_classes`"
            )
        if num_classes is not None:
            errors.append(f"`num_classes` is for a bare nn.Module student; this student has its own, got {num_classes}")
    elif isinstance(student, nn.Module):
        if num_classes is not None and not (is_int(num_classes) and num_classes >= 2):
            errors.append(
                f"`num_classes` must be an int >= 2 or None (read from the logits) when `student` is a bare nn.Module"
                f" ({type(student).__name__}), got {num_classes!r}"
            )
    else:
        errors.append(f"`student` must be an nn.Module or a ClassificationModule, got {type(student).__name__}")
    if teacher is None:
        errors.append("`teacher` must be an nn.Module, a Hugging Face model folder or a checkpoint path, got None")
    for name, module in (("student", student), ("teacher", teacher)):
        if isinstance(module, nn.Module):
            try:
                check_materialized(module, f"`{name}`")
            except ValueError as err:
                errors.append(str(err))
    problem = _check_temperature(temperature)
    if problem:
        errors.append(problem)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        errors.append(f"`alpha` must be in [0, 1] (the weight of the label loss), got {alpha!r}")
    if (
        teacher_dtype is not None
        and teacher_dtype not in _TEACHER_DTYPES
        and teacher_dtype
        not in (
            torch.bfloat16,
            torch.float16,
        )
    ):
        errors.append(f"`teacher_dtype` can be None, bf16 or fp16, got {teacher_dtype!r}")
    if not isinstance(teacher_cache, (bool, str, os.PathLike)) and teacher_cache is not None:
        errors.append(f"`teacher_cache` must be False, True or a folder, got {teacher_cache!r}")
    pairs: list[FeaturePair] = []
    if isinstance(features, (str, bytes)) or not isinstance(features, Sequence):
        errors.append(f"`features` must be a list of feature pairs, got {features!r}")
    else:
        for i, value in enumerate(features):
            try:
                pairs.append(FeaturePair.of(value))
            except (TypeError, ValueError) as err:
                errors.append(f"`features[{i}]`: {err}")
    if pairs and teacher_cache not in (False, None):
        errors.append(
            f"`teacher_cache` keeps the teacher's logits only, but {len(pairs)} feature pair(s) need its features at "
            f"every step; got teacher_cache={teacher_cache!r} with features: set one of them off"
        )
    return pairs, errors
