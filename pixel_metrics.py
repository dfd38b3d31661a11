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

What is LPIPS's to the last bit, and how it is made fast:

- Lab: the float32 Lab image equals scikit-image's bit for bit. It is computed in
  float64 with torch (vectorised, threaded), within 3.4e-13 of scikit-image's float64
  values over all 2^24 8-bit colours; where a value lies within `LAB_MARGIN` of a
  float32 rounding boundary (1 value in 30,000 over all colours), its image row is
  converted again with scikit-image's own numpy operations.
- Lab SSIM: in float32, where DSSIM near 0 amplifies every rounding, scikit-image's
  operations in its order (scipy's uniform_filter, numpy's float32 arithmetic), so the
  same bits.
- RGB SSIM: the 8-bit values make every 7x7 window sum of x, x^2 and x*y a small
  integer, so the sums are exact (int16, int32) and SSIM follows from them in float64
  with exact variances; it differs from scikit-image's float64 only by its rounding
  (SSIM within 3.2e-13 relative, DSSIM within 2e-10 even near SSIM 1, in the tests'
  kind of images).
- L2: numpy's float32 mean in LPIPS's (H, W, 3) order, or LPIPS's own torch means.

Images are float tensors in [0, 1], (N, 3, H, W), RGB, as everywhere in this project:

    PixelMetric("ssim", "Lab")(x0, x1)   # == lpips.DSSIM(colorspace="Lab") on 2x - 1, image by image

The split into `features` (per image: colour conversion, SSIM's local statistics) and
`distance` (per pair) lets a 2AFC reference serve both of its comparisons; `views` and
`compare` are the interface of experiment.py's evaluation (as `DistanceMetric`'s), so
`python experiment.py --net l2 ssim` scores these like any configuration.
"""
import contextlib
import functools
import math
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
LAB_CUBE_ROOT_ABOVE = 0.008856  # below, Lab's f(t) is linear; no 8-bit colour has t within 2e-9 of it
# Our float64 Lab is within 3.4e-13 of scikit-image's for every 8-bit colour (measured on all 2^24
# with torch 2.14 / numpy 2.4); values this close to a float32 rounding boundary are redone exactly.
LAB_MARGIN = 1e-11
LAB_RANGE, RGB_RANGE = 100.0, 255.0
SSIM_WINDOW, SSIM_K1, SSIM_K2 = 7, 0.01, 0.03  # scikit-image's defaults, which LPIPS keeps
WINDOW_PIXELS = SSIM_WINDOW ** 2
COV_NORM = WINDOW_PIXELS / (WINDOW_PIXELS - 1)  # sample covariance


def srgb_linear_table():
    """The linear sRGB value of each 8-bit level, with scikit-image's float64 operations."""
    level = np.arange(256) * (1 / 255)  # img_as_float64 of uint8
    return np.where(level > 0.04045, np.power((level + 0.055) / 1.055, 2.4), level / 12.92)


SRGB_LINEAR = srgb_linear_table()
SRGB_LINEAR_T = torch.from_numpy(SRGB_LINEAR)
XYZ_OVER_WHITE = (XYZ_FROM_RGB / D65_WHITE[:, None]).tolist()
MINUS_ONE = torch.tensor(-1.0)


@functools.cache
def thread_pool(workers):
    """A pool of `workers` threads kept for the process (starting threads per batch costs more than it saves)."""
    return ThreadPoolExecutor(workers)


@contextlib.contextmanager
def torch_on_one_thread():
    """torch without its own worker threads while the pool runs: they spin for milliseconds
    after each parallel operation and would take a core from the pool."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def in_threads(function, *parts):
    """[function(*part_i)] over the parts (sequences of equal length), one thread each: torch's,
    numpy's and scipy's loops release the GIL. Run it within `torch_on_one_thread`."""
    return list(thread_pool(len(parts[0])).map(function, *parts))


def to_8bit(x):
    """LPIPS's `tensor2im` of the [-1, 1] image 2x - 1 (x in [0, 1]): (v + 1) * 127.5 in float32, truncated."""
    return x.float().mul(2).sub_(1).add_(1).mul_(127.5).clamp_(0, 255).to(torch.uint8)


def lab_exact(rgb8):
    """scikit-image's rgb2lab of 8-bit pixels (..., W, 3), numpy array: its float64 operations, as float32."""
    xyz = SRGB_LINEAR[rgb8] @ XYZ_FROM_RGB.T
    xyz /= D65_WHITE
    f = np.where(xyz > LAB_CUBE_ROOT_ABOVE, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], -1).astype(np.float32)


