"""Old import paths, kept working for one release: ``lightning_compress.masking`` and the other modules of the flat
layout (before the package was split by technique) import with a ``DeprecationWarning`` that names the new path, and
give the same objects as the new modules. ``python -m lightning_compress.train`` (and the other old entry points)
still run, with the same warning.

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     from lightning_compress.masking import ParameterMasks
    >>> from lightning_compress.core.masks import ParameterMasks as New
    >>> ParameterMasks is New
    True
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any, Optional

__all__ = ["MOVED", "MovedModule", "install", "warn_renamed"]

_PACKAGE = "lightning_compress"

# old module (relative to the package) -> the modules its public names moved to, searched in order
MOVED: dict[str, tuple[str, ...]] = {
    "masking": ("core.masks", "core.target", "core.distributed"),
    "masking_callback": ("core.mask_callback",),
    "prunable_weights": ("core.selection",),
    "sparsity_pattern": ("sparsity.pattern",),
    "nm_mask": ("sparsity.nm_masks", "sparsity.pattern"),
    "nm_sparsity": ("sparsity.nm_sparsity", "sparsity.pattern"),
    "semi_structured": ("sparsity.semi_structured",),
    "sparse_layers": ("sparsity.sparse_layers",),
    "magnitude": ("pruning.magnitude",),
    "sparsity_schedule": ("pruning.schedule",),
    "gradual_magnitude_pruning": ("pruning.gradual_magnitude_pruning",),
    "one_shot_pruning": ("pruning.one_shot.prune", "pruning.one_shot.sequential_calibration", "cli.oneshot"),
    "one_shot_pruning_callback": ("pruning.one_shot.one_shot_pruning",),
    "calibration_statistics": ("pruning.one_shot.calibration",),
    "sparsegpt": ("pruning.one_shot.sparsegpt",),
    "wanda": ("pruning.one_shot.wanda",),
    "structured_pruning": ("pruning.structured.report",),
    "unit_gates": ("pruning.structured.unit_gates",),
    "channel_pruning": ("pruning.structured.channels",),
    "transformer_pruning": ("pruning.structured.transformer",),
    "pruned_bert": ("pruning.structured.pruned_bert",),
    "pruned_student": ("distillation.students",),
    "quantization_aware_training": (
        "quantization.qat",
        "quantization.pt2e",
        "quantization.qat_modes",
        "quantization.int4",
        "quantization.serialization",
        "quantization.export_inputs",
    ),
    "distillation_loss": ("distillation.losses",),
    "feature_distillation": ("distillation.features",),
    "teacher": ("distillation.teacher",),
    "teacher_cache": ("distillation.teacher_cache",),
    "student_builders": ("distillation.students",),
    "compressed_format": ("export.compressed_format",),
    "report": ("analysis.report", "cli.report"),
    "sparsity_report": ("analysis.report",),
    "run_logs": ("analysis.run_logs",),
    "plots": ("analysis.plots", "bench.figures", "cli.plot"),
    "compression_advice": ("bench.advice",),
    "classification": ("training.classification",),
    "lr_schedule": ("training.lr_schedule",),
    "train": ("cli.train", "cli.model_spec"),
}

# the old modules that ran as ``python -m``: where their ``main`` lives now
_ENTRY_POINTS = {
    "train": "cli.train",
    "one_shot_pruning": "cli.oneshot",
    "report": "cli.report",
    "plots": "cli.plot",
}


def _network_of(module: Any) -> Any:
    from lightning_compress.core.target import find_network

    return find_network(module, strict=False)[0]


def _default_forward(model: Any, batch: Any) -> Any:
    from lightning_compress.core.batches import call_on_batch

    return call_on_batch(model, batch)


# names that changed, by old module: (new module, new name) or a callable that gives the value
_RENAMED_NAMES: dict[str, dict[str, Any]] = {
    "sparsity_pattern": {"check_nm": ("sparsity.pattern", "nm_problems")},
    "sparsity_report": {
        "SparsityReport": ("analysis.report", "CompressionReport"),
        "SparsityRow": ("analysis.report", "LayerRow"),
    },
    "teacher": {"network_of": lambda: _network_of},
    "one_shot_pruning": {"default_forward": lambda: _default_forward},
}


def warn_renamed(old: str, new: str, why: str = "", stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``."""
    reason = f" ({why})" if why else ""
    warnings.warn(f"`{old}` is deprecated: use `{new}`{reason}", DeprecationWarning, stacklevel=stacklevel)


class MovedModule(types.ModuleType):
    """An old module: its attributes are looked up, on first use, in the modules they moved to."""

    def __init__(self, old: str) -> None:
        super().__init__(f"{_PACKAGE}.{old}")
        self.__dict__["_old"] = old

    def _targets(self) -> list[types.ModuleType]:
        return [importlib.import_module(f"{_PACKAGE}.{new}") for new in MOVED[self._old]]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        renamed = _RENAMED_NAMES.get(self._old, {}).get(name)
        if callable(renamed):
            value = renamed()
        elif renamed is not None:
            value = getattr(importlib.import_module(f"{_PACKAGE}.{renamed[0]}"), renamed[1])
        else:
            for module in self._targets():
                if hasattr(module, name):
                    value = getattr(module, name)
                    break
            else:
                where = ", ".join(f"{_PACKAGE}.{new}" for new in MOVED[self._old])
                raise AttributeError(f"module {self.__name__!r} (moved to {where}) has no attribute {name!r}")
        self.__dict__[name] = value
        return value

    def __dir__(self) -> list[str]:
        names = {n for module in self._targets() for n in getattr(module, "__all__", ())}
        return sorted(names | set(_RENAMED_NAMES.get(self._old, {})))


class _MovedLoader(importlib.abc.Loader):
    def __init__(self, old: str) -> None:
        self.old = old

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return MovedModule(self.old)

    def exec_module(self, module: types.ModuleType) -> None:
        where = " / ".join(f"{_PACKAGE}.{new}" for new in MOVED[self.old])
        warnings.warn(
            f"`{_PACKAGE}.{self.old}` is deprecated and will be removed in the next release: import from {where}"
            f" (or the top-level `{_PACKAGE}`)",
            DeprecationWarning,
            stacklevel=2,
        )

    def get_code(self, fullname: str) -> Optional[types.CodeType]:
        """For ``python -m lightning_compress.<old>``: run the entry point's new module as ``__main__``."""
        new = _ENTRY_POINTS.get(self.old)
        if new is None:
            return None
        source = (
            "import runpy, warnings\n"
            f"warnings.warn('`python -m {_PACKAGE}.{self.old}` is deprecated: use `python -m {_PACKAGE}.{new}`',"
            " DeprecationWarning)\n"
            f"runpy.run_module('{_PACKAGE}.{new}', run_name='__main__', alter_sys=True)\n"
        )
        return compile(source, f"<{_PACKAGE}.{self.old}>", "exec")


class _MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the old module paths (only after every other finder found nothing)."""

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        package, _, old = fullname.partition(".")
        if package != _PACKAGE or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(old))


_FINDER = _MovedFinder()


def install() -> None:
    """Make the old module paths importable (once per process)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_FINDER)
