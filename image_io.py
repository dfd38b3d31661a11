"""Image files: the one loader (`load_image`) and the one folder listing (`image_files`) of the project.

Every front door reads images through `load_image`: RGB float tensors in [0, 1];
transparency composited over white (never `convert("RGB")` on raw alpha, which reveals
whatever colour hides under transparent pixels); grayscale replicated to three channels.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


class ImageLoadError(OSError):
    """An image file that is missing or cannot be decoded."""


def load_image(path, size=None):
    """Read an image file as a float32 tensor (3, H, W) in [0, 1], RGB.

    Transparent images are composited over white, grayscale is replicated to three
    channels, 16-bit grayscale keeps its precision. With ``size`` (int) the image is
    resized to size x size (bicubic, antialiased, clamped into [0, 1]) unless it
    already has that size. Raises ``ImageLoadError`` naming the path.
    """
    try:
        with Image.open(path) as im:
            im.load()
            image = _pil_to_tensor(im)
    except Exception as err:  # PIL reports corrupt files through many exception types
        raise ImageLoadError(f"cannot read image {path}: {err}") from err
    if size is not None and tuple(image.shape[1:]) != (size, size):
        image = F.interpolate(image[None], size=(size, size), mode="bicubic",
                              align_corners=False, antialias=True)[0].clamp_(0, 1)
    return image


def _pil_to_tensor(im):
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = np.array(im.convert("RGBA"))
        rgba = torch.from_numpy(rgba).permute(2, 0, 1).contiguous().float() / 255
        alpha = rgba[3:]
        return rgba[:3] * alpha + (1 - alpha)
    if im.mode.startswith("I;16") or im.mode == "I":
        gray = torch.from_numpy(np.array(im, dtype=np.float32)) / 65535
        return gray.clamp_(0, 1).expand(3, -1, -1).contiguous()
    rgb = np.array(im if im.mode == "RGB" else im.convert("RGB"))
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous().float() / 255


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_files(folder, root=None):
    """Image files under `folder`, as sorted '/'-separated paths relative to `root` (default `folder`)."""
    root = folder if root is None else root
    found = []
    for parent, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(parent, name), root).replace(os.sep, "/")
                  for name in names if name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)
