"""One-shot pruning of a trained model from a few calibration batches: magnitude, Wanda or SparseGPT, to a sparsity
or N:M, with no retraining.

:func:`one_shot_prune` gathers the inputs of every selected Linear / Conv layer with forward hooks
(:mod:`~lightning_compress.calibration_statistics`), prunes each layer with the chosen method
(:func:`~lightning_compress.wanda.wanda_mask`, :func:`~lightning_compress.sparsegpt.sparsegpt_prune`, or plain
magnitude, which needs no data), writes the pruned weights in place and returns the masks.

Transformers are processed one block at a time: the repeated blocks (a ``ModuleList`` of layers of one type, such as
``BertEncoder.layer``; found automatically, or named with ``blocks``) are called directly on stored inputs. The inputs
of block 0 are captured once (the model's forward stops there); block ``i`` is calibrated on them, pruned, and run
again to give the inputs of block ``i + 1``, which therefore sees the errors of the pruned blocks before it (as in
the SparseGPT paper). Memory stays near one block's statistics plus one block's activations for the calibration
batches. Layers outside the blocks are pruned from a pass of the whole model: those that run before the first block
first, the others (pooler, classifier) at the end, on the already-pruned model. Models without repeated blocks (a CNN,
an MLP) are calibrated in one pass of the dense model.

Everything runs on the model's device, under ``torch.no_grad`` and in eval mode (the mode is restored afterwards).
Padding is not calibration data: for a dict batch with a 2-D ``attention_mask`` (Hugging Face), Linear inputs of shape
``(B, L, in)`` contribute only the tokens the mask keeps.

Also a command over a trained Hugging Face classifier (a ``save_pretrained`` folder, or such a folder plus a Lightning
checkpoint of a ``ClassificationModule`` around it, as ``lc-train`` writes), calibrated on a GLUE-style task::

    python -m lightning_compress.one_shot_pruning MODEL_DIR --method sparsegpt --sparsity 0.5 \\
        --task rotten_tomatoes --calibration-batches 8 --output pruned/
    python -m lightning_compress.one_shot_pruning MODEL_DIR --ckpt outputs/.../last.ckpt --method wanda --nm 2:4

Example:
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    >>> loader = [torch.randn(32, 8) for _ in range(4)]
    >>> result = one_shot_prune(net, loader, method="sparsegpt", sparsity=0.5)
    >>> sorted(result.masks), result.sparsity
    (['0.weight', '2.weight'], 0.5)
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from lightning_compress.calibration_statistics import InputStatistics, unsupported_reason
from lightning_compress.magnitude import magnitude_mask
from lightning_compress.nm_mask import nm_mask
from lightning_compress.prunable_weights import FilterFn, prunable_weights
from lightning_compress.sparsegpt import sparsegpt_prune
from lightning_compress.sparsity_pattern import check_sparsity_pattern, pattern_name
from lightning_compress.wanda import wanda_mask

__all__ = ["METHODS", "OneShotResult", "default_forward", "find_repeated_blocks", "one_shot_prune"]

METHODS = ("magnitude", "sparsegpt", "wanda")
ForwardFn = Callable[[nn.Module, Any], Any]


@dataclass
class OneShotResult:
    """What :func:`one_shot_prune` did.

    Attributes:
        masks: ``{"<module fqn>.weight": bool keep-mask}`` of every pruned weight, on its device.
        skipped: ``{"<module fqn>.weight": reason}`` of the selected weights left dense.
        method: ``"magnitude"``, ``"wanda"`` or ``"sparsegpt"``.
        pattern: ``"50%"`` or ``"2:4"``.
        blocks: The qualified name of the blocks processed one after another, or None (one pass).
        calibration_batches: Batches used (0 for magnitude).
        seconds: Wall time.
    """

    masks: dict[str, Tensor]
    skipped: dict[str, str] = field(default_factory=dict)
    method: str = "sparsegpt"
    pattern: str = ""
    blocks: Optional[str] = None
    calibration_batches: int = 0
    seconds: float = 0.0

    @property
    def sparsity(self) -> float:
        """Fraction of the pruned weights' elements that the masks prune."""
        total = sum(mask.numel() for mask in self.masks.values())
        kept = sum(int(mask.count_nonzero()) for mask in self.masks.values())
        return (total - kept) / total if total else 0.0


