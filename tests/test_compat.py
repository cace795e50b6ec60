"""The old import paths of the flat layout (``lightning_compress._compat``) and the renamed names: each warns with a
DeprecationWarning that names the new place, and gives the very same objects as the new modules."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import lightning_compress
from lightning_compress import _compat
from lightning_compress.analysis.report import CompressionReport
from lightning_compress.pruning.gradual_magnitude_pruning import GradualMagnitudePruning
from lightning_compress.pruning.one_shot.prune import OneShotResult

PACKAGE = "lightning_compress"
OLD = sorted(_compat.MOVED)


@pytest.fixture(autouse=True)
def _restore_the_package() -> Iterator[None]:
    """Importing ``lightning_compress.<old>`` puts it in ``sys.modules`` and sets the attribute ``<old>`` of the
    package; both are undone after each test, so that no other test sees them."""
    package = vars(lightning_compress)
    before = dict(package)
    old_paths = {f"{PACKAGE}.{old}" for old in OLD}
    cached = {name: sys.modules[name] for name in old_paths if name in sys.modules}
    yield
    for name in old_paths:
        sys.modules.pop(name, None)
    sys.modules.update(cached)
    for name in [name for name in package if name not in before]:
        del package[name]
    package.update(before)


def fresh_import(old: str) -> tuple[types.ModuleType, list[warnings.WarningMessage]]:
    """Imports ``lightning_compress.<old>`` as for the first time; the module and the DeprecationWarnings."""
    sys.modules.pop(f"{PACKAGE}.{old}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(f"{PACKAGE}.{old}")
    return module, [w for w in caught if issubclass(w.category, DeprecationWarning)]


@pytest.mark.parametrize("old", OLD)
def test_an_old_module_path_warns_and_names_the_new_paths(old: str) -> None:
    module, deprecations = fresh_import(old)
    assert module.__name__ == f"{PACKAGE}.{old}"
    mine = [str(w.message) for w in deprecations if f"`{PACKAGE}.{old}` is deprecated" in str(w.message)]
    assert len(mine) == 1, [str(w.message) for w in deprecations]
    for new in _compat.MOVED[old]:
        assert f"{PACKAGE}.{new}" in mine[0], (new, mine[0])
        importlib.import_module(f"{PACKAGE}.{new}")  # the new path exists


@pytest.mark.parametrize("old", OLD)
def test_an_old_module_gives_the_same_objects_as_the_new_modules(old: str) -> None:
    module, _ = fresh_import(old)
    renamed_names = _compat._RENAMED_NAMES.get(old, {})
    checked, bad = 0, []
    for new in _compat.MOVED[old]:
        target = importlib.import_module(f"{PACKAGE}.{new}")
        assert hasattr(target, "__all__"), f"{PACKAGE}.{new} has no __all__"
        for name in target.__all__:
            if name in renamed_names:  # an old name kept with its old meaning (checked below), e.g. check_nm
                continue
            checked += 1
            if getattr(module, name) is not getattr(target, name):
                bad.append(f"{PACKAGE}.{old}.{name} is not {PACKAGE}.{new}.{name}")
    for name, renamed in renamed_names.items():
        checked += 1
        value = getattr(module, name)
        if callable(renamed):
            assert value is renamed(), name
        else:
            new, new_name = renamed
            if value is not getattr(importlib.import_module(f"{PACKAGE}.{new}"), new_name):
                bad.append(f"{PACKAGE}.{old}.{name} is not {PACKAGE}.{new}.{new_name}")
    assert checked > 0, f"{PACKAGE}.{old} maps to modules that export nothing"
    assert not bad, "\n".join(bad)
    listed = {name for new in _compat.MOVED[old] for name in importlib.import_module(f"{PACKAGE}.{new}").__all__}
    assert listed | set(renamed_names) <= set(dir(module))


def test_an_old_module_path_names_what_is_missing() -> None:
    module, _ = fresh_import("masking")
    with pytest.raises(AttributeError, match=r"moved to lightning_compress.core.masks, .*has no attribute 'nope'"):
        module.nope  # noqa: B018


@pytest.mark.parametrize("old", sorted(set(_compat.MOVED) & set(lightning_compress.__all__)))
def test_importing_an_old_module_path_keeps_the_top_level_name(old: str) -> None:
    """``lightning_compress.<old>`` is also a public name of the package: importing the old module (which sets the
    package's attribute ``<old>`` to it) must not replace the exported object."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        exported = getattr(lightning_compress, old)
        fresh_import(old)
        after = getattr(lightning_compress, old)
    assert after is exported, f"after `import {PACKAGE}.{old}`, `{PACKAGE}.{old}` is {after!r}, not {exported!r}"


def test_python_m_train_still_runs(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "default::DeprecationWarning"}
    proc = subprocess.run(
        [sys.executable, "-m", f"{PACKAGE}.train", "--help"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train is powered by Hydra." in proc.stdout and "Powered by Hydra (https://hydra.cc)" in proc.stdout
    assert "== Configuration groups ==" in proc.stdout and "compression: " in proc.stdout
    assert f"`python -m {PACKAGE}.train` is deprecated: use `python -m {PACKAGE}.cli.train`" in proc.stderr


# ------------------------------------------------------------------------------------------------- renamed names
def test_sparsity_report_is_the_compression_report() -> None:
    with pytest.warns(DeprecationWarning, match=r"`lightning_compress.SparsityReport` is deprecated: use "
                      r"`lightning_compress.CompressionReport`"):  # fmt: skip
        value = lightning_compress.SparsityReport
    assert value is CompressionReport
    with pytest.warns(DeprecationWarning):  # at every use
        lightning_compress.SparsityReport  # noqa: B018


def test_to_semi_structured_warns_before_it_needs_cuda() -> None:
    model = nn.Sequential(nn.Linear(64, 64))
    with pytest.warns(DeprecationWarning, match=r"`to_semi_structured` is deprecated: .* `to_semi_structured_`"):
        if torch.cuda.is_available():  # what it then makes of a dense CPU model is test_semi_structured's business
            try:
                lightning_compress.to_semi_structured(model)
            except Exception:
                pass
        else:
            with pytest.raises(RuntimeError, match=r"to_semi_structured_ needs a CUDA GPU"):
                lightning_compress.to_semi_structured(model)


def test_gradual_magnitude_pruning_sparsity_is_current_sparsity() -> None:
    pruning = GradualMagnitudePruning(0.5)
    with pytest.warns(DeprecationWarning, match=r"`GradualMagnitudePruning.sparsity` is deprecated: it is `current_"):
        value = pruning.sparsity
    assert value == pruning.current_sparsity


def test_one_shot_result_sparsity_is_achieved_sparsity() -> None:
    masks = {"fc.weight": torch.tensor([[True, False, False, True], [False, False, False, True]])}
    result = OneShotResult(masks=masks, method="magnitude", pattern="50%")
    with pytest.warns(DeprecationWarning, match=r"`OneShotResult.sparsity` is deprecated: it is `achieved_sparsity`"):
        value = result.sparsity
    assert value == result.achieved_sparsity == 5 / 8
