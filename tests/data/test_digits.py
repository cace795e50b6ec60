import pytest
import torch

from lightning_compress.data import DigitsDataModule
from lightning_compress.data.digits import DIGITS_MEAN, DIGITS_STD


@pytest.fixture(scope="module")
def dm() -> DigitsDataModule:
    dm = DigitsDataModule(batch_size=32)
    dm.setup()
    return dm


def test_attributes_are_known_before_setup():
    dm = DigitsDataModule()
    assert (dm.num_classes, dm.metrics, dm.task) == (10, ("acc",), "multiclass")


def test_split_sizes_disjoint_and_covering(dm):
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (1258, 180, 359)
    everything = torch.cat(list(dm.split_indices.values()))
    assert torch.equal(everything.sort().values, torch.arange(1797))


def test_split_depends_only_on_seed(dm):
    same, other = DigitsDataModule(seed=0), DigitsDataModule(seed=7)
    same.setup()
    other.setup()
    assert torch.equal(same.split_indices["test"], dm.split_indices["test"])
    assert not torch.equal(other.split_indices["test"], dm.split_indices["test"])


def test_fractions():
    dm = DigitsDataModule(val_fraction=0.25, test_fraction=0.25)
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (899, 449, 449)


def test_images_match_sklearn(dm):
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = dm.split_indices["val"][:3].numpy()
    x, y = dm.val_dataset[:3]
    expected = (torch.tensor(digits.images[rows], dtype=torch.float32).unsqueeze(1) / 16 - DIGITS_MEAN) / DIGITS_STD
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, torch.tensor(digits.target[rows]))


def test_shapes_dtypes_labels_and_normalisation(dm):
    xs = torch.cat([ds.tensors[0] for ds in (dm.train_dataset, dm.val_dataset, dm.test_dataset)])
    ys = torch.cat([ds.tensors[1] for ds in (dm.train_dataset, dm.val_dataset, dm.test_dataset)])
    assert xs.shape == (1797, 1, 8, 8) and xs.dtype == torch.float32
    assert ys.dtype == torch.int64 and set(ys.tolist()) == set(range(10))
    pixels = xs * DIGITS_STD + DIGITS_MEAN
    assert pixels.min().item() == pytest.approx(0.0, abs=1e-6) and pixels.max().item() == pytest.approx(1.0, abs=1e-6)
    assert abs(xs.mean().item()) < 1e-3 and abs(xs.std().item() - 1) < 1e-3


def test_loaders(dm):
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and y.shape == (32,)
    assert torch.equal(next(iter(dm.train_dataloader()))[0], x)
    assert len(dm.val_dataloader()) == 6 and len(dm.test_dataloader()) == 12
    x, _ = next(iter(dm.test_dataloader()))
    assert torch.equal(x, dm.test_dataset.tensors[0][:32])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": 0.0}, r"`val_fraction` must be a float in \(0, 1\), got 0.0"),
        ({"test_fraction": 1.5}, r"`test_fraction` must be a float in \(0, 1\), got 1.5"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, r"`val_fraction` \+ `test_fraction` must be below 1"),
        ({"batch_size": True}, "`batch_size` must be an int >= 1, got True"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DigitsDataModule(**kwargs)
