"""The classic rows of the BAPPS table: L2 and SSIM, exactly as LPIPS's evaluation defines them.

LPIPS (`lpips.L2`, `lpips.DSSIM` and the helpers of `lpips/__init__.py`) scores these
one image at a time, and its SSIM calls `skimage.measure.compare_ssim`, which current
scikit-image no longer has. This file computes the same numbers for whole batches:

- the Lab path: the [-1, 1] image to 8 bits as `tensor2im` does it (float32,
  truncated), then scikit-image's `rgb2lab` of that, kept as float32 (LPIPS passes it
  through a `torch.Tensor`);
- `l2`: Lab: half the mean of the squared difference of Lab / 100; RGB: the mean of the
  squared difference of the [-1, 1] images;
- `ssim`: DSSIM = (1 - SSIM) / 2 with scikit-image's default SSIM (7x7 uniform window,
  sample covariance, K1 0.01, K2 0.03, the mean of the map cropped by 3 pixels, then
  over channels): on the Lab image with data range 100, in float32 as scikit-image
  computes float32 input, or on the 8-bit RGB image with range 255, in float64.

Each step rounds where LPIPS's does (float32 Lab, float32 SSIM arithmetic, numpy's
float32 mean), so the values are LPIPS's to the last bit on the images the tests
try, also close to SSIM 1 where float32 noise would otherwise show. The work is done
on the CPU, as LPIPS does it: whole batches per operation, torch's operations on its
threads, scipy's uniform_filter (the one structural_similarity uses) on all planes at
once.

Images are float tensors in [0, 1], (N, 3, H, W), RGB, as everywhere in this project:

    PixelMetric("ssim", "Lab")(x0, x1)   # == lpips.DSSIM(colorspace="Lab") on 2x - 1, image by image

The split into `features` (per image: colour conversion, SSIM's local statistics) and
`distance` (per pair) lets a 2AFC reference serve both of its comparisons; `views` and
`compare` are the interface of experiment.py's evaluation (as `DistanceMetric`'s), so
`python experiment.py --net l2 ssim` scores these like any configuration.
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn
from scipy.ndimage import uniform_filter

from experiment import COLORSPACES, PIXEL_METRICS, check_images, check_same_shape

# scikit-image's rgb2lab: sRGB (D65) -> XYZ, and the D65 white of the 2-degree observer
XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423),
                (0.212671, 0.715160, 0.072169),
                (0.019334, 0.119193, 0.950227))
D65_WHITE = (0.95047, 1.0, 1.08883)
LAB_RANGE, RGB_RANGE = 100.0, 255.0
SSIM_WINDOW, SSIM_K1, SSIM_K2 = 7, 0.01, 0.03  # scikit-image's defaults, which LPIPS keeps
COV_NORM = SSIM_WINDOW ** 2 / (SSIM_WINDOW ** 2 - 1)  # sample covariance


def srgb_linear_table():
    """The linear sRGB value of each 8-bit level, with scikit-image's float64 operations."""
    level = np.arange(256) * (1 / 255)  # img_as_float64 of uint8
    return np.where(level > 0.04045, np.power((level + 0.055) / 1.055, 2.4), level / 12.92)


SRGB_LINEAR = srgb_linear_table()


def to_8bit(x):
    """LPIPS's `tensor2im` of the [-1, 1] image 2x - 1: (v + 1) * 127.5 in float32, truncated; uint8."""
    return x.float().mul(2).sub_(1).add_(1).mul_(127.5).clamp_(0, 255).to(torch.uint8)


def in_threads(function, array):
    """`function` of slices of `array` along its first axis on torch's number of threads, concatenated.

    numpy's and scipy's loops release the GIL, so the slices are computed in parallel.
    """
    workers = min(torch.get_num_threads(), len(array))
    if workers <= 1:
        return function(array)
    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(function, np.array_split(array, workers))))


def rgb8_to_lab(rgb8):
    """scikit-image's rgb2lab of 8-bit images (N, 3, H, W), rounded to float32 as LPIPS keeps it.

    The same numpy operations on the same float64 values as scikit-image (the sRGB
    curve looked up for the 256 levels), so the same bits.
    """
    def lab_of(rgb):
        xyz = SRGB_LINEAR[rgb] @ np.asarray(XYZ_FROM_RGB).T
        xyz /= D65_WHITE
        f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
        fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
        return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], 1).astype(np.float32)

    return torch.from_numpy(in_threads(lab_of, rgb8.permute(0, 2, 3, 1).numpy()))


