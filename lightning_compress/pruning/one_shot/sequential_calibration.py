"""Calibration of one-shot methods, layer by layer and block after block: gather each layer's input statistics
(:class:`~lightning_compress.pruning.one_shot.calibration.InputStatistics`) on calibration batches, and hand them to
the method (prune, quantize) as soon as the layer's inputs are final.

Transformers are processed one block at a time: the repeated blocks (a ``ModuleList`` of layers of one type, such as
``BertEncoder.layer``; found by :func:`find_repeated_blocks`, or named) are called directly on stored inputs. The
inputs of block 0 are captured once (the model's forward stops there); block ``i`` is calibrated on them, processed,
and run again to give the inputs of block ``i + 1``, which therefore sees the errors of the processed blocks before it
(as in the SparseGPT and GPTQ papers). Memory stays near one block's statistics plus one block's activations for the
calibration batches. Layers outside the blocks are processed from a pass of the whole model: those that run before the
first block first, the others (pooler, classifier) at the end, on the already-processed model. Models without
repeated blocks (a CNN, an MLP) are calibrated in one pass.

A key/value cache the model hands its blocks (Hugging Face decoders in eval mode) is dropped from the stored calls
(:func:`without_cache`): each stored call is run more than once. Padding is not calibration data: for a dict batch
with a 2-D ``attention_mask`` (Hugging Face), Linear inputs of shape
``(B, L, in)`` contribute only the tokens the mask keeps.

Data-parallel calibration: with the model whole on every rank (DDP, or one-shot work under an initialised
``torch.distributed`` process group of more than one rank) and ``distributed="auto"``, each rank takes its share of
the calibration batches (``batches[rank::world_size]``; the same batches must be given on every rank), and each
layer's statistics (Hessian, squared norms, ``|x|`` sums, token counts) are all-reduced before the layer is
processed (:func:`~lightning_compress.pruning.one_shot.calibration.all_reduce_statistics`), so every rank prunes or
quantizes from the statistics of all the batches and computes the same result, while each rank runs only its share
of the forward passes. Block after block, block ``i + 1``'s inputs on a rank are its own share, computed through the
already processed block ``i``. The weights themselves are never split: a method that looks across the rows of a
weight (SparseGPT chooses masks across the rows of a column block) sees whole weights on every rank; a model sharded
across ranks (FSDP2 ``DTensor`` weights) is refused.

Example:
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> seen = {}
    >>> calibration = LayerCalibration({"0": net[0], "2": net[2]}, hessian=False,
    ...                                process=lambda name, stats: seen.setdefault(name, stats.tokens))
    >>> calibrate_sequentially(net, [torch.randn(5, 4)], lambda m, b: m(b), ["0", "2"], calibration, blocks=None)
    >>> seen
    {'0': 5, '2': 5}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import torch
from torch import Tensor, nn

from lightning_compress.core.distributed import data_parallel
from lightning_compress.pruning.one_shot.calibration import InputStatistics, all_reduce_statistics

__all__ = ["ForwardFn", "LayerCalibration", "calibrate_sequentially", "find_repeated_blocks", "without_cache"]

ForwardFn = Callable[[nn.Module, Any], Any]
UNSEEN = "received no input during calibration (not called by the forward?)"


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


class LayerCalibration:
    """Input statistics of named layers while they are attached, handed to ``process`` once complete.

    Args:
        layers: ``{name: layer}`` of every layer that may be calibrated (names as the caller likes them).
        hessian: Keep ``2 X X^T / tokens`` per layer (SparseGPT, GPTQ) as well as the input norms (Wanda, AWQ).
        process: ``process(name, statistics)``, called once per layer that saw input: prune or quantize it.
        unseen: ``unseen(name, reason)``, called for a layer that saw no input when it was due.
        abs_mean: Keep the mean ``|x_j|`` too (AWQ).
        distributed: ``"auto"``: under an initialised process group of more than one rank, calibrate data-parallel
            (each rank its share of the batches, the statistics all-reduced before ``process``; see the module
            docstring); ``False``: every rank calibrates on all the batches by itself.
        broadcast: When data-parallel, also split the layers' processing: of the layers finished together (a block's,
            whose statistics are all complete before any is processed), each is processed by one rank only (dealt
            out by cost, ``in^2 * (out + in)``, largest first, each to the least loaded rank: the same on every
            rank), and then ``broadcast(name, src)`` is called on every rank, for every such layer in the same order,
            to hand rank ``src``'s result to the others. None: every rank processes every layer.

    Attributes:
        parallel: The ranks calibrated over (:class:`~lightning_compress.core.distributed.DataParallel`), or None.

    Raises:
        ValueError: If ``distributed`` is not ``"auto"`` or ``False``.
    """

    def __init__(
        self,
        layers: Mapping[str, nn.Module],
        hessian: bool,
        process: Callable[[str, InputStatistics], Any],
        unseen: Optional[Callable[[str, str], Any]] = None,
        abs_mean: bool = False,
        distributed: Any = "auto",
        broadcast: Optional[Callable[[str, int], Any]] = None,
    ) -> None:
        self.parallel = data_parallel(distributed)
        self.broadcast = broadcast
        self.layers = dict(layers)
        self.hessian = hessian
        self.abs_mean = abs_mean
        self.process = process
        self.unseen = unseen
        self.active: dict[str, InputStatistics] = {}

    def attach(self, names: Sequence[str]) -> dict[str, InputStatistics]:
        """Start gathering the statistics of ``names`` (forward hooks)."""
        self.active = {
            name: InputStatistics(self.layers[name], hessian=self.hessian, abs_mean=self.abs_mean) for name in names
        }
        return self.active

    def detach(self) -> dict[str, InputStatistics]:
        """Stop gathering; the statistics gathered so far."""
        stats, self.active = self.active, {}
        for s in stats.values():
            s.remove()
        return stats

    def set_batch(self, batch: Any) -> None:
        """Tell the active statistics which tokens of the next calls are real: a dict batch's 2-D ``attention_mask``
        (Hugging Face padding); all tokens otherwise."""
        mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
        mask = mask.bool() if isinstance(mask, Tensor) and mask.dim() == 2 else None
        for stats in self.active.values():
            stats.token_mask = mask

    def share(self, batches: Sequence[Any]) -> list[Any]:
        """This rank's share of the calibration ``batches`` (all of them when not data-parallel).

        Raises:
            ValueError: If data-parallel and there are fewer batches than ranks, or the ranks hold different numbers.
        """
        return list(batches) if self.parallel is None else self.parallel.share(batches)

    def finish(self, stats: Mapping[str, InputStatistics], only_seen: bool = False) -> list[str]:
        """All-reduce the statistics when data-parallel, then process every layer of ``stats`` that saw input (only
        this rank's share of them, then ``broadcast``, when ``broadcast`` is given); report the others as unseen (or,
        with ``only_seen``, leave them for later). Returns the names processed."""
        all_reduce_statistics(list(stats.values()), self.parallel)
        done = []
        for name, s in stats.items():
            if s.tokens == 0:
                if not only_seen and self.unseen is not None:
                    self.unseen(name, UNSEEN)
                continue
            done.append(name)
        owners = self.owners(done) if self.parallel is not None and self.broadcast is not None else None
        for name in done:
            if owners is None or owners[name] == self.parallel.rank:  # type: ignore[union-attr]
                self.process(name, stats[name])
        if owners is not None:
            assert self.broadcast is not None
            for name in done:
                self.broadcast(name, owners[name])
        return done

    def owners(self, names: Sequence[str]) -> dict[str, int]:
        """The rank that processes each of ``names`` when the processing is split: largest ``in^2 * (out + in)``
        first (SparseGPT's and GPTQ's cost), each to the least loaded rank (ties: the lowest rank); the same on every
        rank.

        Example:
            >>> from lightning_compress.core.distributed import DataParallel
            >>> calibration = LayerCalibration({"a": nn.Linear(64, 8), "b": nn.Linear(8, 8), "c": nn.Linear(8, 8)},
            ...                                hessian=True, process=print)
            >>> calibration.parallel = DataParallel(rank=0, world_size=2)
            >>> calibration.owners(["a", "b", "c"])
            {'a': 0, 'b': 1, 'c': 1}
        """
        assert self.parallel is not None
        load = [0] * self.parallel.world_size
        owners: dict[str, int] = {}
        for name in sorted(names, key=lambda n: -_cost(self.layers[n])):  # sorted is stable: ties keep their order
            rank = min(range(len(load)), key=load.__getitem__)
            owners[name] = rank
            load[rank] += _cost(self.layers[name])
        return {name: owners[name] for name in names}

    def run(self, names: Sequence[str], run: Callable[[], Any]) -> list[str]:
        """Gather the statistics of ``names`` while ``run()`` runs, then :meth:`finish` them."""
        self.attach(names)
        try:
            run()
        finally:
            stats = self.detach()
        return self.finish(stats)


def _cost(layer: nn.Module) -> int:
    """``in^2 * (out + in)`` of a layer's GEMM: the work of a Hessian-based solve on it (the column walk's updates,
    ``out * in^2``, and the Hessian's Cholesky inverse, of the order of ``in^3``)."""
    out = layer.weight.shape[0]
    width = layer.weight.numel() // max(out, 1)
    return width * width * (out + width)


