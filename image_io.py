"""Image files: the one loader (`load_image`), the one folder listing (`image_files`) and the one encoder of
the project's pictures (`figure_png`).

Every front door reads images through `load_image`: RGB float tensors in [0, 1];
transparency composited over white (never `convert("RGB")` on raw alpha, which reveals
whatever colour hides under transparent pixels); grayscale replicated to three channels;
16- and 32-bit integer images scaled by their bit depth; float images used as they are when
in [0, 1], an error naming the file otherwise.
"""
import io
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

TIFF_SAMPLE_FORMAT = 339  # the TIFF tag saying whether samples are unsigned (1, the default) or signed (2)


class FileError(OSError):
    """An error about one file, whose message names it; raised again with that message alone where a
    DataLoader worker raised it (torch rebuilds a worker's exception from the worker's whole traceback)."""

    def __init__(self, message=""):
        super().__init__(worker_message(str(message), type(self)))


def worker_message(text, kind):
    """`text` itself, or the message of the `kind` exception whose traceback a DataLoader worker sent
    ("Caught <kind> in DataLoader worker process K.\\nOriginal Traceback ...\\n<module>.<kind>: <message>")."""
    if not (text.startswith(f"Caught {kind.__name__} in DataLoader worker") and "\nOriginal Traceback" in text):
        return text
    prefix = f"\n{kind.__module__}.{kind.__qualname__}: "
    start = text.rfind(prefix)
    return text[start + len(prefix):].rstrip("\n") if start >= 0 else text


class ImageLoadError(FileError):
    """An image file that is missing or cannot be decoded."""


def load_image(path, size=None):
    """Read an image file as a float32 tensor (3, H, W) in [0, 1], RGB.

    Transparent images are composited over white, grayscale is replicated to three
    channels; 16- and 32-bit integer images are divided by their largest value (65535,
    2**32 - 1, or 2**31 - 1 for signed samples) and keep their precision; float images
    must be in [0, 1] and are used as they are. With ``size`` (int) the image is resized to
    size x size (bicubic, antialiased, clamped into [0, 1]) unless it already has that size.
    Raises ``ImageLoadError`` naming the path.
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
    if im.mode.startswith("I"):
        return _integer_gray(im).expand(3, -1, -1).contiguous()
    if im.mode == "F":
        return _float_gray(np.array(im, dtype=np.float32)).expand(3, -1, -1).contiguous()
    rgb = np.array(im if im.mode == "RGB" else im.convert("RGB"))
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous().float() / 255


def _integer_gray(im):
    """A 16- or 32-bit grayscale image over the largest value of its sample type."""
    values = np.array(im)
    unsigned = getattr(im, "tag_v2", {}).get(TIFF_SAMPLE_FORMAT, (1,)) in (1, (1,))
    if im.format == "TIFF" and values.dtype == np.int32 and unsigned:
        values = values.view(np.uint32)  # PIL reads unsigned 32-bit TIFF samples as signed
    if values.min() < 0:
        raise ValueError(f"signed {values.dtype.itemsize * 8}-bit samples down to {values.min()}: expected "
                         f"values from 0 (black) to {np.iinfo(values.dtype).max} (white)")
    return torch.from_numpy((values / np.iinfo(values.dtype).max).astype(np.float32))


def _float_gray(values):
    """A float image as it is, which must lie in [0, 1]."""
    if not np.isfinite(values).all():
        raise ValueError("a float image with NaN or infinite values; float images must hold values in [0, 1]")
    if values.size and (values.min() < 0 or values.max() > 1):
        raise ValueError(f"a float image with values from {values.min():g} to {values.max():g}; float images "
                         f"must hold values in [0, 1] (scale it so, or save it with integer samples)")
    return torch.from_numpy(values)


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_files(folder, root=None):
    """Image files under `folder`, as sorted '/'-separated paths relative to `root` (default `folder`).

    Symbolic links to folders are followed, except one that leads back into a folder it is in
    (a loop), which is skipped.
    """
    root = folder if root is None else root
    found, inside = [], {os.path.normpath(folder): {os.path.realpath(folder)}}
    for parent, folders, names in os.walk(folder, followlinks=True):
        ancestors = inside.pop(os.path.normpath(parent))
        for name in list(folders):
            real = os.path.realpath(os.path.join(parent, name))
            if real in ancestors:
                folders.remove(name)
            else:
                inside[os.path.normpath(os.path.join(parent, name))] = ancestors | {real}
        found += [os.path.relpath(os.path.join(parent, name), root).replace(os.sep, "/")
                  for name in names if name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def figure_png(fig, dpi):
    """PNG bytes of a matplotlib figure at `dpi` dots per inch."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