def lab_float64(rgb8):
    """rgb2lab's formula on 8-bit images (N, 3, H, W) in torch float64: (N, 3, H, W), within 3.4e-13 of it.

    The white is folded into the matrix and the cube root is exp(log(t) / 3): other
    roundings than scikit-image's, far below float32's.
    """
    linear = SRGB_LINEAR_T.index_select(0, rgb8.flatten().int()).view(rgb8.shape)  # take() is 10x slower
    r, g, b = linear.unbind(1)
    t = torch.empty_like(linear)
    for channel, (m_r, m_g, m_b) in enumerate(XYZ_OVER_WHITE):
        torch.mul(r, m_r, out=t[:, channel]).add_(g, alpha=m_g).add_(b, alpha=m_b)
    f = torch.where(t > LAB_CUBE_ROOT_ABOVE, t.log().div_(3).exp_(), 7.787 * t + 16.0 / 116.0)
    fx, fy, fz = f.unbind(1)
    lab = torch.empty_like(f)
    torch.mul(fy, 116.0, out=lab[:, 0]).sub_(16.0)
    torch.sub(fx, fy, out=lab[:, 1]).mul_(500.0)
    torch.sub(fy, fz, out=lab[:, 2]).mul_(200.0)
    return lab


def rgb8_to_lab(rgb8):
    """scikit-image's rgb2lab of 8-bit images (N, 3, H, W) uint8 tensor, as float32 (N, 3, H, W): the same bits.

    The float64 values round to float32 as scikit-image's do unless they lie within
    LAB_MARGIN of a rounding boundary; the rows holding such a value are redone with
    scikit-image's operations (`lab_exact`).
    """
    lab64 = lab_float64(rgb8)
    lab = lab64.float()
    unsure = ((lab64 + LAB_MARGIN).float() != (lab64 - LAB_MARGIN).float()).any(1).any(-1)  # (N, H) rows
    if unsure.any():
        rows = rgb8.permute(0, 2, 3, 1)[unsure].numpy()
        lab.permute(0, 2, 3, 1)[unsure] = torch.from_numpy(lab_exact(rows))
    return lab


def window_mean(x):
    """SSIM's local means of (N, C, H, W): scipy's 7x7 uniform_filter of each plane, cropped by 3 pixels.

    It is the filter structural_similarity runs (one axis, then the other, each pass
    stored in the input's dtype), so the means are its means, bit for bit. Contiguous,
    for the arithmetic that follows.
    """
    pad = (SSIM_WINDOW - 1) // 2
    return np.ascontiguousarray(uniform_filter(x, size=(1, 1, SSIM_WINDOW, SSIM_WINDOW))[..., pad:-pad, pad:-pad])


def ssim_stats(image):
    """What SSIM needs of one image without its partner: (image, local mean, its square, local variance)."""
    mean = window_mean(image)
    square = mean * mean
    variance = window_mean(image * image)
    variance -= square
    variance *= COV_NORM
    return image, mean, square, variance


def ssim(stats0, stats1, data_range):
    """scikit-image's structural_similarity(..., channel_axis) per image pair, from `ssim_stats`: (N,).

    scikit-image's arithmetic, operation by operation, in the images' dtype (in place,
    which rounds the same); each channel's map is averaged in float64 and stored back
    in that dtype, then the channels are averaged in it.
    """
    image0, mean0, square0, var0 = stats0
    image1, mean1, square1, var1 = stats1
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    product = mean0 * mean1
    covariance = window_mean(image0 * image1)
    covariance -= product
    covariance *= COV_NORM
    product *= 2  # 2 ux uy: the doubling is exact in any order
    product += c1
    covariance *= 2
    covariance += c2
    product *= covariance
    denominator = square0 + square1
    denominator += c1
    spread = var0 + var1
    spread += c2
    denominator *= spread
    similarity = product
    similarity /= denominator
    return similarity.mean((2, 3), dtype=np.float64).astype(image0.dtype).mean(1)


def window_sums(x):
    """The sum of every 7x7 window inside (N, C, H, W): (N, C, H - 6, W - 6).

    Exact for integers: int16 holds the sums of 8-bit values, int32 those of their squares
    and products. Built from sums of 2 and 4 neighbours: 4 additions per axis, not 6.
    """
    for dim in (-1, -2):
        n = x.shape[dim] - SSIM_WINDOW + 1
        pairs = x.narrow(dim, 0, n + 5) + x.narrow(dim, 1, n + 5)
        fours = pairs.narrow(dim, 0, n + 3) + pairs.narrow(dim, 2, n + 3)
        x = fours.narrow(dim, 0, n) + pairs.narrow(dim, 4, n) + x.narrow(dim, 6, n)
    return x


