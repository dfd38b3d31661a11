"""The classic rows of the BAPPS table: LPIPS's L2 and DSSIM for whole batches, with LPIPS's values.

LPIPS (`lpips.L2`, `lpips.DSSIM`, the helpers of `lpips/__init__.py`) scores one pair at a
time, and its SSIM calls `skimage.measure.compare_ssim`, which current scikit-image lacks.
This file computes the same numbers on whole batches with numpy, scipy and scikit-image's
operations:

- 8 bits: `tensor2im` of the [-1, 1] image 2x - 1, in float32, truncated;
- Lab: scikit-image's `rgb2lab` of the 8-bit image, as float32 (LPIPS keeps it in a
  `torch.Tensor`): its float64 operations in its order, the sRGB curve looked up for the
  256 levels; the same bits (checked over all 2^24 8-bit colours);
- `l2`: Lab: half numpy's float32 mean of the squared difference of Lab / 100, in LPIPS's
  (H, W, 3) order; RGB: lpips.L2's torch means of the squared difference of the [-1, 1]
  images, in their dtype (float64 stays float64);
- `ssim`: DSSIM = (1 - SSIM) / 2, scikit-image's default SSIM (7x7 uniform window, sample
  covariance, K1 0.01, K2 0.03, each channel's map cropped by 3 pixels and averaged, then
  the channels). Lab, range 100: scikit-image's float32 operations in its order (scipy's
  uniform_filter), the same bits. RGB, range 255: from exact integer window sums of the
  8-bit values, then float64, which differs from scikit-image's float64 by rounding only.

All on the CPU, as LPIPS's, in slices of a few images, whose small temporaries malloc reuses:
numpy and scipy's work on torch's number of threads (they release the GIL), in a thread pool
that lives for one call; L2 RGB's torch operations on the calling thread. A batch's features
are a list of its slices' features (L2 RGB's: the images).

Images are float tensors in [0, 1], (N, 3, H, W), RGB, as everywhere in this project:

    PixelMetric("ssim", "Lab")(x0, x1)   # == lpips.DSSIM(colorspace="Lab") on 2x - 1, image by image

`features` (per image) and `distance` (per pair) let a 2AFC reference serve both of its
comparisons; `views` and `compare` are experiment.py's evaluation interface (as
`DistanceMetric`'s), so `python experiment.py --net l2 ssim` scores these like any configuration.
"""
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn
from scipy.ndimage import uniform_filter

from metric import COLORSPACES, PIXEL_METRICS, check_images, check_same_shape

# scikit-image's rgb2lab: sRGB (D65) -> XYZ, and the D65 white of the 2-degree observer
XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]])
D65_WHITE = np.array([0.95047, 1.0, 1.08883])
LAB_RANGE, RGB_RANGE = 100.0, 255.0
CHUNK_ELEMENTS = 1 << 16  # values per slice of a batch (`slices`): five 64x64 RGB images
SSIM_WINDOW, SSIM_K1, SSIM_K2 = 7, 0.01, 0.03  # scikit-image's defaults, which LPIPS keeps
WINDOW_PIXELS = SSIM_WINDOW ** 2
COV_NORM = WINDOW_PIXELS / (WINDOW_PIXELS - 1)  # sample covariance
# C1 n^2 and C2 n (n - 1) for range 255 and n = 49: the constants of SSIM's window-sum form (`rgb_ssim`)
RGB_C1 = (SSIM_K1 * RGB_RANGE) ** 2 * WINDOW_PIXELS ** 2
RGB_C2 = (SSIM_K2 * RGB_RANGE) ** 2 * WINDOW_PIXELS * (WINDOW_PIXELS - 1)


def srgb_linear_table():
    """The linear sRGB value of each 8-bit level, by rgb2xyz's float64 operations on img_as_float's values."""
    level = np.arange(256) * (1 / 255)
    return np.where(level > 0.04045, np.power((level + 0.055) / 1.055, 2.4), level / 12.92)


SRGB_LINEAR = srgb_linear_table()


def slices(x):
    """x (array or tensor) cut along its first axis into slices of about CHUNK_ELEMENTS values (empty x: one).

    Every operation is per image, so slicing changes no value. Small temporaries are mostly
    reused from memory malloc keeps; a whole batch's are mapped afresh, a page fault per
    4 KiB (measured: Lab of 50 64x64 images in one piece, 1.3 to 2 times the time of slices of 5).
    """
    step = max(1, CHUNK_ELEMENTS // max(1, math.prod(x.shape[1:])))
    return [x[i:i + step] for i in range(0, len(x), step)] or [x]


def on_threads(function, *iterables):
    """list(map(function, *iterables)) on torch's number of threads: numpy and scipy release the GIL."""
    workers = min(torch.get_num_threads(), len(iterables[0]))
    if workers <= 1:
        return list(map(function, *iterables))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, *iterables))