class _StopForward(Exception):
    """Raised by the hook that captures the inputs of the first block, to skip the rest of the forward pass."""


@torch.no_grad()
def calibrate_sequentially(
    model: nn.Module,
    batches: Sequence[Any],
    forward: ForwardFn,
    names: Sequence[str],
    calibration: LayerCalibration,
    blocks: Optional[str],
) -> None:
    """Calibrate and process the layers ``names`` of ``model``: block after block when ``blocks`` names the repeated
    blocks, else in one pass (see the module docstring).

    Args:
        model: The model, in eval mode, on the batches' device.
        batches: The calibration batches (the same on every rank when ``calibration`` is data-parallel: each rank
            runs its share).
        forward: ``forward(model, batch)`` runs the model on a batch.
        names: Layers to process, by parameter-owner name relative to ``model`` (those inside block ``i`` start with
            ``"<blocks>.<i>."``).
        calibration: Gathers statistics and processes each layer.
        blocks: The qualified name of an ``nn.ModuleList`` / ``nn.Sequential`` whose children the model calls one
            after another (each on the previous one's output: the first positional argument, or ``hidden_states``),
            or None for one pass.

    Raises:
        ValueError: If the model's forward does not reach the first block on every batch; when data-parallel, if
            there are fewer batches than ranks (before any work).
    """
    batches = calibration.share(batches)
    if blocks is None:
        calibration.run(names, lambda: _run_all(model, batches, forward, calibration))
        return
    container = model.get_submodule(blocks)
    prefixes = [f"{blocks}.{i}." if blocks else f"{i}." for i in range(len(container))]
    in_block = [[name for name in names if name.startswith(prefix)] for prefix in prefixes]
    outer = [name for name in names if not any(name.startswith(prefix) for prefix in prefixes)]

    def capture() -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        captured: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            captured.append((args, without_cache(kwargs)))
            raise _StopForward

        handle = container[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            for batch in batches:
                calibration.set_batch(batch)
                try:
                    forward(model, batch)
                except _StopForward:
                    continue
        finally:
            handle.remove()
        if len(captured) != len(batches):
            raise ValueError(
                f"the model's forward did not reach `{blocks}.0` on every calibration batch; pass `blocks=None`"
                " to calibrate in one pass, or `blocks=` the name of the blocks the forward runs one after another"
            )
        return captured

    # layers that run before the first block: calibrated in the capture pass, processed, then the inputs re-captured
    calibration.attach(outer)
    try:
        inputs = capture()
    finally:
        stats = calibration.detach()
    before = calibration.finish(stats, only_seen=True)
    if before:
        inputs = capture()

    for block, block_names in zip(container, in_block):

        def run_block(b: nn.Module = block, calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = inputs) -> None:
            for batch, (args, kwargs) in zip(batches, calls):
                calibration.set_batch(batch)
                b(*args, **kwargs)

        calibration.run(block_names, run_block)
        inputs = [_with_hidden(args, kwargs, _first_tensor(block(*args, **kwargs))) for args, kwargs in inputs]
    inputs.clear()  # the last block's outputs: free them before the layers after the blocks run

    after = [name for name in outer if name not in before]
    if after:
        calibration.run(after, lambda: _run_all(model, batches, forward, calibration))


CACHE_KEYS = ("past_key_values", "past_key_value", "layer_past", "cache")


def without_cache(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A block call's keyword arguments without a key/value cache: a stored call is run several times (calibration,
    then the outputs for the next block), and a Hugging Face ``DynamicCache`` would grow by the keys and values of
    each run, so later runs would attend to stale copies (and hold them in memory).

    Example:
        >>> without_cache({"use_cache": True, "past_key_values": object(), "position_ids": 1})
        {'use_cache': False, 'past_key_values': None, 'position_ids': 1}
    """
    out = dict(kwargs)
    for key, value in kwargs.items():
        if key == "use_cache":
            out[key] = False
        elif key in CACHE_KEYS or type(value).__name__.endswith("Cache"):
            out[key] = None
    return out


def _run_all(model: nn.Module, batches: Sequence[Any], forward: ForwardFn, calibration: LayerCalibration) -> None:
    for batch in batches:
        calibration.set_batch(batch)
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
