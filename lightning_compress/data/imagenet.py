"""ImageNet (or any ImageFolder laid out like it) with the standard training and evaluation transforms.

torchvision (the ``vision`` extra) is imported when the data module is built, not with this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.data.split_data_module import SplitDataModule
from lightning_compress.models.torchvision_model import import_torchvision

if TYPE_CHECKING:
    from torchvision import datasets

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetDataModule(SplitDataModule):
    """Class-per-folder images under ``root/train`` and ``root/val`` (torchvision ``ImageFolder``).

    Training images get ``RandomResizedCrop(image_size)`` and a horizontal flip; evaluation images are resized to
    ``image_size * 256 / 224`` and centre-cropped. Both are normalised with the ImageNet mean and std, giving float32
    ``(B, 3, image_size, image_size)`` batches and int64 labels. The training loader shuffles (from torch's global
    RNG: there is no ``seed``), the validation loader keeps the folder order. ImageNet's test labels are not public,
    so the test loader serves the validation folder (``test_dataset`` is ``val_dataset``). Images are converted to RGB
    by the ImageFolder loader.

    Args:
        root: Folder holding ``train_dir`` and ``val_dir``.
        batch_size: Batch size of every loader.
        num_workers: DataLoader worker processes.
        pin_memory: Whether loaders pin memory (faster host-to-GPU copies).
        image_size: Side of the square crops.
        train_dir: Name of the training folder under ``root``.
        val_dir: Name of the validation folder under ``root``.
        num_classes: Number of class folders expected (1000 for ImageNet-1k).

    Raises:
        FileNotFoundError: At construction, if ``root/train_dir`` or ``root/val_dir`` is not a folder.
        ValueError: At construction, for an out-of-range argument; in :meth:`setup`, if the class folders found
            differ from ``num_classes`` or between train and val.
        ModuleNotFoundError: At construction, if torchvision is not installed (``pip install
            'lightning-compress[vision]'``).

    Example:
        >>> dm = ImageNetDataModule("/data/imagenet", batch_size=256)  # doctest: +SKIP
        >>> dm.setup(); x, y = next(iter(dm.val_dataloader())); x.shape  # doctest: +SKIP
        torch.Size([256, 3, 224, 224])
    """

    train_dataset: datasets.ImageFolder | None
    val_dataset: datasets.ImageFolder | None
    test_dataset: datasets.ImageFolder | None

    def __init__(
        self,
        root: str | os.PathLike,
        batch_size: int = 256,
        num_workers: int = 8,
        pin_memory: bool = True,
        image_size: int = 224,
        train_dir: str = "train",
        val_dir: str = "val",
        num_classes: int = 1000,
    ) -> None:
        errors = ArgumentErrors()
        errors.int("image_size", image_size)
        errors.int("num_classes", num_classes)
        super().__init__(num_classes, batch_size, num_workers, seed=None, pin_memory=pin_memory, errors=errors)
        transforms = import_torchvision("ImageNetDataModule").transforms
        self.root = Path(root)
        self.train_path = self.root / train_dir
        self.val_path = self.root / val_dir
        for path in (self.train_path, self.val_path):
            if not path.is_dir():
                raise FileNotFoundError(
                    f"ImageNet folder not found: {path} "
                    f"(set `data.root` to a folder holding {train_dir}/ and {val_dir}/)"
                )
        self.image_size = image_size
        self.train_transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        self.eval_transform = transforms.Compose(
            [
                transforms.Resize(int(image_size * 256 / 224)),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        """Indexes the two folders (once) and checks their classes.

        Args:
            stage: Ignored: both folders are indexed, which only lists files.

        Raises:
            ValueError: If the number of class folders is not ``num_classes`` or train and val classes differ.
        """
        if self.train_dataset is not None:
            return
        folder = import_torchvision("ImageNetDataModule").datasets.ImageFolder
        train = folder(str(self.train_path), transform=self.train_transform)
        val = folder(str(self.val_path), transform=self.eval_transform)
        if len(train.classes) != self.num_classes:
            raise ValueError(
                f"found {len(train.classes)} class folders under {self.train_path} but `num_classes` is "
                f"{self.num_classes} (set `data.num_classes` to match)"
            )
        if train.class_to_idx != val.class_to_idx:
            missing = sorted(set(train.classes) ^ set(val.classes))[:5]
            raise ValueError(
                f"class folders differ between {self.train_path} and {self.val_path} (e.g. {', '.join(missing)})"
            )
        self.train_dataset, self.val_dataset, self.test_dataset = train, val, val