def to_8bit(x):
    """LPIPS's `tensor2im` of 2x - 1 (x float32 in [0, 1], numpy): ((2x - 1) + 1) * 127.5 in float32, truncated.
    The clip changes nothing in [0, 1]; it keeps the cast defined for values the range check tolerates beyond."""
    return np.clip((2 * x - 1 + 1) * 127.5, 0, 255).astype(np.uint8)


def rgb8_to_lab(rgb8):
    """scikit-image's rgb2lab of 8-bit images (N, 3, H, W), as float32 (N, 3, H, W) as LPIPS keeps it: rgb2xyz
    and xyz2lab's operations on the same float64 values in their (N, H, W, 3) layout (the matrix product
    on the same rows), so the same bits."""
    xyz = SRGB_LINEAR[rgb8.transpose(0, 2, 3, 1)] @ XYZ_FROM_RGB.T
    xyz /= D65_WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], 1).astype(np.float32)


def window_mean(x):
    """SSIM's local means of (N, C, H, W): scipy's 7x7 uniform_filter of each plane, cropped by 3 pixels.
    structural_similarity's filter (one axis, then the other, each pass stored in x's dtype): its bits."""
    pad = (SSIM_WINDOW - 1) // 2
    return np.ascontiguousarray(uniform_filter(x, size=(1, 1, SSIM_WINDOW, SSIM_WINDOW))[..., pad:-pad, pad:-pad])


def ssim_stats(image):
    """What SSIM needs of one image without its partner: (image, local mean, its square, local variance)."""
    mean = window_mean(image)
    square = mean * mean
    return image, mean, square, COV_NORM * (window_mean(image * image) - square)


def ssim(stats0, stats1, data_range):
    """scikit-image's structural_similarity(..., channel_axis) per image pair, from `ssim_stats`: (N,).

    scikit-image's arithmetic, operation by operation, in the images' dtype (float32
    rounds at every step, so the order matters); each channel's map is averaged in
    float64 and stored back in that dtype, then the channels are averaged in it.
    """
    image0, mean0, square0, var0 = stats0
    image1, mean1, square1, var1 = stats1
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    product = mean0 * mean1
    covariance = COV_NORM * (window_mean(image0 * image1) - product)
    numerator = (2 * product + c1) * (2 * covariance + c2)  # 2 ux uy: the doubling is exact in any order
    similarity = numerator / ((square0 + square1 + c1) * (var0 + var1 + c2))
    return similarity.mean((2, 3), dtype=np.float64).astype(image0.dtype).mean(1)


def window_sums(v):
    """The sum of every 7x7 window of each plane of an integer array (..., H, W): (..., H - 6, W - 6), from
    seven shifted slices along each axis, in v's integer dtype: exact while the sums fit it."""
    h, w = v.shape[-2:]
    rows = sum(v[..., i:h - SSIM_WINDOW + 1 + i, :] for i in range(SSIM_WINDOW))
    return sum(rows[..., j:w - SSIM_WINDOW + 1 + j] for j in range(SSIM_WINDOW))


def rgb_ssim_stats(rgb8):
    """What RGB SSIM needs of 8-bit images (N, C, H, W) without their partners: the values as int32 and the
    window sums of the values and of their squares. int32 holds every term of `rgb_ssim` (at most 49^2 255^2)."""
    v = rgb8.astype(np.int32)
    return v, window_sums(v), window_sums(v * v)


def rgb_ssim(stats0, stats1):
    """structural_similarity(..., data_range=255, channel_axis) of 8-bit image pairs, from `rgb_ssim_stats`: (N,).

    With window sums a, b, sums of squares Saa, Sbb and of products Sab, and n = 49
    pixels, SSIM's map is (2ab + C1 n^2)(2(n Sab - ab) + C2 n(n-1)) / ((a^2 + b^2 + C1 n^2)
    (n (Saa + Sbb) - a^2 - b^2 + C2 n(n-1))): scikit-image's formula with the n's
    cancelled. The integer terms are exact, so the variances are too; float64 from there.
    """
    (x0, a, aa), (x1, b, bb) = stats0, stats1
    ab = a * b
    squares = a * a + b * b
    numerator = (2 * ab + RGB_C1) * (2 * (WINDOW_PIXELS * window_sums(x0 * x1) - ab) + RGB_C2)
    similarity = numerator / ((squares + RGB_C1) * (WINDOW_PIXELS * (aa + bb) - squares + RGB_C2))
    return similarity.mean((2, 3)).mean(1)


