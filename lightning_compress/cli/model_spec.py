"""One resolver of the model specs every command takes (``lc-bench --model``, ``lc-report``, ``lc-oneshot``): a model
from what a user types.

A spec is one of:

* an ``lc-train`` run folder (``.hydra/config.yaml`` builds the architecture, its best or last checkpoint fills it);
* a Hugging Face folder (``config.json`` + weights, as ``save_pretrained`` writes it), loaded with the transformers
  class its config names;
* ``pkg.module:fn`` or ``path/to/file.py:fn``: a builder called with no arguments (your code, run on purpose);
* a file holding a whole pickled module (``torch.save(model)``) or a ``torch.export`` program (``.pt2``);
* a torchvision model name (``resnet50``: random weights, nothing downloads).

A checkpoint given beside the spec (a Lightning ``.ckpt`` or a state dict) is loaded into the built model with
``weights_only=True``, the ``model.`` prefix of a ``ClassificationModule`` checkpoint stripped.

Example:
    >>> load_model("resnet18").fc.out_features  # doctest: +SKIP
    1000
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from lightning_compress.core.checkpoints import load_network_weights, read_state_dict

__all__ = ["SPEC_FORMS", "load_model", "model_from_run"]

SPEC_FORMS = "an lc-train run folder, a Hugging Face folder, module:fn, file.py:fn, a model file or a torchvision name"


def model_from_run(run_dir: str | Path) -> nn.Module:
    """The trained float model of an ``lc-train`` run folder.

    Builds ``cfg.model`` from ``<run_dir>/.hydra/config.yaml`` (the data module is built only to read its class count
    when the config leaves it null) and loads the best checkpoint (else ``last.ckpt``), keys without the ``model.``
    prefix. A run whose module was replaced by a compression wrapper (QAT graph, distillation) keeps other keys:
    ``load_state_dict`` then raises and names them.

    Raises:
        FileNotFoundError: If the folder has no ``.hydra/config.yaml`` or no checkpoint.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from lightning_compress.cli.train import model_kwargs

    run_dir = Path(run_dir)
    config = run_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: is {run_dir} an lc-train run folder?")
    cfg = OmegaConf.load(config)
    key = "num_labels" if "name_or_path" in cfg.model else "num_classes"
    kwargs = {} if cfg.model.get(key) is not None else model_kwargs(cfg.model, instantiate(cfg.data).num_classes)
    model = instantiate(cfg.model, **kwargs)
    checkpoints = sorted((run_dir / "checkpoints").glob("*.ckpt"), key=lambda p: (p.name == "last.ckpt", p.name))
    if not checkpoints:
        raise FileNotFoundError(f"no checkpoint under {run_dir / 'checkpoints'}")
    return load_network_weights(model, checkpoints[0], what=f"the checkpoint of run {run_dir}")


def _huggingface_model(folder: Path) -> nn.Module:
    """The model of a ``save_pretrained`` folder, built by the transformers class its ``config.json`` names."""
    import transformers

    config = json.loads((folder / "config.json").read_text())
    names = config.get("architectures") or ["AutoModel"]
    cls = getattr(transformers, names[0], None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ValueError(
            f"{folder}: config.json names the architecture {names[0]!r}, which transformers does not have (models that"
            " need their own code are not loaded)"
        )
    return cls.from_pretrained(str(folder))


def _builder(spec: str) -> nn.Module:
    target, _, fn_name = spec.rpartition(":")
    if target.endswith(".py"):
        module_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"cannot import {target}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, fn_name)()


def load_model(spec: str, checkpoint: Optional[str] = None) -> nn.Module:
    """Build a model from a command-line spec (see the module docstring), then load ``checkpoint`` into it.

    Args:
        spec: The model.
        checkpoint: Optional Lightning ``.ckpt`` or state-dict file loaded into the built model.

    Raises:
        ValueError: If the spec matches none of the forms (the message lists them), or the checkpoint does not fit.
    """
    path = Path(spec)
    if path.is_dir() and (path / ".hydra" / "config.yaml").is_file():
        model = model_from_run(path)
    elif path.is_dir() and (path / "config.json").is_file():
        model = _huggingface_model(path)
    elif path.is_dir():
        raise ValueError(f"`--model` {spec!r} is a folder with neither .hydra/config.yaml nor config.json")
    elif ":" in spec and not path.exists():
        model = _builder(spec)
    elif path.is_file():
        if path.suffix == ".pt2":
            model = torch.export.load(path).module()
        else:
            model = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(model, nn.Module):
                raise ValueError(
                    f"{path} holds a {type(model).__name__}, not a pickled nn.Module; pass an architecture as the model"
                    " and this file as --checkpoint"
                )
    else:
        try:
            import torchvision
        except ImportError as err:
            raise ValueError(f"`--model` {spec!r} is not {SPEC_FORMS} (torchvision is not installed)") from err
        if spec not in torchvision.models.list_models():
            raise ValueError(f"`--model` {spec!r} is no folder, file, module:function or torchvision model name")
        model = torchvision.models.get_model(spec, weights=None)
    if checkpoint is not None:
        load_network_weights(model, read_state_dict(checkpoint, "`--checkpoint`"), what="`--checkpoint`")
    return model
