"""Knowledge distillation: the ``DistillationModule``, its losses and feature pairs, the frozen teacher and its logit
cache, and students built from a teacher.
"""

from lightning_compress.distillation.distillation_module import DistillationModule
from lightning_compress.distillation.features import FeaturePair
from lightning_compress.distillation.losses import feature_loss, kd_loss
from lightning_compress.distillation.students import layer_subset_student, pruned_student, small_cnn_student
from lightning_compress.distillation.teacher import load_teacher
from lightning_compress.distillation.teacher_cache import TeacherCache

__all__ = [
    "DistillationModule",
    "FeaturePair",
    "TeacherCache",
    "feature_loss",
    "kd_loss",
    "layer_subset_student",
    "load_teacher",
    "pruned_student",
    "small_cnn_student",
]