def compare_ssim(im1, im2, data_range=None, multichannel=False):
    """The `skimage.measure.compare_ssim` that lpips.dssim calls, gone from scikit-image, by today's name: put
    it in place as `skimage.measure.compare_ssim` to run LPIPS's own DSSIM as the reference (tests, bench.py)."""
    from skimage.metrics import structural_similarity
    return structural_similarity(im1, im2, data_range=data_range, channel_axis=-1 if multichannel else None)


class PixelMetric(nn.Module):
    """L2 or DSSIM between image batches in [0, 1], LPIPS's definitions: `metric(x0, x1)` -> (N,) float32.
    A measurement, not a loss: like LPIPS's, the values go through 8-bit images and numpy, so no gradient."""

    def __init__(self, net="l2", colorspace="Lab"):
        super().__init__()
        if net not in PIXEL_METRICS:
            raise ValueError(f"unknown pixel metric {net!r}; expected one of {', '.join(PIXEL_METRICS)}")
        if colorspace not in COLORSPACES:
            raise ValueError(f"unknown colour space {colorspace!r}; expected one of {', '.join(COLORSPACES)}")
        self.net, self.colorspace, self.normalize = net, colorspace, colorspace.lower()

    def features(self, x):
        """What the comparisons need of images `x` in [0, 1], computed once per image (on the CPU): L2 in RGB,
        the images; otherwise a list of the features of `slices` of the batch (pairs of equal-shape batches)."""
        check_images(x, "images")
        if self.net == "ssim" and min(x.shape[-2:]) < SSIM_WINDOW:
            raise ValueError(f"images of {x.shape[-2]}x{x.shape[-1]} pixels are smaller than SSIM's "
                             f"{SSIM_WINDOW}x{SSIM_WINDOW} window: use images of at least that size")
        x = x.detach().cpu()
        if self.net == "l2" and self.colorspace == "RGB":  # the images, for lpips.L2's torch operations in their dtype
            return x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        return on_threads(self.slice_features, slices(x.float().numpy()))  # tensor2im's float32

    def slice_features(self, x):
        """`features` of a slice of the batch (numpy float32)."""
        rgb8 = to_8bit(x)
        if self.colorspace == "RGB":
            return rgb_ssim_stats(rgb8)
        lab = rgb8_to_lab(rgb8)
        if self.net == "l2":  # LPIPS's (H, W, 3) order, for its mean
            return np.ascontiguousarray((lab / LAB_RANGE).transpose(0, 2, 3, 1))
        return ssim_stats(lab)

    def distance(self, f0, f1):
        """Distance (N,) float32 between two images' `features`, rounded as LPIPS rounds it."""
        if self.net == "l2" and self.colorspace == "RGB":  # here: torch parallelises each op (slower on our pool)
            return torch.cat([self.slice_distance(a, b) for a, b in zip(slices(f0), slices(f1))]).float()
        return torch.from_numpy(np.concatenate(on_threads(self.slice_distance, f0, f1)).astype(np.float32))

    def slice_distance(self, f0, f1):
        """`distance` between the features of a slice of two batches, in LPIPS's dtype (float64: RGB SSIM)."""
        if self.net == "l2" and self.colorspace == "RGB":  # lpips.L2 of 2x - 1, its order of means
            return (f0.mul(2).sub_(1) - f1.mul(2).sub_(1)).square_().mean(1).mean(1).mean(1)
        if self.net == "l2":  # numpy's float32 mean of LPIPS's (H, W, 3) array, in its pairwise order
            return 0.5 * np.square(f0 - f1).reshape(len(f0), math.prod(f0.shape[1:])).mean(1)
        if self.colorspace == "Lab":
            return (1 - ssim(f0, f1, LAB_RANGE)) / 2
        return (1 - rgb_ssim(f0, f1)) / 2

    def views(self, feats, configs):
        """The evaluation's per-image step (`experiment.batch_distances`): the features themselves."""
        return feats

    def compare(self, v0, v1, configs):
        """{config: distances (N,)} for the evaluation; a pixel metric has one configuration."""
        return dict.fromkeys(configs, self.distance(v0, v1))

    def forward(self, x0, x1):
        check_same_shape(x0, x1)
        return self.distance(self.features(x0), self.features(x1))
