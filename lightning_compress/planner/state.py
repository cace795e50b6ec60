"""The planner's run folder and its state file, ``planner_state.json``: the budget, the settings, the fp32
measurement and one record per finished step (done with its measured candidates, skipped or failed with the reason),
rewritten atomically after every step. A walk started again on the same folder reads it and goes on at the first step
without a record: a crash after step 3 resumes at step 4, and finished steps are never redone.

Example:
    >>> state = PlannerState.load_or_new(run_dir, budget, settings)  # doctest: +SKIP
    >>> state.records.keys()  # doctest: +SKIP
    dict_keys(['ptq_int8', 'ptq_sensitivity', 'qat_int8'])
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from lightning_compress.core.files import atomic_write_text
from lightning_compress.planner.budget import Budget, Measurement
from lightning_compress.planner.steps import PlannerSettings, StepRecord

__all__ = ["STATE_FILE", "PlannerState"]

STATE_FILE = "planner_state.json"
_VERSION = 1


@dataclass
class PlannerState:
    """What a walk has done so far (see the module docstring)."""

    run_dir: Path
    budget: Budget
    settings: PlannerSettings
    steps: list[str]
    baseline: Optional[Measurement] = None
    records: dict[str, StepRecord] = field(default_factory=dict)
    resumed: bool = False

    @property
    def path(self) -> Path:
        return self.run_dir / STATE_FILE

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "budget": self.budget.as_dict(),
            "settings": asdict(self.settings),
            "steps": list(self.steps),
            "baseline": self.baseline.as_dict() if self.baseline is not None else None,
            "records": [r.as_dict() for r in self.records.values()],
        }

    def save(self) -> None:
        """Rewrite the state file atomically."""
        atomic_write_text(self.path, json.dumps(self.as_dict(), indent=1, default=str) + "\n")

    @classmethod
    def load_or_new(
        cls, run_dir: Path, budget: Budget, settings: PlannerSettings, steps: list[str], restart: bool = False
    ) -> PlannerState:
        """The walk recorded in ``run_dir`` (same budget, settings and steps), or a new one.

        Raises:
            ValueError: If the folder holds a walk with another budget, settings or steps (unless ``restart``), or
                a state file that does not parse.
        """
        run_dir = Path(run_dir)
        path = run_dir / STATE_FILE
        if restart or not path.is_file():
            return cls(run_dir, budget, settings, steps)
        try:
            data = json.loads(path.read_text())
            assert isinstance(data, dict) and data.get("version") == _VERSION
            records = [StepRecord.from_dict(r) for r in data["records"]]
            baseline = Measurement.from_dict(data["baseline"]) if data.get("baseline") else None
        except (ValueError, KeyError, TypeError, AssertionError) as err:
            raise ValueError(
                f"{str(path)!r} is not a planner state file of this version ({type(err).__name__}: {err}); pass"
                " restart=True (--restart) to start the walk again in this folder, or use another folder"
            ) from None
        mine = {"budget": budget.as_dict(), "settings": asdict(settings), "steps": list(steps)}
        changed = [k for k, v in mine.items() if json.loads(json.dumps(v)) != data.get(k)]
        if changed:
            diffs = "; ".join(f"{k}: recorded {data.get(k)}, now {mine[k]}" for k in changed)
            raise ValueError(
                f"{str(run_dir)!r} holds a planner walk with other {', '.join(changed)} ({diffs}): resuming would mix"
                " two walks. Pass restart=True (--restart) to start again here, or use another run folder"
            )
        return cls(run_dir, budget, settings, steps, baseline, {r.step: r for r in records}, resumed=True)