def default_forward(model: nn.Module, batch: Any) -> Any:
    """Call ``model`` on a batch: a dict (Hugging Face) without its ``labels``, the first item of a tuple or list
    (``(inputs, labels)``), or the batch itself.

    Example:
        >>> default_forward(torch.nn.Identity(), (torch.ones(2), torch.zeros(2)))
        tensor([1., 1.])
    """
    if isinstance(batch, Mapping):
        return model(**{k: v for k, v in batch.items() if k != "labels"})
    if isinstance(batch, (tuple, list)):
        return model(batch[0])
    return model(batch)


def find_repeated_blocks(model: nn.Module) -> Optional[str]:
    """The qualified name of the model's repeated blocks: of the ``nn.ModuleList`` s with at least two children, all
    of one type and holding a Linear or Conv layer, the one with the most parameters; None if there is none.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> find_repeated_blocks(BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        ...                                           intermediate_size=64)))
        'encoder.layer'
    """
    best, best_size = None, 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        if not any(isinstance(sub, (nn.Linear, nn.Conv1d, nn.Conv2d)) for sub in module.modules()):
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > best_size:
            best, best_size = name, size
    return best


class _StopForward(Exception):
    """Raised by the hook that captures the inputs of the first block, to skip the rest of the forward pass."""


@torch.no_grad()
def one_shot_prune(
    model: nn.Module,
    dataloader: Optional[Iterable[Any]],
    method: str = "sparsegpt",
    sparsity: Optional[float] = None,
    n: Optional[int] = None,
    m: Optional[int] = None,
    calibration_batches: int = 16,
    filter_fn: Optional[FilterFn] = None,
    skip_first_conv: bool = False,
    skip_classifier: bool = False,
    blocks: Optional[str] = "auto",
    forward_fn: Optional[ForwardFn] = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> OneShotResult:
    """Prune the Linear / Conv weights of a trained ``model`` in place, to ``sparsity`` or N:M, in one shot.

    Every selected layer gets the same pattern: exactly ``round(sparsity * numel)`` pruned weights per layer (Wanda
    spreads them evenly over the output rows), or ``n`` kept of every ``m`` consecutive inputs.

    Args:
        model: The model, on the device to work on.
        dataloader: Calibration batches (any iterable; e.g. the train dataloader); ignored (may be None) for
            ``"magnitude"``. Batches are moved to the model's device.
        method: ``"magnitude"``, ``"wanda"`` or ``"sparsegpt"``.
        sparsity: Unstructured target in [0, 1); or give ``n`` and ``m``.
        n: N:M: weights kept per group of ``m`` consecutive inputs (along ``weight.reshape(out, -1)``).
        m: N:M group size.
        calibration_batches: Batches taken from ``dataloader``, >= 1.
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing the layers to prune (see
            :func:`~lightning_compress.prunable_weights.prunable_weights`); default: Linear and Conv layers.
        skip_first_conv: Leave the first convolution dense.
        skip_classifier: Leave the last Linear dense.
        blocks: ``"auto"`` (:func:`find_repeated_blocks`), the qualified name of an ``nn.ModuleList`` /
            ``nn.Sequential`` whose children the model calls one after another, each on the previous one's output
            (the first positional argument, or ``hidden_states``), or None for one pass of the whole model.
        forward_fn: ``forward_fn(model, batch)`` runs the model on a batch; default :func:`default_forward`.
        blocksize: SparseGPT's columns per lazy-update block, >= 1 (a multiple of ``m`` for N:M).
        percdamp: SparseGPT's dampening, a fraction of the mean Hessian diagonal, >= 0.

    Returns:
        A :class:`OneShotResult` with the masks (the weights are already pruned) and the skipped layers.

    Raises:
        ValueError: Before any work, for a bad argument (every problem listed, each naming the argument, its value and
            what is allowed; an empty ``dataloader`` included); if no selected layer can be pruned; if ``dataloader``
            yields no batch; if the model's forward never reaches the blocks.

    Warns:
        UserWarning: When SparseGPT raised the dampening of a layer (its name is in the message).

    Example:
        >>> conv_net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 8))
        >>> images = [(torch.randn(16, 1, 8, 8), torch.zeros(16)) for _ in range(2)]
        >>> result = one_shot_prune(conv_net, images, method="wanda", n=2, m=4)
        >>> result.pattern, sorted(result.masks), result.skipped
        ('2:4', ['2.weight'], {'0.weight': 'reduction dim 9 is not a multiple of m=4'})
    """
    start = time.perf_counter()
    errors = _validate(
        model, dataloader, method, sparsity, n, m, calibration_batches, filter_fn, skip_first_conv, skip_classifier,
        blocks, forward_fn, blocksize, percdamp,
    )  # fmt: skip
    if errors:
        raise ValueError("; ".join(errors))
    params = prunable_weights(model, filter_fn, skip_first_conv, skip_classifier)
    owners = {name: model.get_submodule(name[: -len(".weight")] if name != "weight" else "") for name in params}
    skipped: dict[str, str] = {}
    for name, weight in params.items():
        reason = None
        if weight.dim() < 2 and (m is not None or method != "magnitude"):
            reason = f"{weight.dim()}-D weight"
        elif m is not None and (weight.numel() // weight.shape[0]) % m:
            reason = f"reduction dim {weight.numel() // weight.shape[0]} is not a multiple of m={m}"
        elif method != "magnitude":
            reason = unsupported_reason(owners[name])
        if reason is not None:
            skipped[name] = reason
    eligible = [name for name in params if name not in skipped]
    if not eligible:
        listed = ", ".join(f"{name}: {why}" for name, why in skipped.items())
        raise ValueError(f"one_shot_prune({method!r}) found no layer it can prune in {type(model).__name__}: {listed}")

    result = OneShotResult(masks={}, skipped=skipped, method=method, pattern=pattern_name(sparsity, n, m))
    if method == "magnitude":
        for name in eligible:
            weight = params[name]
            mask = magnitude_mask(weight, sparsity) if sparsity is not None else nm_mask(weight, n or 0, m or 0)
            weight.mul_(mask)
            result.masks[name] = mask
        result.seconds = time.perf_counter() - start
        return result

    assert dataloader is not None
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    batches = [_to_device(batch, device) for batch in itertools.islice(dataloader, calibration_batches)]
    if not batches:
        raise ValueError("`dataloader` yielded no batch: one-shot pruning needs calibration data")
    result.calibration_batches = len(batches)
    block_name = find_repeated_blocks(model) if blocks == "auto" else blocks
    result.blocks = block_name
    pruner = _Pruner(params, owners, method, sparsity, n, m, blocksize, percdamp, result)
    forward = forward_fn if forward_fn is not None else default_forward
    was_training = model.training
    model.eval()
    try:
        if block_name is None:
            pruner.calibrate_and_prune(eligible, lambda: _run_all(model, batches, forward, pruner))
        else:
            _prune_blockwise(model, block_name, batches, forward, eligible, pruner)
    finally:
        model.train(was_training)
    result.seconds = time.perf_counter() - start
    return result


class _Pruner:
    """Gathers input statistics of some layers, then prunes them with one method."""

    def __init__(
        self,
        params: dict[str, nn.Parameter],
        owners: dict[str, nn.Module],
        method: str,
        sparsity: Optional[float],
        n: Optional[int],
        m: Optional[int],
        blocksize: int,
        percdamp: float,
        result: OneShotResult,
    ) -> None:
        self.params, self.owners, self.method = params, owners, method
        self.sparsity, self.n, self.m, self.blocksize, self.percdamp = sparsity, n, m, blocksize, percdamp
        self.result = result
        self.active: dict[str, InputStatistics] = {}

    def attach(self, names: Sequence[str]) -> dict[str, InputStatistics]:
        self.active = {name: InputStatistics(self.owners[name], hessian=self.method == "sparsegpt") for name in names}
        return self.active

    def set_batch(self, batch: Any) -> None:
        """Tell the active statistics which tokens of the next calls are real: a dict batch's 2-D ``attention_mask``
        (Hugging Face padding); all tokens otherwise."""
        mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
        mask = mask.bool() if isinstance(mask, Tensor) and mask.dim() == 2 else None
        for stats in self.active.values():
            stats.token_mask = mask

    def calibrate_and_prune(self, names: Sequence[str], run: Callable[[], Any]) -> list[str]:
        """Gather the statistics of ``names`` while ``run()`` runs, prune those that saw input; return them."""
        stats = self.attach(names)
        try:
            run()
        finally:
            for s in stats.values():
                s.remove()
        return self.prune(stats)

    def prune(self, stats: dict[str, InputStatistics], only_seen: bool = False) -> list[str]:
        """Prune every layer of ``stats`` that saw input; the others are listed as skipped (or, with ``only_seen``,
        left for later). Returns the names pruned."""
        done = []
        for name, s in stats.items():
            if s.tokens == 0:
                if not only_seen:
                    self.result.skipped[name] = "received no input during calibration (not called by the forward?)"
                continue
            self.result.masks[name] = self._prune_one(name, s)
            done.append(name)
        return done

    def _prune_one(self, name: str, stats: InputStatistics) -> Tensor:
        weight = self.params[name]
        if self.method == "wanda":
            mask = wanda_mask(weight, stats.input_norms(), self.sparsity, self.n, self.m)
            weight.mul_(mask)
            return mask
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            new, mask = sparsegpt_prune(
                weight, stats.hessian(), self.sparsity, self.n, self.m, self.blocksize, self.percdamp
            )
        for w in caught:
            warnings.warn(f"{name}: {w.message}", w.category, stacklevel=4)
        weight.copy_(new)
        return mask


def _prune_blockwise(
    model: nn.Module,
    block_name: str,
    batches: list[Any],
    forward: ForwardFn,
    eligible: list[str],
    pruner: _Pruner,
) -> None:
    """Prune the layers before the blocks, then the blocks one after another, then the layers after them."""
    blocks = model.get_submodule(block_name)
    prefixes = [f"{block_name}.{i}." if block_name else f"{i}." for i in range(len(blocks))]
    in_block = [[name for name in eligible if name.startswith(prefix)] for prefix in prefixes]
    outer = [name for name in eligible if not any(name.startswith(prefix) for prefix in prefixes)]

    def capture() -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        captured: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            captured.append((args, kwargs))
            raise _StopForward

        handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            for batch in batches:
                pruner.set_batch(batch)
                try:
                    forward(model, batch)
                except _StopForward:
                    continue
        finally:
            handle.remove()
        if len(captured) != len(batches):
            raise ValueError(
                f"the model's forward did not reach `{block_name}.0` on every calibration batch; pass `blocks=None`"
                " to calibrate in one pass, or `blocks=` the name of the blocks the forward runs one after another"
            )
        return captured

    # layers that run before the first block: calibrated in the capture pass, pruned, then the inputs re-captured
    stats = pruner.attach(outer)
    try:
        inputs = capture()
    finally:
        for s in stats.values():
            s.remove()
    before = pruner.prune(stats, only_seen=True)
    if before:
        inputs = capture()

    for block, names in zip(blocks, in_block):
        def run_block(b: nn.Module = block) -> None:
            for batch, (args, kwargs) in zip(batches, inputs):
                pruner.set_batch(batch)
                b(*args, **kwargs)

        pruner.calibrate_and_prune(names, run_block)
        inputs = [_with_hidden(args, kwargs, _first_tensor(block(*args, **kwargs))) for args, kwargs in inputs]
    del inputs

    after = [name for name in outer if name not in before]
    if after:
        pruner.calibrate_and_prune(after, lambda: _run_all(model, batches, forward, pruner))


def _run_all(model: nn.Module, batches: list[Any], forward: ForwardFn, pruner: _Pruner) -> None:
    for batch in batches:
        pruner.set_batch(batch)
        forward(model, batch)


def _first_tensor(output: Any) -> Tensor:
    """A block's output hidden states: the output, its first item (tuple), or its first value (dict / ModelOutput)."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        return _first_tensor(next(iter(output.values())))
    if isinstance(output, (tuple, list)) and output:
        return _first_tensor(output[0])
    raise TypeError(f"cannot find the hidden states in a block output of type {type(output).__name__}")


def _with_hidden(
    args: tuple[Any, ...], kwargs: dict[str, Any], hidden: Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call ``(args, kwargs)`` with its hidden states (first positional argument, else ``hidden_states`` or the
    first tensor keyword) replaced."""
    if args and isinstance(args[0], Tensor):
        return (hidden, *args[1:]), kwargs
    key = "hidden_states" if "hidden_states" in kwargs else next(k for k, v in kwargs.items() if isinstance(v, Tensor))
    return args, {**kwargs, key: hidden}


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_to_device(v, device) for v in batch)
    if isinstance(batch, list):
        return [_to_device(v, device) for v in batch]
    return batch


def _validate(
    model: Any,
    dataloader: Any,
    method: Any,
    sparsity: Any,
    n: Any,
    m: Any,
    calibration_batches: Any,
    filter_fn: Any,
    skip_first_conv: Any,
    skip_classifier: Any,
    blocks: Any,
    forward_fn: Any,
    blocksize: Any,
    percdamp: Any,
) -> list[str]:
    """Every problem with the arguments, as messages naming the argument, the value and what is allowed."""
    errors = check_method_arguments(method, sparsity, n, m, calibration_batches, blocksize, percdamp)
    if not isinstance(model, nn.Module):
        errors.append(f"`model` must be an nn.Module, got {type(model).__name__}")
    if method != "magnitude" and method in METHODS:
        if dataloader is None:
            errors.append(f"`dataloader` must give calibration batches for method={method!r}, got None")
        elif hasattr(dataloader, "__len__") and len(dataloader) == 0:
            errors.append(f"`dataloader` is empty: method={method!r} needs calibration batches")
    if filter_fn is not None and not callable(filter_fn):
        errors.append(f"`filter_fn` must be a callable(module, fqn) -> bool or None, got {filter_fn!r}")
    if forward_fn is not None and not callable(forward_fn):
        errors.append(f"`forward_fn` must be a callable(model, batch) or None, got {forward_fn!r}")
    for name, value in (("skip_first_conv", skip_first_conv), ("skip_classifier", skip_classifier)):
        if not isinstance(value, bool):
            errors.append(f"`{name}` must be a bool, got {value!r}")
    if blocks is not None and blocks != "auto":
        found = None
        if isinstance(blocks, str) and isinstance(model, nn.Module):
            try:
                found = model.get_submodule(blocks)
            except AttributeError:
                found = None
        if not isinstance(found, (nn.ModuleList, nn.Sequential)) or len(found) == 0:
            errors.append(
                f"`blocks` must be 'auto', None or the qualified name of a non-empty nn.ModuleList / nn.Sequential"
                f" of the model, got {blocks!r}"
            )
    return errors


def check_method_arguments(
    method: Any, sparsity: Any, n: Any, m: Any, calibration_batches: Any, blocksize: Any, percdamp: Any
) -> list[str]:
    """The checks :func:`one_shot_prune` and the ``OneShotPruning`` callback share (no model needed).

    Example:
        >>> check_method_arguments("obs", 0.5, None, None, 16, 128, 0.01)
        ["`method` must be one of magnitude, sparsegpt, wanda, got 'obs'"]
    """
    errors = []
    if method not in METHODS:
        errors.append(f"`method` must be one of {', '.join(METHODS)}, got {method!r}")
    errors += check_sparsity_pattern(sparsity, n, m)
    if isinstance(calibration_batches, bool) or not isinstance(calibration_batches, int) or calibration_batches < 1:
        errors.append(f"`calibration_batches` must be an int >= 1, got {calibration_batches!r}")
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
        errors.append(f"`blocksize` must be an int >= 1, got {blocksize!r}")
    elif isinstance(m, int) and m >= 2 and blocksize % m:
        errors.append(f"`blocksize` must be a multiple of m={m}, got {blocksize!r}")
    if isinstance(percdamp, bool) or not isinstance(percdamp, (int, float)) or not percdamp >= 0:
        errors.append(f"`percdamp` must be a number >= 0, got {percdamp!r}")
    return errors


# ---------------------------------------------------------------------------------------------------------- command
def _parse_nm(text: str) -> tuple[int, int]:
    try:
        n, m = (int(part) for part in text.split(":"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--nm must look like 2:4, got {text!r}") from err
    return n, m


def _load_classifier(model_dir: str, ckpt: Optional[str], num_labels: int) -> nn.Module:
    from lightning_compress.models import huggingface_classifier

    model = huggingface_classifier(model_dir, num_labels=num_labels)
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
        weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        if not weights:
            raise ValueError(f"`--ckpt` {ckpt} holds no `model.*` weights (a ClassificationModule checkpoint?)")
        model.load_state_dict(weights)
    return model


@torch.no_grad()
def _accuracy(model: nn.Module, loader: Iterable[Mapping[str, Tensor]], device: torch.device) -> float:
    model.eval()
    right = total = 0
    for batch in loader:
        batch = _to_device(batch, device)
        logits = default_forward(model, batch).logits
        right += int((logits.argmax(-1) == batch["labels"]).sum())
        total += batch["labels"].numel()
    return right / total


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """``python -m lightning_compress.one_shot_pruning``: prune a trained Hugging Face classifier in one shot.

    Prints one line per step and returns the summary (also printed as the last line, as a dict).
    """
    parser = argparse.ArgumentParser(
        prog="python -m lightning_compress.one_shot_pruning",
        description="One-shot pruning (magnitude, Wanda, SparseGPT) of a trained Hugging Face sequence classifier.",
    )
    parser.add_argument("model_dir", help="a save_pretrained folder (or, with --ckpt, the folder of its architecture)")
    parser.add_argument("--ckpt", default=None, help="a Lightning checkpoint of a ClassificationModule around it")
    parser.add_argument("--method", choices=METHODS, default="sparsegpt")
    pattern = parser.add_mutually_exclusive_group(required=True)
    pattern.add_argument("--sparsity", type=float)
    pattern.add_argument("--nm", type=_parse_nm, help="N:M, e.g. 2:4")
    parser.add_argument("--task", default="rotten_tomatoes", help="a GLUE task (or rotten_tomatoes, offline)")
    parser.add_argument("--tokenizer", default=None, help="default: model_dir")
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-classifier", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-eval", action="store_true", help="skip the validation accuracy before and after")
    parser.add_argument("--output", default=None, help="save_pretrained the pruned model here")
    args = parser.parse_args(argv)

    from lightning_compress.data import GLUEDataModule

    n, m = args.nm if args.nm is not None else (None, None)
    data = GLUEDataModule(args.task, tokenizer=args.tokenizer or args.model_dir, batch_size=args.batch_size,
                          seed=args.seed)  # fmt: skip
    data.setup("fit")
    device = torch.device(args.device)
    model = _load_classifier(args.model_dir, args.ckpt, data.num_classes).to(device)
    summary: dict[str, Any] = {"method": args.method, "pattern": pattern_name(args.sparsity, n, m)}
    if not args.no_eval and data.task != "regression":
        summary["val_acc_before"] = _accuracy(model, data.val_dataloader(), device)
        print(f"validation accuracy before: {100 * summary['val_acc_before']:.2f}%", flush=True)
    result = one_shot_prune(
        model, data.train_dataloader(), method=args.method, sparsity=args.sparsity, n=n, m=m,
        calibration_batches=args.calibration_batches, skip_classifier=args.skip_classifier,
    )  # fmt: skip
    summary.update(sparsity=result.sparsity, seconds=result.seconds, skipped=result.skipped, blocks=result.blocks)
    print(f"{args.method} {result.pattern}: sparsity 0.00% -> {result.sparsity:.2%} of {len(result.masks)} weights"
          f" in {result.seconds:.1f} s ({len(result.skipped)} skipped)", flush=True)  # fmt: skip
    if not args.no_eval and data.task != "regression":
        summary["val_acc_after"] = _accuracy(model, data.val_dataloader(), device)
        print(f"validation accuracy after: {100 * summary['val_acc_after']:.2f}%", flush=True)
    if args.output:
        model.save_pretrained(args.output)
        if data.tokenizer is not None:
            data.tokenizer.save_pretrained(args.output)
        summary["output"] = args.output
    print(summary)
    return summary


if __name__ == "__main__":
    main()
