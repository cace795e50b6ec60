"""``lc-train ckpt_path=last``: resume the latest run of the same task.

Every ``lc-train`` run gets a new folder (``outputs/<task_name>/<time>``, or ``multirun/<task_name>/<time>/<job>`` in a
sweep), so Lightning's own ``"last"`` (the last checkpoint of *this* run's checkpoint folder) would always start from
scratch. Here ``last`` means the newest ``checkpoints/last.ckpt`` among the runs of the same task: this run's own
folder first (a run folder given with ``hydra.run.dir``), else the newest sibling run folder (in a sweep, the newest
job of the same number in an earlier sweep). The resumed run writes its checkpoints and logs into its own new folder
and the summary names the checkpoint it resumed.

Example:
    lc-train experiment=mnist_gmp90                  # killed in epoch 7
    lc-train experiment=mnist_gmp90 ckpt_path=last   # resumes outputs/train/<that run>/checkpoints/last.ckpt
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

__all__ = ["LAST", "resolve_ckpt_path"]

LAST = "last"


def resolve_ckpt_path(ckpt_path: Optional[str], output_dir: str, multirun: bool = False) -> Optional[str]:
    """The checkpoint ``lc-train`` resumes: ``ckpt_path`` itself, or for ``"last"`` the newest run's last checkpoint.

    Args:
        ckpt_path: The config's ``ckpt_path`` (None: no resume; a path; or ``"last"``).
        output_dir: This run's folder.
        multirun: Whether this run is a job of a sweep (``output_dir`` is ``<sweep>/<job number>``).

    Returns:
        The checkpoint file, or None for a fresh run.

    Raises:
        FileNotFoundError: For ``"last"`` when no run of this task has a last checkpoint (naming where it looked), or
            for a path that does not exist.
    """
    if ckpt_path is None:
        return None
    if ckpt_path != LAST:
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(
                f"`ckpt_path` must be a checkpoint file or 'last', got {ckpt_path!r}, which does not exist"
            )
        return ckpt_path
    here = Path(output_dir)
    own = here / "checkpoints" / "last.ckpt"
    if own.is_file():
        return str(own)
    pattern = f"*/{here.name}/checkpoints/last.ckpt" if multirun else "*/checkpoints/last.ckpt"
    root = here.parent.parent if multirun else here.parent
    found = [p for p in root.glob(pattern) if p.is_file()]
    if not found:
        raise FileNotFoundError(
            f"`ckpt_path=last` resumes the newest run of this task, and no run has a last checkpoint: nothing matches"
            f" {root / pattern}. Pass `ckpt_path=<file>` to resume a given checkpoint, or leave `ckpt_path` out to"
            " start a new run"
        )
    return str(max(found, key=lambda p: (p.stat().st_mtime, str(p))))
