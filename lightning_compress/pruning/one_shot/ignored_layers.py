"""Which selected layers one-shot methods (pruning and weight quantization) leave alone by default: the model's
output head, and every layer whose weight is the same tensor as an embedding's.

A causal LM often ties its output head to its input embedding (SmolLM2, Llama 3.2, GPT-2 do): pruning or quantizing
``lm_head`` then changes the embedding too, which costs far more than the head is worth (measured on SmolLM2-135M:
SparseGPT 50 % perplexity 86.6 with the head pruned against 70.0 without). ``ignore="auto"`` leaves both out;
``ignore=()`` selects everything the filter chose, and a selected tied weight gets a warning naming both uses.

The output head is what ``get_output_embeddings()`` returns on any submodule that has the method (Hugging Face
models); a sequence classifier's head (``None`` there) is not one.

Example:
    >>> class TinyLM(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed, self.body = torch.nn.Embedding(8, 4), torch.nn.Linear(4, 4)
    ...         self.head = torch.nn.Linear(4, 8)
    ...         self.head.weight = self.embed.weight
    >>> net = TinyLM()
    >>> layers = {"body": net.body, "head": net.head}
    >>> kept, skipped = apply_ignore(net, layers, "auto", "pruning")
    >>> list(kept), skipped
    (['body'], {'head': 'left out by default: its weight is also embed.weight (tied); pass ignore=() to include it'})
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Union

import torch  # noqa: F401 - the doctest uses it
from torch import nn

from lightning_compress.core.validation import ArgumentErrors

__all__ = ["IgnoreSpec", "apply_ignore", "check_ignore", "default_ignored", "output_heads", "weight_aliases"]

IgnoreSpec = Union[str, Sequence[str]]  # "auto", or module-name patterns (fnmatch: "lm_head", "*.down_proj")


def weight_aliases(model: nn.Module) -> dict[int, list[str]]:
    """``{id(tensor): [every parameter name holding it]}`` for the parameters held under more than one name."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return {key: value for key, value in names.items() if len(value) > 1}


def output_heads(model: nn.Module) -> set[int]:
    """``id`` of every module that a submodule's ``get_output_embeddings()`` returns (Hugging Face output heads)."""
    heads: set[int] = set()
    for module in model.modules():
        getter = getattr(module, "get_output_embeddings", None)
        if callable(getter):
            try:
                head = getter()
            except (AttributeError, NotImplementedError, TypeError):
                continue
            if isinstance(head, nn.Module):
                heads.add(id(head))
    return heads


def _embedding_names(model: nn.Module) -> dict[int, tuple[str, nn.Module]]:
    return {
        id(module.weight): (f"{fqn}.weight" if fqn else "weight", module)
        for fqn, module in model.named_modules()
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag))
    }


def _tied_to(layer: nn.Module, embeddings: Mapping[int, tuple[str, nn.Module]]) -> str:
    """The name of another module's embedding weight that ``layer``'s weight is too, or ``""``."""
    weight = getattr(layer, "weight", None)
    name, owner = embeddings.get(id(weight), ("", None)) if weight is not None else ("", None)
    return name if owner is not layer else ""


def default_ignored(model: nn.Module, layers: Mapping[str, nn.Module]) -> dict[str, str]:
    """The layers of ``layers`` (``{fqn: module}``) that ``ignore="auto"`` leaves out, with the reason.

    Example:
        >>> default_ignored(torch.nn.Sequential(torch.nn.Linear(2, 2)), {"0": torch.nn.Linear(2, 2)})
        {}
    """
    heads, embeddings = output_heads(model), _embedding_names(model)
    out = {}
    for fqn, layer in layers.items():
        tied = _tied_to(layer, embeddings)
        if tied:
            head = " the output head, and" if id(layer) in heads else ""
            out[fqn] = f"left out by default:{head} its weight is also {tied} (tied); pass ignore=() to include it"
        elif id(layer) in heads:
            out[fqn] = "left out by default: the output head; pass ignore=() to include it"
    return out


def check_ignore(errors: ArgumentErrors, ignore: Any) -> None:
    """``ignore`` is ``"auto"`` or a sequence of module-name patterns."""
    if isinstance(ignore, str):
        ok = ignore == "auto"
    else:  # a list, a tuple, a Hydra ListConfig
        ok = isinstance(ignore, Sequence) or hasattr(ignore, "__iter__")
        ok = ok and all(isinstance(p, str) for p in ignore)
    errors.require(ok, "ignore", "'auto' or a list of module names / fnmatch patterns (e.g. ['lm_head'])", ignore)


def apply_ignore(
    model: nn.Module, layers: Mapping[str, nn.Module], ignore: IgnoreSpec, action: str
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Split the selected ``layers`` into those to process and those ignored (with the reason); warn for a kept layer
    whose weight is tied to an embedding.

    Args:
        model: The model the names are relative to.
        layers: ``{fqn: module}`` selected by the filter.
        ignore: ``"auto"`` (:func:`default_ignored`) or module-name patterns (``fnmatch``; ``()`` ignores nothing).
        action: What is about to happen, for the warning (``"pruning"``, ``"quantization"``).

    Returns:
        ``(kept, ignored)``: ``{fqn: module}`` and ``{fqn: reason}``.

    Warns:
        UserWarning: For each kept layer whose weight is also an embedding's, naming both.
    """
    if ignore == "auto":
        ignored = default_ignored(model, layers)
    else:
        patterns = [ignore] if isinstance(ignore, str) else list(ignore)
        ignored = {
            fqn: f"matches ignore pattern {pat!r}"
            for fqn in layers
            for pat in patterns
            if fnmatch.fnmatchcase(fqn, pat)
        }
    kept = {fqn: layer for fqn, layer in layers.items() if fqn not in ignored}
    embeddings = _embedding_names(model)
    for fqn, layer in kept.items():
        tied = _tied_to(layer, embeddings)
        if tied:
            warnings.warn(
                f"{fqn}.weight is the same tensor as {tied} (tied weights): {action} of {fqn} changes the embedding"
                f" {tied} too. Leave it out with ignore='auto' (the default) or ignore=[{fqn!r}]",
                UserWarning,
                stacklevel=3,
            )
    return kept, ignored
