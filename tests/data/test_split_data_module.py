"""SplitDataModule: the one place the data modules' loaders are built."""

import re

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.data import DigitsDataModule, GLUEDataModule, MNIST5kDataModule, SplitDataModule


class Ramp(SplitDataModule):
    """Rows 0..n-1 in every split, so a batch shows which rows it holds and in what order."""

    def __init__(self, n: int = 10, **kwargs) -> None:
        super().__init__(1, **kwargs)
        self.n = n

    def setup(self, stage=None) -> None:
        data = TensorDataset(torch.arange(self.n), torch.arange(self.n) * 2)
        self.train_dataset, self.val_dataset, self.test_dataset = data, data, data


def rows(loader: DataLoader) -> list[int]:
    return [i for x, _ in loader for i in x.tolist()]


def test_training_order_comes_from_a_generator_seeded_from_seed():
    dm = Ramp(n=20, batch_size=6, seed=3)
    dm.setup()
    data = dm.train_dataset
    reference = DataLoader(data, batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(3))
    loader = dm.train_dataloader()
    epochs = [rows(loader), rows(loader)]
    assert epochs == [rows(reference), rows(reference)]
    assert epochs[0] != epochs[1] and sorted(epochs[0]) == list(range(20))  # a new order each epoch
    again = dm.train_dataloader()
    assert [rows(again), rows(again)] == epochs  # ... the same ones in every run
    assert [len(x) for x, _ in dm.train_dataloader()] == [6, 6, 6, 2]
    assert rows(dm.val_dataloader()) == rows(dm.test_dataloader()) == list(range(20))


def test_unseeded_shuffle_draws_from_the_global_rng():
    dm = Ramp(n=20, batch_size=20, seed=None)
    dm.setup()
    assert dm.train_dataloader().generator is None
    torch.manual_seed(5)
    first = rows(dm.train_dataloader())
    torch.manual_seed(5)
    assert rows(dm.train_dataloader()) == first and sorted(first) == list(range(20))


def test_loader_settings():
    dm = Ramp(batch_size=4, num_workers=2, pin_memory=True)
    dm.setup()
    loader = dm.val_dataloader()
    assert (loader.batch_size, loader.num_workers, loader.persistent_workers, loader.pin_memory) == (4, 2, True, True)
    dm = Ramp(batch_size=4)
    dm.setup()
    loader = dm.train_dataloader()
    assert (loader.num_workers, loader.persistent_workers, loader.pin_memory) == (0, False, False)
    assert (dm.num_classes, dm.metrics, dm.task) == (1, ("acc",), "multiclass")


def test_collate_fn_hook():
    class Summed(Ramp):
        def collate_fn(self):
            return lambda rows: sum(int(x) for x, _ in rows)

    dm = Summed(n=6, batch_size=3)
    dm.setup()
    assert list(dm.val_dataloader()) == [0 + 1 + 2, 3 + 4 + 5]


@pytest.mark.parametrize("loader", ["train_dataloader", "val_dataloader", "test_dataloader"])
@pytest.mark.parametrize("module", [Ramp, MNIST5kDataModule, DigitsDataModule])
def test_loader_before_setup_names_the_class(module, loader):
    dm = module(batch_size=4)
    with pytest.raises(RuntimeError, match=re.escape(f"{module.__name__}.setup() must run before asking for a")):
        getattr(dm, loader)()


def test_glue_loader_before_setup():
    dm = GLUEDataModule("rotten_tomatoes", tokenizer="unused")
    with pytest.raises(RuntimeError, match=re.escape("GLUEDataModule.setup() must run before asking for a dataloader")):
        dm.train_dataloader()


def test_bad_arguments_are_listed_with_the_subclass_ones():
    errors = ArgumentErrors()
    errors.int("n", 0)
    with pytest.raises(ValueError) as err:
        SplitDataModule(1, batch_size=0, num_workers=-1, seed=-2, errors=errors)
    assert str(err.value) == (
        "`n` must be an int >= 1, got 0; `batch_size` must be an int >= 1, got 0; "
        "`num_workers` must be an int >= 0, got -1; `seed` must be an int >= 0, got -2"
    )
    message = "`max_length` must be an int >= 1, got 0; `batch_size` must be an int >= 1, got 0"
    with pytest.raises(ValueError, match=re.escape(message)):
        GLUEDataModule("sst2", max_length=0, batch_size=0)
    with pytest.raises(ValueError, match=re.escape("`task` can be cola, ") + ".*" + re.escape("`seed` must be")):
        GLUEDataModule("sst3", seed=-1)
