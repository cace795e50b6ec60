"""Model builders: a small CNN, torchvision classifiers by name, Hugging Face sequence classifiers.

torchvision and transformers are imported when a builder that needs them is called (``torchvision_model`` needs the
``vision`` extra, ``huggingface_classifier`` the ``nlp`` one), so importing this package needs neither.
"""

from lightning_compress.models.causal_lm import SMOLLM2_GGUF, load_causal_lm, offline_smollm2_path
from lightning_compress.models.cnn import SmallCNN
from lightning_compress.models.huggingface import huggingface_classifier, offline_minilm_path
from lightning_compress.models.torchvision_model import import_torchvision, replace_classifier, torchvision_model

__all__ = [
    "SMOLLM2_GGUF",
    "SmallCNN",
    "huggingface_classifier",
    "import_torchvision",
    "load_causal_lm",
    "offline_minilm_path",
    "offline_smollm2_path",
    "replace_classifier",
    "torchvision_model",
]
