"""What every compression callback shares: the configuration it was built with (saved with its state and compared
when a run resumes), and whether its schedule has reached its final state.

* **Configuration.** ``_CONFIG`` names the constructor arguments that tell two instances apart (they make the
  ``state_key`` under which Lightning stores the state); ``_COMPARED`` names the further arguments that change what a
  run computes (the schedule). Both are saved in the state (``"config"``). When ``fit`` resumes from a checkpoint,
  a checkpoint written with other values is an error that lists them (``final_sparsity: 0.9 -> 0.8``), whether the
  key changed (Lightning would drop the saved state with a generic warning) or only a schedule argument did. With
  ``allow_config_change=True`` the saved state is carried over to the new configuration and the change is logged.
* **Final state.** :attr:`CompressionCallback.is_final` says whether the compression the callback applies has
  reached what its schedule ends in (all the target sparsity, every group N:M, the last QAT phase), and
  :attr:`CompressionCallback.final_step` from which optimizer step that holds. A checkpoint saved before that holds a
  model that was never the compressed one: :class:`~lightning_compress.core.final_state_checkpoint.FinalStateCheckpoint`
  does not let it become the best checkpoint.

Example:
    >>> config_changes({"final_sparsity": 0.9, "end_epoch": 3}, {"final_sparsity": 0.8, "end_epoch": 3})
    ['final_sparsity: 0.9 -> 0.8']
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

__all__ = ["CompressionCallback", "config_changes", "described"]

_MISSING = "<not set>"


def described(value: Any) -> Any:
    """A configuration value as saved: a callable by its qualified name (None without one), anything else as it is.

    Example:
        >>> described(len), described(0.5)
        ('len', 0.5)
    """
    return getattr(value, "__qualname__", None) if callable(value) else value


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"name: old -> new"`` for every argument whose value differs (``<not set>`` for one on one side only).

    Example:
        >>> config_changes({"n": 2, "m": 4}, {"n": 2, "m": 8})
        ['m: 4 -> 8']
    """
    out = []
    for name in dict.fromkeys([*saved, *current]):
        old, new = saved.get(name, _MISSING), current.get(name, _MISSING)
        if old != new and not (_is_number(old) and _is_number(new) and float(old) == float(new)):
            out.append(f"{name}: {old!r} -> {new!r}" if _MISSING not in (old, new) else f"{name}: {old} -> {new}")
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class CompressionCallback(Callback):
    """The base of the compression callbacks; see the module docstring.

    A subclass sets ``_CONFIG`` and ``_COMPARED``, sets ``self.allow_config_change`` in ``__init__`` and defines
    :attr:`is_final`, :attr:`final_step` and :meth:`describe_state`; its ``state_dict`` includes
    ``{"config": self.resume_config()}``.
    """

    _CONFIG: tuple[str, ...] = ()  # the constructor arguments that tell two instances apart (the state_key)
    _COMPARED: tuple[str, ...] = ()  # further arguments that change what a run computes, compared on resume
    allow_config_change: bool = False

    # ------------------------------------------------------------------------------------------- configuration
    def _config(self) -> dict[str, Any]:
        """``_CONFIG``'s arguments and values (a callable by its qualified name): what makes the ``state_key``."""
        return {name: described(getattr(self, name)) for name in self._CONFIG}

    def resume_config(self) -> dict[str, Any]:
        """Every argument that must be the same when a run resumes (``_CONFIG`` and ``_COMPARED``), as saved."""
        return {name: described(getattr(self, name)) for name in dict.fromkeys([*self._CONFIG, *self._COMPARED])}

    @property
    @override
    def state_key(self) -> str:
        # Lightning reads it at every hook call (its profiler's action names): rebuilt only when an argument changed
        values = [getattr(self, name) for name in self._CONFIG]
        cached = self.__dict__.get("_state_key_cache")
        if cached is not None and len(cached[0]) == len(values) and all(a is b for a, b in zip(cached[0], values)):
            return cached[1]
        key = self._generate_state_key(**self._config())
        self.__dict__["_state_key_cache"] = (values, key)
        return key

    # -------------------------------------------------------------------------------------------- final state
    @property
    def is_final(self) -> bool:
        """Whether the compression has reached the state its schedule ends in (False before ``fit`` starts)."""
        return False

    @property
    def final_step(self) -> Optional[int]:
        """The optimizer step from which the final state holds (None until the schedule is known)."""
        return None

    def describe_state(self) -> str:
        """One line: the compression applied now, and whether it is final (for run summaries)."""
        return f"{type(self).__name__}: {'final' if self.is_final else 'not final'}"

    def _final_text(self) -> str:
        step = self.final_step
        where = f" from step {step}" if step is not None else ""
        return f"final{where}" if self.is_final else f"not final yet (final{where})"

    # --------------------------------------------------------------------------------------------------- resume
    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # testing or validating a checkpoint resumes no schedule
            return
        states = checkpoint.get("callbacks") or {}
        current = self.resume_config()
        if self.state_key in states:
            saved = states[self.state_key].get("config") if isinstance(states[self.state_key], Mapping) else None
            if saved is not None:
                self._check_same(config_changes(saved, current), self.state_key)
            return
        claimed = {callback.state_key for callback in trainer.callbacks}
        orphans = [key for key in states if self._same_class(key) and key not in claimed]
        if not orphans:
            return
        changes = {key: self._changes_from(key, states[key], current) for key in orphans}
        if len(orphans) > 1 or not self.allow_config_change:
            self._raise("; ".join(", ".join(c) or key for key, c in changes.items()), migrate=len(orphans) == 1)
        (key,) = orphans
        self._warn_migration(changes[key])
        states[self.state_key] = states[key]  # Lightning hands this state to load_state_dict next

    def _check_same(self, changes: list[str], key: str) -> None:
        if not changes:
            return
        if not self.allow_config_change:
            self._raise(", ".join(changes), migrate=True)
        self._warn_migration(changes)

    def _raise(self, changes: str, migrate: bool) -> None:
        name = type(self).__name__
        fix = (
            " or pass `allow_config_change=True` to carry the saved state over to the new configuration (logged)"
            if migrate
            else ""
        )
        raise ValueError(
            f"{name}: the checkpoint was written with another configuration ({changes}; checkpoint -> now). Resuming"
            f" with it would drop or misapply the saved masks and schedule: resume with the checkpoint's values{fix}"
        )

    def _warn_migration(self, changes: list[str]) -> None:
        rank_zero_warn(
            f"{type(self).__name__}: resuming with a changed configuration (allow_config_change=True):"
            f" {', '.join(changes)}; the saved state is carried over"
        )

    def _same_class(self, key: Any) -> bool:
        name = type(self).__qualname__
        return isinstance(key, str) and (key == name or key.startswith(name + "{"))

    def _changes_from(self, key: str, state: Any, current: Mapping[str, Any]) -> list[str]:
        """What differs between the configuration a saved state was written with (its ``"config"``, else what its
        key says: then only the key's arguments are compared) and ``current``."""
        if isinstance(state, Mapping) and isinstance(state.get("config"), Mapping):
            return config_changes(state["config"], current)
        try:
            parsed = ast.literal_eval(key[len(type(self).__qualname__) :])
        except (ValueError, SyntaxError):
            return []
        if not isinstance(parsed, dict):
            return []
        return config_changes(parsed, {name: current[name] for name in parsed if name in current})
