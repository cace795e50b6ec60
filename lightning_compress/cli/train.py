"""The Hydra training entry point, ``lc-train`` (also ``python -m lightning_compress.cli.train``).

The command-line layer (``lightning_compress.cli``) is the only part of the package that imports Hydra: everything
it builds is an ordinary public class that works without configs. The configs live in ``conf/`` at the top of a checkout
and inside the package of an installed wheel (``lightning_compress/conf``).

Example:
    lc-train                                             # SmallCNN on the offline MNIST-5k
    lc-train data=digits model=cnn_digits trainer.max_epochs=3
    lc-train -m optimizer.lr=1e-3,3e-3                   # a sweep; each job returns its best monitored score
    lc-train experiment=rotten_tomatoes_minilm
    lc-train experiment=mnist_gmp90 ckpt_path=last      # resume the newest run of this task (see cli.resume)

The best checkpoint (by ``monitor``) is chosen among the checkpoints saved once every compression schedule was final
(:class:`~lightning_compress.core.final_state_checkpoint.FinalStateCheckpoint`), and the test split is evaluated on it;
the summary (printed, and written to ``summary.json`` in the run folder) gives the sparsity and compression state of
the weights that were tested, and says which weights those were.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import hydra
import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lightning_compress.analysis.report import sparsity_report
from lightning_compress.cli.resume import resolve_ckpt_path
from lightning_compress.cli.train_config import check_monitor, check_train_config
from lightning_compress.core.checkpoints import load_torch_file, read_state_dict
from lightning_compress.core.files import atomic_write_text
from lightning_compress.core.final_state_checkpoint import FinalStateCheckpoint, compression_callbacks
from lightning_compress.core.safe_targets import check_keys
from lightning_compress.core.target import compression_target

__all__ = ["CONFIG_DIR", "main", "model_kwargs", "train"]

log = logging.getLogger(__name__)


def _config_dir() -> Path:
    """``lightning_compress/conf`` in an installed wheel, else ``conf/`` at the top of the checkout."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "conf"
    return packaged if packaged.is_dir() else package.parent / "conf"


CONFIG_DIR = _config_dir()


def _offline_minilm() -> str:
    from lightning_compress.models import offline_minilm_path

    return offline_minilm_path()


OmegaConf.register_new_resolver("lc_offline_minilm", _offline_minilm, replace=True)


def model_kwargs(model_cfg: DictConfig, num_classes: int) -> dict[str, int]:
    """The model's class count from the data set, unless the config sets it (a mismatch is caught later)."""
    key = "num_labels" if "name_or_path" in model_cfg else "num_classes"
    return {} if model_cfg.get(key) is not None else {key: num_classes}


def _callbacks(cfg: DictConfig, monitor: str) -> tuple[list[Callback], ModelCheckpoint]:
    checkpoint = instantiate(cfg.callbacks.model_checkpoint, monitor=monitor)
    if not isinstance(checkpoint, FinalStateCheckpoint) and cfg.get("compression"):
        log.warning(
            "`callbacks.model_checkpoint` is a %s, not a lightning_compress.FinalStateCheckpoint: the best checkpoint"
            " may be one saved before the compression schedules were final",
            type(checkpoint).__name__,
        )
    others = [instantiate(node) for name, node in cfg.callbacks.items() if name != "model_checkpoint" and node]
    return [checkpoint, *others], checkpoint


def _compression(cfg: DictConfig, module: pl.LightningModule) -> tuple[pl.LightningModule, list[Callback]]:
    """Builds the ``compression`` group: Lightning callbacks, and module wrappers (``_partial_`` nodes taking
    ``student``, such as ``DistillationModule``) applied to ``module`` in config order."""
    callbacks: list[Callback] = []
    for name, node in (cfg.get("compression") or {}).items():
        if node is None:
            continue
        built = instantiate(node)
        if isinstance(built, Callback):
            callbacks.append(built)
        elif callable(built):
            module = built(student=module)
        else:
            raise TypeError(
                f"`compression.{name}` must build a Lightning Callback or a module wrapper (a `_partial_: true` node "
                f"taking `student`), got {type(built).__name__}"
            )
    return module, callbacks


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _tested(checkpoint: ModelCheckpoint, tested_path: Optional[str], tested: bool) -> str:
    """Which weights the summary describes, in words."""
    if tested_path:
        step = getattr(checkpoint, "first_final_step", None)
        final = "" if step is None else f"; every compression schedule final (first final checkpoint at step {step})"
        return f"best checkpoint {tested_path}{final}"
    skipped = getattr(checkpoint, "skipped", [])
    why = f"; no checkpoint was saved in the final compression state ({len(skipped)} left out)" if skipped else ""
    return ("the final weights in memory" if tested else "not tested; the final weights in memory") + why