def rgb_ssim_stats(rgb8):
    """What RGB SSIM needs of one 8-bit image: (values, window sums, two per-image halves of its terms).

    With window sums a, b, sums of squares and of products, and n = 49 pixels, SSIM's
    map is (2ab + C1 n^2)(2(n Sxy - ab) + C2 n(n-1)) / ((a^2 + b^2 + C1 n^2)(n Sxx - a^2 +
    n Syy - b^2 + C2 n(n-1))): scikit-image's formula with the n's cancelled.
    """
    c1, c2 = rgb_ssim_constants()
    x = rgb8.short()  # window sums of 8-bit values fit 16 bits; squares and products take 32
    total = window_sums(x).double()
    squares = total * total
    spread = window_sums(x.int().square_()).double().mul_(WINDOW_PIXELS).sub_(squares)  # n^2 (n-1)/n variance
    return x, total, squares.add_(c1 / 2), spread.add_(c2 / 2)


def rgb_ssim_constants():
    """C1 n^2 and C2 n (n - 1) for range 255: the constants of the window-sum form of SSIM."""
    return ((SSIM_K1 * RGB_RANGE) ** 2 * WINDOW_PIXELS ** 2,
            (SSIM_K2 * RGB_RANGE) ** 2 * WINDOW_PIXELS * (WINDOW_PIXELS - 1))


def rgb_ssim(stats0, stats1):
    """structural_similarity(..., data_range=255, channel_axis) of 8-bit images from `rgb_ssim_stats`: (N,) float64."""
    x0, a, squares0, spread0 = stats0
    x1, b, squares1, spread1 = stats1
    c1, c2 = rgb_ssim_constants()
    ab = a * b
    covariances = window_sums(x0.int().mul_(x1)).double().mul_(WINDOW_PIXELS).sub_(ab).mul_(2).add_(c2)
    similarity = ab.mul_(2).add_(c1).mul_(covariances).div_((squares0 + squares1).mul_(spread0 + spread1))
    return similarity.mean((2, 3)).mean(1)


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
        """What the comparisons need of images `x` in [0, 1], computed once per image (on the CPU).

        lpips.L2 in RGB is plain torch on torch's threads; the rest runs in parts on the
        pool, torch on one thread.
        """
        if self.net == "l2" and self.colorspace == "RGB":
            check_images(x, "images")
            return torch.add(MINUS_ONE, x.detach().cpu(), alpha=2)  # 2x - 1 in one pass: 2x is exact
        workers = max(1, min(torch.get_num_threads(), len(x)))
        with torch_on_one_thread():
            check_images(x, "images")
            if self.net == "ssim" and min(x.shape[-2:]) < SSIM_WINDOW:
                raise ValueError(f"images of {x.shape[-2]}x{x.shape[-1]} pixels are smaller than SSIM's "
                                 f"{SSIM_WINDOW}x{SSIM_WINDOW} window: use images of at least that size")
            return in_threads(self.part_features, x.detach().cpu().tensor_split(workers))

    def part_features(self, x):
        """`features` of a part of the batch, on one thread."""
        rgb8 = to_8bit(x)
        if self.colorspace == "RGB":
            return rgb_ssim_stats(rgb8)
        lab = rgb8_to_lab(rgb8)
        if self.net == "l2":
            return (lab / LAB_RANGE).permute(0, 2, 3, 1).contiguous().numpy()  # LPIPS's (H, W, 3) order
        return ssim_stats(lab.numpy())

    def distance(self, f0, f1):
        """Distance (N,) float32 between two images' `features`, rounded as LPIPS rounds it."""
        if self.net == "l2" and self.colorspace == "RGB":
            return (f0 - f1).square_().mean(1).mean(1).mean(1).float()  # lpips.L2's order of means
        with torch_on_one_thread():
            distances = in_threads(self.part_distance, f0, f1)
        return torch.from_numpy(np.concatenate(distances).astype(np.float32))

    def part_distance(self, f0, f1):
        """`distance` between the features of a part of the batch, in float64 or LPIPS's float32 (numpy)."""
        if self.colorspace == "RGB":
            return ((1 - rgb_ssim(f0, f1)) / 2).numpy()
        if self.net == "l2":  # numpy's float32 mean, in its pairwise order
            return 0.5 * np.square(f0 - f1).reshape(len(f0), math.prod(f0.shape[1:])).mean(1)
        return (1 - ssim(f0, f1, LAB_RANGE)) / 2

    def views(self, feats, configs):
        """The evaluation's per-image step (`experiment.batch_distances`): the features themselves."""
        return feats

    def compare(self, v0, v1, configs):
        """{config: distances (N,)} for the evaluation; a pixel metric has one configuration."""
        return dict.fromkeys(configs, self.distance(v0, v1))

    def forward(self, x0, x1):
        check_same_shape(x0, x1)
        return self.distance(self.features(x0), self.features(x1))
