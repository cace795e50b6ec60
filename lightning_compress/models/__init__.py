"""Model builders: a small CNN, torchvision classifiers by name, Hugging Face sequence classifiers."""

from lightning_compress.models.cnn import SmallCNN
from lightning_compress.models.huggingface import huggingface_classifier, offline_minilm_path
from lightning_compress.models.torchvision_model import replace_classifier, torchvision_model

__all__ = ["SmallCNN", "huggingface_classifier", "offline_minilm_path", "replace_classifier", "torchvision_model"]
