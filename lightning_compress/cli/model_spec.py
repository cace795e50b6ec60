"""One resolver of the model specs every command takes (``lc-bench --model``, ``lc-report``, ``lc-oneshot``): a model
from what a user types.

A spec is one of:

* an ``lc-train`` run folder (``.hydra/config.yaml`` builds the architecture, its best or last checkpoint fills it);
* a folder of a structurally pruned model (``save_pruned``), rebuilt by ``load_pruned``;
* a Hugging Face folder (``config.json`` + weights, as ``save_pretrained`` writes it), loaded with the transformers
  class its config names (never with ``trust_remote_code``);
* ``pkg.module:fn`` or ``path/to/file.py:fn``: a builder called with no arguments (your code, run on purpose);
* a ``torch.export`` program (``.pt2``) without pickled entries, or, with ``allow_pickle=True`` (``--allow-pickle``),
  any ``.pt2`` or a file holding a whole pickled module (``torch.save(model)``): unpickling runs the code the file
  names;
* a torchvision model name (``resnet50``: random weights, nothing downloads).

A checkpoint given beside the spec (a Lightning ``.ckpt``, a state dict, a safetensors file or a ``save_compressed``
file) is loaded into the built model with ``weights_only=True`` / safetensors, the ``model.`` prefix of a
``ClassificationModule`` checkpoint stripped.

What a run folder's config may build is checked before anything is built
(:func:`~lightning_compress.core.safe_targets.check_tree`): ``cfg.model`` (and ``cfg.data`` when the class count comes
from it) may name only ``nn.Module`` classes of this library, torch, torchvision and transformers, the model builders
of ``lightning_compress.models`` / ``torchvision.models``, this library's teacher and student builders and
transformers' ``from_pretrained``; ``trust_remote_code`` and ``allow_pickle`` keys are refused. Every refusal names the
key and the target.

Example:
    >>> load_model("resnet18").fc.out_features  # doctest: +SKIP
    1000
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any, Optional

from torch import nn

from lightning_compress.core.checkpoints import PickledFileError, load_network_weights, load_pickled, read_state_dict
from lightning_compress.core.file_kinds import describe_file, file_kind
from lightning_compress.core.safe_targets import check_keys, check_tree
from lightning_compress.core.tensor_file import tensor_file_format
from lightning_compress.export.compressed_format import FORMAT as COMPRESSED_FORMAT
from lightning_compress.export.compressed_format import load_compressed

__all__ = ["SPEC_FORMS", "load_model", "model_from_run", "read_weights", "run_config"]

SPEC_FORMS = (
    "an lc-train run folder, a save_pruned folder, a Hugging Face folder, module:fn, file.py:fn, a .pt2 program (a"
    " pickled module file with --allow-pickle) or a torchvision name"
)


def run_config(run_dir: str | Path) -> Any:
    """The resolved ``.hydra/config.yaml`` of a run folder, its ``model`` and ``data`` nodes checked
    (:func:`~lightning_compress.core.safe_targets.check_tree`; the whole config for ``allow_pickle`` and
    ``trust_remote_code``).

    Raises:
        FileNotFoundError: If the folder has no ``.hydra/config.yaml``.
        ValueError: If the YAML does not parse, has no ``model`` node, or names a target that is not allowed (the
            message names the file, the key and the target).
    """
    from omegaconf import DictConfig, OmegaConf

    run_dir = Path(run_dir)
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found: is {str(run_dir)!r} an lc-train run folder?")
    try:
        cfg = OmegaConf.load(path)
        ok = isinstance(cfg, DictConfig) and isinstance(cfg.get("model"), DictConfig)
        raw = OmegaConf.to_container(cfg, resolve=False) if ok else None
        # only the built nodes are resolved (elsewhere ${hydra:...} needs a Hydra run); resolving first means a
        # target produced by an interpolation (oc.decode) is checked too
        resolved = (
            {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data") if k in cfg} if ok else {}
        )
    except Exception as err:  # YAML syntax, interpolation errors
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"run config {str(path)!r} does not load ({type(err).__name__}: {first})") from None
    if not ok:
        raise ValueError(f"run config {str(path)!r} must be a mapping with a `model` node, found {describe_file(path)}")
    try:
        check_keys(raw, "")
        check_keys(resolved, "")
    except ValueError as err:
        raise ValueError(f"run config {str(path)!r}: {err}") from None
    for node in ("model", "data"):
        try:
            check_tree(resolved.get(node), node)
        except ValueError as err:
            raise ValueError(f"run config {str(path)!r}: {err}") from None
    return OmegaConf.create(resolved)


def model_from_run(run_dir: str | Path) -> nn.Module:
    """The trained float model of an ``lc-train`` run folder.

    Builds ``cfg.model`` from ``<run_dir>/.hydra/config.yaml`` (checked by :func:`run_config` first; the data module
    is built only to read its class count when the config leaves it null) and loads the best checkpoint (else
    ``last.ckpt``) with ``weights_only=True``, keys without the ``model.`` prefix. A run whose module was replaced by a
    compression wrapper (QAT graph, distillation) keeps other keys: ``load_state_dict`` then raises and names them.

    Raises:
        FileNotFoundError: If the folder has no ``.hydra/config.yaml`` or no checkpoint.
        ValueError: If the config names a target that is not allowed, or the checkpoint is damaged, holds pickled
            objects or does not fit.
    """
    from hydra.utils import instantiate

    from lightning_compress.cli.train import model_kwargs

    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    key = "num_labels" if "name_or_path" in cfg.model else "num_classes"
    kwargs = {} if cfg.model.get(key) is not None else model_kwargs(cfg.model, instantiate(cfg.data).num_classes)
    model = instantiate(cfg.model, **kwargs)
    checkpoints = sorted((run_dir / "checkpoints").glob("*.ckpt"), key=lambda p: (p.name == "last.ckpt", p.name))
    if not checkpoints:
        raise FileNotFoundError(f"no checkpoint under {run_dir / 'checkpoints'}")
    return load_network_weights(model, checkpoints[0], what=f"the checkpoint of run {run_dir}")


def _huggingface_model(folder: Path, what: str) -> nn.Module:
    """The model of a ``save_pretrained`` folder, built by the transformers class its ``config.json`` names."""
    import transformers

    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
        assert isinstance(config, dict)
    except (ValueError, UnicodeDecodeError, AssertionError):
        raise ValueError(
            f"{what} {str(folder)!r}: config.json must be a JSON object, found {describe_file(path)}"
        ) from None
    names = config.get("architectures") or ["AutoModel"]
    cls = getattr(transformers, names[0], None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ValueError(
            f"{folder}: config.json names the architecture {names[0]!r}, which transformers does not have (models that"
            " need their own code are not loaded)"
        )
    return cls.from_pretrained(str(folder), trust_remote_code=False)


def read_weights(path: str | Path, what: str = "`--checkpoint`") -> dict[str, Any]:
    """A state dict from a checkpoint / state-dict / safetensors file (``read_state_dict``) or a ``save_compressed``
    file (``load_compressed``): nothing is unpickled.

    Raises:
        FileNotFoundError / ValueError: As those readers, naming ``what`` and the file.
    """
    if file_kind(path) == "safetensors" and tensor_file_format(path) == COMPRESSED_FORMAT:
        return load_compressed(path)
    return read_state_dict(path, what)


def _model_file(path: Path, allow_pickle: bool, what: str) -> nn.Module:
    """A ``.pt2`` program, or (only with ``allow_pickle``) a whole pickled module."""
    from lightning_compress.quantization.serialization import load_quantized

    if path.suffix == ".pt2" or file_kind(path) == "pt2":
        return load_quantized(path, compile=False, allow_pickle=allow_pickle, what=what)
    kind = file_kind(path)
    if kind not in ("torch-zip", "pickle"):
        raise ValueError(
            f"{what} {str(path)!r} must be a .pt2 program or a torch.save(model) file, found {describe_file(path)}"
            " (weights go in --checkpoint, beside an architecture)"
        )
    try:
        model = load_pickled(path, what, allow_pickle=allow_pickle)
    except PickledFileError as err:
        raise ValueError(f"{err}; a file of weights goes in --checkpoint, beside an architecture") from None
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"{what} {str(path)!r} holds a {type(model).__name__}, not a pickled nn.Module; pass an architecture as the"
            " model and this file as --checkpoint"
        )
    return model


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


def load_model(
    spec: str, checkpoint: Optional[str] = None, allow_pickle: bool = False, what: str = "`--model`"
) -> nn.Module:
    """Build a model from a command-line spec (see the module docstring), then load ``checkpoint`` into it.

    Args:
        spec: The model.
        checkpoint: Optional Lightning ``.ckpt``, state-dict, safetensors or ``save_compressed`` file loaded into the
            built model (never unpickled).
        allow_pickle: Also load a whole pickled module file, or a ``.pt2`` with pickled entries (warns): unpickling
            runs the code the file names, so only for files you trust (``--allow-pickle``).
        what: How to call the spec in messages (the option's name).

    Raises:
        FileNotFoundError: If the spec looks like a path (a folder, a file suffix) that does not exist.
        ValueError: If the spec matches none of the forms (the message lists them), a file holds pickled objects
            without ``allow_pickle``, a run config names a target that is not allowed, or the checkpoint does not
            fit.
    """
    from lightning_compress.pruning.structured.serialization import is_pruned_folder, load_pruned

    path = Path(spec)
    if path.is_dir() and (path / ".hydra" / "config.yaml").is_file():
        model = model_from_run(path)
    elif is_pruned_folder(path):
        model = load_pruned(path)
    elif path.is_dir() and (path / "config.json").is_file():
        model = _huggingface_model(path, what)
    elif path.is_dir():
        raise ValueError(f"{what} {spec!r} is a folder with neither .hydra/config.yaml, structure.json nor config.json")
    elif ":" in spec and not path.exists():
        model = _builder(spec)
    elif path.is_file():
        model = _model_file(path, allow_pickle, what)
    elif path.suffix or "/" in spec or "\\" in spec:
        raise FileNotFoundError(f"{what} {spec!r} must be {SPEC_FORMS}; no such file or folder")
    else:
        try:
            import torchvision
        except ImportError as err:
            raise ValueError(f"{what} {spec!r} is not {SPEC_FORMS} (torchvision is not installed)") from err
        if spec not in torchvision.models.list_models():
            raise ValueError(f"{what} {spec!r} is no folder, file, module:function or torchvision model name")
        model = torchvision.models.get_model(spec, weights=None)
    if checkpoint is not None:
        load_network_weights(model, read_weights(checkpoint, "`--checkpoint`"), what="`--checkpoint`")
    return model
