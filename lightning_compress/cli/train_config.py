"""Checks of a composed ``lc-train`` config before anything is built: the types of the trainer arguments users mistype
most, the run's own keys, and the ``monitor`` metric against the metrics the module declares it logs.

Every problem is reported at once, each naming its config key (``trainer.max_epochs``), the value and what is
allowed, as one ``ValueError`` (:class:`~lightning_compress.core.validation.ArgumentErrors`).

Example:
    >>> from omegaconf import OmegaConf
    >>> check_train_config(OmegaConf.create({"seed": 0, "trainer": {"max_epochs": "abc"}}))
    Traceback (most recent call last):
    ...
    ValueError: lc-train config: `trainer.max_epochs` must be an int >= -1 or null, got 'abc'
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lightning_compress.core.validation import ArgumentErrors, is_int, is_number

__all__ = ["accelerator_names", "check_monitor", "check_train_config", "precision_values"]

_TIME = re.compile(r"^\d+(:\d{1,2}){0,3}$")  # DD:HH:MM:SS, the time-based val_check_interval


def precision_values() -> tuple[Any, ...]:
    """The ``precision`` values Lightning accepts (read from Lightning, so a new one is accepted here too)."""
    from lightning.fabric.connector import _PRECISION_INPUT

    values: list[Any] = []
    for literal in typing.get_args(_PRECISION_INPUT):
        values += typing.get_args(literal) or [literal]
    return tuple(values)


def accelerator_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The ``accelerator`` values Lightning knows, and those available on this machine (read from Lightning's
    registry, so a new accelerator is accepted here too; ``gpu`` is available where ``cuda`` or ``mps`` is).

    Example:
        >>> "cpu" in accelerator_names()[1]
        True
    """
    from lightning.pytorch.accelerators import AcceleratorRegistry

    known, here = ["auto", "gpu"], ["auto"]
    for name in sorted(AcceleratorRegistry.available_accelerators()):
        known.append(name)
        try:
            available = bool(AcceleratorRegistry[name]["accelerator"].is_available())
        except Exception:  # an accelerator whose check itself fails (a missing driver) is not available
            available = False
        if available:
            here.append(name)
    if "cuda" in here or "mps" in here:
        here.append("gpu")
    return tuple(known), tuple(here)


def _int(minimum: int, optional: bool = True) -> Callable[[Any], bool]:
    return lambda v: (optional and v is None) or (is_int(v) and v >= minimum)


def _fraction_or_count(low_open: bool, minimum: int) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        if v is None or (is_int(v) and v >= minimum):
            return True
        return isinstance(v, float) and is_number(v) and (0 < v <= 1 if low_open else 0 <= v <= 1)

    return ok


def _devices(v: Any) -> bool:
    if is_int(v):
        return v >= 1 or v == -1
    if isinstance(v, str):
        text = v.strip()
        return text == "auto" or bool(re.fullmatch(r"-1|\d+|(\d+\s*,\s*)*\d+\s*,?", text))
    if isinstance(v, Sequence):
        return len(v) > 0 and all(is_int(d) and d >= 0 for d in v)
    return False


def _val_check_interval(v: Any) -> bool:
    if _fraction_or_count(True, 1)(v) or isinstance(v, Mapping):
        return True
    return isinstance(v, str) and bool(_TIME.match(v.strip()))