def window_mean(x):
    """SSIM's local means: scipy's 7x7 uniform_filter of each (H, W) plane, cropped by 3 pixels.

    It is the filter structural_similarity runs (one axis, then the other, each pass
    stored in the input's dtype), so the means are its means, bit for bit.
    """
    def filtered(planes):
        return uniform_filter(planes, size=(1, 1, SSIM_WINDOW, SSIM_WINDOW))

    pad = (SSIM_WINDOW - 1) // 2
    return torch.from_numpy(in_threads(filtered, x.numpy())[..., pad:-pad, pad:-pad])


def ssim_stats(image):
    """What SSIM needs of one image without its partner: (image, local mean, its square, local variance)."""
    mean = window_mean(image)
    square = mean * mean
    return image, mean, square, COV_NORM * (window_mean(image * image) - square)


def ssim(stats0, stats1, data_range):
    """scikit-image's structural_similarity(..., channel_axis) per image pair, from `ssim_stats`: (N,).

    The arithmetic is scikit-image's, operation by operation, in the images' dtype; each
    channel's map is averaged in float64 and stored back in that dtype, then the
    channels are averaged in it (numpy's float32 sum of three runs in order).
    """
    image0, mean0, square0, var0 = stats0
    image1, mean1, square1, var1 = stats1
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    product = mean0 * mean1
    covariance = COV_NORM * (window_mean(image0 * image1) - product)
    numerator = (2 * product).add_(c1).mul_((2 * covariance).add_(c2))  # 2 ux uy: the doubling is exact
    denominator = (square0 + square1).add_(c1).mul_((var0 + var1).add_(c2))
    channels = (numerator / denominator).double().mean((2, 3)).to(image0.dtype)
    total = channels[:, 0]
    for c in range(1, channels.shape[1]):
        total = total + channels[:, c]
    return total / channels.shape[1]


class PixelMetric(nn.Module):
    """L2 or DSSIM between image batches in [0, 1], LPIPS's definitions: `metric(x0, x1)` -> (N,) float32."""

    def __init__(self, net="l2", colorspace="Lab"):
        super().__init__()
        if net not in PIXEL_METRICS:
            raise ValueError(f"unknown pixel metric {net!r}; expected one of {', '.join(PIXEL_METRICS)}")
        if colorspace not in COLORSPACES:
            raise ValueError(f"unknown colour space {colorspace!r}; expected one of {', '.join(COLORSPACES)}")
        self.net, self.colorspace, self.normalize = net, colorspace, colorspace.lower()

    def features(self, x):
        """What the comparisons need of images `x` in [0, 1], computed once per image (on the CPU)."""
        check_images(x, "images")
        if self.net == "ssim" and min(x.shape[-2:]) < SSIM_WINDOW:
            raise ValueError(f"images of {x.shape[-2]}x{x.shape[-1]} pixels are smaller than SSIM's "
                             f"{SSIM_WINDOW}x{SSIM_WINDOW} window: use images of at least that size")
        x = x.detach().cpu()
        if self.net == "l2" and self.colorspace == "RGB":
            return x.mul(2).sub_(1)
        if self.net == "l2":
            return rgb8_to_lab(to_8bit(x)).div_(LAB_RANGE)
        return ssim_stats(rgb8_to_lab(to_8bit(x)) if self.colorspace == "Lab" else to_8bit(x).double())

    def distance(self, f0, f1):
        """Distance (N,) float32 between two images' `features`, rounded as LPIPS rounds it."""
        if self.net == "l2" and self.colorspace == "RGB":
            return (f0 - f1).square_().mean(1).mean(1).mean(1).float()  # lpips.L2's order of means
        if self.net == "l2":
            # numpy's float32 mean over LPIPS's (H, W, 3) array, in its pairwise order
            squares = (f0 - f1).square_().permute(0, 2, 3, 1).flatten(1).numpy()
            return 0.5 * torch.from_numpy(squares.mean(1))
        similarity = ssim(f0, f1, LAB_RANGE if self.colorspace == "Lab" else RGB_RANGE)
        return ((1 - similarity) / 2).float()

    def views(self, feats, configs):
        """The evaluation's per-image step (`experiment.batch_distances`): the features themselves."""
        return feats

    def compare(self, v0, v1, configs):
        """{config: distances (N,)} for the evaluation; a pixel metric has one configuration."""
        return dict.fromkeys(configs, self.distance(v0, v1))

    def forward(self, x0, x1):
        check_same_shape(x0, x1)
        return self.distance(self.features(x0), self.features(x1))
