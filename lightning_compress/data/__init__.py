"""Data modules: real offline data (MNIST-5k, digits, Rotten Tomatoes) and the usual online sets.

Every data module exposes ``num_classes``, ``metrics`` (primary first) and ``task`` (``"multiclass"`` or
``"regression"``) from its constructor, before ``setup``, and serves its loaders through
:class:`~lightning_compress.data.split_data_module.SplitDataModule`. ``CIFAR10DataModule`` and ``ImageNetDataModule``
need torchvision (``pip install 'lightning-compress[vision]'``) when they are built; importing them does not.
"""

from lightning_compress.data.cifar10 import CIFAR10DataModule
from lightning_compress.data.digits import DigitsDataModule
from lightning_compress.data.glue import GLUE_TASKS, GLUEDataModule, GLUETask, load_rotten_tomatoes
from lightning_compress.data.hamlet import hamlet_text, hamlet_tokens
from lightning_compress.data.imagenet import ImageNetDataModule
from lightning_compress.data.mnist import MNIST5kDataModule
from lightning_compress.data.split_data_module import SplitDataModule
from lightning_compress.data.tensor_data import TensorDataModule

__all__ = [
    "CIFAR10DataModule",
    "DigitsDataModule",
    "GLUEDataModule",
    "GLUETask",
    "GLUE_TASKS",
    "ImageNetDataModule",
    "MNIST5kDataModule",
    "SplitDataModule",
    "TensorDataModule",
    "hamlet_text",
    "hamlet_tokens",
    "load_rotten_tomatoes",
]