# trainer key -> (check, what is allowed)
_TRAINER: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_epochs": (_int(-1), "an int >= -1 or null"),
    "min_epochs": (_int(0), "an int >= 0 or null"),
    "max_steps": (_int(-1, optional=False), "an int >= -1 (-1: no limit)"),
    "min_steps": (_int(0), "an int >= 0 or null"),
    "devices": (_devices, 'an int >= 1, -1 (all), "auto", a list of device indices or a string such as "0,1"'),
    "num_nodes": (_int(1, optional=False), "an int >= 1"),
    "accumulate_grad_batches": (_int(1, optional=False), "an int >= 1"),
    "gradient_clip_val": (lambda v: v is None or (is_number(v) and v >= 0), "a number >= 0 or null"),
    "gradient_clip_algorithm": (lambda v: v in (None, "norm", "value"), "norm, value or null"),
    "limit_train_batches": (_fraction_or_count(False, 0), "an int >= 0 (batches), a float in [0, 1] or null"),
    "limit_val_batches": (_fraction_or_count(False, 0), "an int >= 0 (batches), a float in [0, 1] or null"),
    "limit_test_batches": (_fraction_or_count(False, 0), "an int >= 0 (batches), a float in [0, 1] or null"),
    "limit_predict_batches": (_fraction_or_count(False, 0), "an int >= 0 (batches), a float in [0, 1] or null"),
    "val_check_interval": (
        _val_check_interval,
        'an int >= 1 (batches), a float in (0, 1] (of an epoch), a time "DD:HH:MM:SS", a dict of days/hours/'
        "minutes/seconds or null",
    ),
    "check_val_every_n_epoch": (_int(1), "an int >= 1 or null"),
    "log_every_n_steps": (_int(0), "an int >= 0 or null"),
    "num_sanity_val_steps": (_int(-1), "an int >= -1 or null"),
    "fast_dev_run": (lambda v: isinstance(v, bool) or (is_int(v) and v >= 0), "a bool or an int >= 0 (batches)"),
    "deterministic": (lambda v: v in (None, True, False, "warn"), "true, false, warn or null"),
}


def check_train_config(cfg: DictConfig) -> None:
    """Check the types and ranges of the run's own keys (``seed``, ``monitor``, ``monitor_mode``, ``test``,
    ``ckpt_path``, ``init_from``), of the trainer arguments in ``_TRAINER``, ``trainer.precision`` and
    ``trainer.accelerator`` (one available on this machine), before anything is instantiated.

    Raises:
        ValueError: Naming every bad key (``trainer.max_epochs``), its value and what is allowed.
    """
    errors = ArgumentErrors("lc-train config: ")
    errors.require(cfg.get("seed") is None or is_int(cfg.get("seed")), "seed", "an int or null", cfg.get("seed"))
    for key in ("monitor", "ckpt_path", "init_from"):
        value = cfg.get(key)
        errors.require(value is None or (isinstance(value, str) and bool(value)), key, "a string or null", value)
    if "monitor_mode" in cfg:
        errors.one_of("monitor_mode", cfg.monitor_mode, ("min", "max"))
    if "test" in cfg:
        errors.require(isinstance(cfg.test, bool), "test", "true or false", cfg.test)
    trainer = cfg.get("trainer") or {}
    for key, (ok, allowed) in _TRAINER.items():
        if key not in trainer:
            continue
        value = _plain(trainer[key])
        errors.require(ok(value), f"trainer.{key}", allowed, value)
    accelerator = _plain(trainer.get("accelerator")) if "accelerator" in trainer else None
    if isinstance(accelerator, str) and accelerator != "auto":  # an Accelerator instance is the user's own
        here = accelerator_names()[1]
        allowed = f"one of {', '.join(here)} (the accelerators available on this machine)"
        errors.require(accelerator in here, "trainer.accelerator", allowed, accelerator)
    if "precision" in trainer:
        allowed_precision = precision_values()
        value = _plain(trainer.precision)
        if value is not None:
            errors.one_of("trainer.precision", value, allowed_precision)
    errors.raise_if_any()


def check_monitor(monitor: str, names: Sequence[str], what: str) -> None:
    """Check that ``monitor`` is one of the metric names the module declares it logs during ``fit``.

    Args:
        monitor: The metric that selects the best checkpoint.
        names: The declared names (``ClassificationModule.fit_metric_names()``).
        what: What declared them, for the message.

    Raises:
        ValueError: If ``monitor`` is not among ``names`` (listing them).
    """
    if monitor not in names:
        near = [n for n in names if n.split("/")[-1] == monitor.split("/")[-1]]
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(
            f"lc-train config: `monitor` names {monitor!r}, which no module of this run logs during fit{hint}; {what}"
            f" logs {', '.join(names)}. Set `monitor=` to one of them (or null for the data set's primary metric)"
        )


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