@rank_zero_only
def _write_summary(rows: dict[str, Any], output_dir: str) -> None:
    folder = Path(output_dir)
    if folder.is_dir():
        atomic_write_text(folder / "summary.json", json.dumps(rows, indent=2, default=str) + "\n")


@rank_zero_only
def _print_summary(rows: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="lightning_compress run", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in rows.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


def _load_weights(module: pl.LightningModule, path: str) -> None:
    """The weights (only) of a Lightning checkpoint, for ``init_from``: a fresh run that starts from trained weights."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"`init_from` must be a Lightning checkpoint file, got {path!r}, which does not exist")
    state = read_state_dict(path, "`init_from`")
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"`init_from={path!r}` does not fit the configured model: {err}") from err


def _check_resume_checkpoint(path: str) -> None:
    """Reads ``ckpt_path`` as Lightning will (``weights_only=True``; tensors memory-mapped, not read) before anything
    is built, so a crafted, damaged or foreign file is an error that names it (and runs no code)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not loadable this way: load_torch_file says why, naming the file (or loads an old format)
        load_torch_file(path, "`ckpt_path`", "a Lightning checkpoint (checkpoints/last.ckpt of a run)")


def train(cfg: DictConfig) -> float | None:
    """Builds data, model, module, callbacks, logger and trainer from ``cfg``, fits, and tests the best checkpoint.

    Returns:
        The best value of the monitored metric (``val/<primary metric>`` unless ``cfg.monitor`` says otherwise), so
        that a Hydra sweeper (Optuna) can optimise it; ``None`` if no validation ran.

    Raises:
        ValueError: a mistyped config value (``trainer.max_epochs=abc``), a ``monitor`` that no module logs, a model
            whose output width disagrees with the data set's label count (all before training).
        FileNotFoundError: ``ckpt_path=last`` with no earlier run of the task, or a ``ckpt_path`` that is missing.
        ValueError: A ``ckpt_path`` that is damaged, foreign or holds pickled objects (``PickledFileError``), read
            with ``weights_only=True`` before anything is built.
    """
    start = time.perf_counter()
    check_train_config(cfg)
    # unpickling and remote code are opt-ins of a Python call, never of a config (a run folder's config is reloaded)
    check_keys(OmegaConf.to_container(cfg, resolve=False))
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir, _is_multirun())
    if ckpt_path:
        _check_resume_checkpoint(ckpt_path)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, **model_kwargs(cfg.model, datamodule.num_classes))
    module = instantiate(
        cfg.module,
        model=model,
        num_classes=datamodule.num_classes,
        metrics=list(datamodule.metrics),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    )
    if cfg.get("init_from"):
        _load_weights(module, cfg.init_from)
    datamodule.setup("fit")
    module.check_num_classes(next(iter(datamodule.train_dataloader())))

    monitor = cfg.monitor or f"val/{datamodule.metrics[0]}"
    if hasattr(module, "fit_metric_names"):
        check_monitor(monitor, module.fit_metric_names(), type(module).__name__)
    module, compression = _compression(cfg, module)
    callbacks, checkpoint = _callbacks(cfg, monitor)
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=[*compression, *callbacks], logger=logger)

    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    rows: dict[str, Any] = {"output dir": cfg.paths.output_dir}
    if ckpt_path:
        rows["resumed from"] = ckpt_path
    score = checkpoint.best_model_score
    if score is not None:
        rows[f"best {monitor}"] = float(score)
    tested_path = None
    if cfg.test:
        best = "best" if score is not None and checkpoint.best_model_path and not trainer.fast_dev_run else None
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best)
        rows.update({k: float(v) for k, v in (results[0] if results else {}).items()})
        tested_path = checkpoint.best_model_path if best else None
    rows["best checkpoint"] = checkpoint.best_model_path or "-"
    # after `test`, the module and the compression callbacks hold the tested checkpoint's weights and state
    rows["tested weights"] = _tested(checkpoint, tested_path, bool(cfg.test))
    for callback in compression_callbacks(trainer):
        rows[f"compression: {type(callback).__name__}"] = callback.describe_state()
    report = sparsity_report(compression_target(module))
    rows["parameters"] = f"{sum(p.numel() for p in compression_target(module).parameters()):,}"
    rows["sparsity (Linear/Conv weights)"] = f"{report.sparsity:.2%} ({report.nonzeros:,} of {report.numel:,} non-zero)"
    rows["wall time"] = f"{time.perf_counter() - start:.1f} s"
    _write_summary(rows, cfg.paths.output_dir)
    _print_summary(rows)
    return float(score) if score is not None else None


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Console entry point; see the module docstring."""
    torch.set_float32_matmul_precision("high")
    # Lightning 2.6 calls a torch.utils._pytree API that torch 2.14 deprecates; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    return train(cfg)


if __name__ == "__main__":
    main()
