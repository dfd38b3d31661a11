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

The operations are scikit-image's and numpy's own, in their order and dtypes (float32
Lab, float32 SSIM arithmetic, numpy's float32 mean), so the values are LPIPS's to the
last bit on the images the tests try, also close to SSIM 1 where float32 rounding
shows. They run on the CPU, as LPIPS's do, on whole batches at once, split over torch's
number of threads (numpy and scipy release the GIL).

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
XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]])
D65_WHITE = np.array([0.95047, 1.0, 1.08883])
LAB_RANGE, RGB_RANGE = 100.0, 255.0
SSIM_WINDOW, SSIM_K1, SSIM_K2 = 7, 0.01, 0.03  # scikit-image's defaults, which LPIPS keeps
COV_NORM = SSIM_WINDOW ** 2 / (SSIM_WINDOW ** 2 - 1)  # sample covariance


def srgb_linear_table():
    """The linear sRGB value of each 8-bit level, with scikit-image's float64 operations."""
    level = np.arange(256) * (1 / 255)  # img_as_float64 of uint8
    return np.where(level > 0.04045, np.power((level + 0.055) / 1.055, 2.4), level / 12.92)


SRGB_LINEAR = srgb_linear_table()


def in_threads(function, *arrays):
    """`function(*slices)` on slices of the arrays' first axis, on torch's number of threads.

    The results (arrays, or tuples of arrays) are concatenated back; numpy's and
    scipy's loops release the GIL, so the slices run in parallel.
    """
    workers = min(torch.get_num_threads(), len(arrays[0]))
    if workers <= 1:
        return function(*arrays)
    bounds = np.linspace(0, len(arrays[0]), workers + 1).astype(int)
    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(lambda a, b: function(*(x[a:b] for x in arrays)), bounds[:-1], bounds[1:]))
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(part) for part in zip(*parts))
    return np.concatenate(parts)


def to_8bit(x):
    """LPIPS's `tensor2im` of the [-1, 1] image 2x - 1 (x float32 in [0, 1]): (v + 1) * 127.5, truncated."""
    return np.clip((2 * x - 1 + 1) * 127.5, 0, 255).astype(np.uint8)


def rgb8_to_lab(rgb8):
    """scikit-image's rgb2lab of 8-bit images (N, 3, H, W), as float32 (N, 3, H, W) as LPIPS keeps it.

    scikit-image's operations on the same float64 values (the sRGB curve looked up
    for the 256 levels), so the same bits.
    """
    xyz = SRGB_LINEAR[rgb8.transpose(0, 2, 3, 1)] @ XYZ_FROM_RGB.T
    xyz /= D65_WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], 1).astype(np.float32)


def window_mean(x):
    """SSIM's local means of (N, C, H, W): scipy's 7x7 uniform_filter of each plane, cropped by 3 pixels.

    It is the filter structural_similarity runs (one axis, then the other, each pass
    stored in the input's dtype), so the means are its means, bit for bit.
    """
    pad = (SSIM_WINDOW - 1) // 2
    return uniform_filter(x, size=(1, 1, SSIM_WINDOW, SSIM_WINDOW))[..., pad:-pad, pad:-pad]


def ssim_stats(image):
    """What SSIM needs of one image without its partner: (image, local mean, its square, local variance)."""
    mean = window_mean(image)
    square = mean * mean
    return image, mean, square, COV_NORM * (window_mean(image * image) - square)


def ssim(stats0, stats1, data_range):
    """scikit-image's structural_similarity(..., channel_axis) per image pair, from `ssim_stats`: (N,).

    scikit-image's arithmetic, operation by operation, in the images' dtype; each
    channel's map is averaged in float64 and stored back in that dtype, then the
    channels are averaged in it.
    """
    image0, mean0, square0, var0 = stats0
    image1, mean1, square1, var1 = stats1
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    product = mean0 * mean1
    covariance = COV_NORM * (window_mean(image0 * image1) - product)
    numerator = (2 * product + c1) * (2 * covariance + c2)  # 2 ux uy: the doubling is exact in any order
    similarity = numerator / ((square0 + square1 + c1) * (var0 + var1 + c2))
    return similarity.mean((2, 3), dtype=np.float64).astype(image0.dtype).mean(1)


def compare_ssim(im1, im2, data_range=None, multichannel=False):
    """The `skimage.measure.compare_ssim` that lpips.dssim calls, gone from scikit-image, by today's name.

    Only for running LPIPS's own DSSIM as the reference (tests, bench.py): put it in
    place as `skimage.measure.compare_ssim`.
    """
    from skimage.metrics import structural_similarity
    return structural_similarity(im1, im2, data_range=data_range, channel_axis=-1 if multichannel else None)


class PixelMetric(nn.Module):
    """L2 or DSSIM between image batches in [0, 1], LPIPS's definitions: `metric(x0, x1)` -> (N,) float32.

    A measurement, not a loss: like LPIPS's, the values go through 8-bit images and
    numpy, so no gradient flows back to the images.
    """

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
        pixels = x.float().numpy()  # tensor2im's dtype
        if self.net == "l2":
            return in_threads(lambda part: rgb8_to_lab(to_8bit(part)) / LAB_RANGE, pixels)
        if self.colorspace == "Lab":
            return in_threads(lambda part: ssim_stats(rgb8_to_lab(to_8bit(part))), pixels)
        return in_threads(lambda part: ssim_stats(to_8bit(part).astype(np.float64)), pixels)

    def distance(self, f0, f1):
        """Distance (N,) float32 between two images' `features`, rounded as LPIPS rounds it."""
        if self.net == "l2" and self.colorspace == "RGB":
            return (f0 - f1).square_().mean(1).mean(1).mean(1).float()  # lpips.L2's order of means
        if self.net == "l2":
            # numpy's float32 mean over LPIPS's (H, W, 3) array, in its pairwise order
            d = in_threads(lambda a, b: 0.5 * np.square(a - b).transpose(0, 2, 3, 1).reshape(len(a), -1).mean(1),
                           f0, f1)
        else:
            data_range = LAB_RANGE if self.colorspace == "Lab" else RGB_RANGE
            d = in_threads(lambda *stats: (1 - ssim(stats[:4], stats[4:], data_range)) / 2, *f0, *f1)
        return torch.from_numpy(d.astype(np.float32))

    def views(self, feats, configs):
        """The evaluation's per-image step (`experiment.batch_distances`): the features themselves."""
        return feats

    def compare(self, v0, v1, configs):
        """{config: distances (N,)} for the evaluation; a pixel metric has one configuration."""
        return dict.fromkeys(configs, self.distance(v0, v1))

    def forward(self, x0, x1):
        check_same_shape(x0, x1)
        return self.distance(self.features(x0), self.features(x1))
