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

- 8 bits: `tensor2im`'s float32 steps, in one compiled loop (numba).
- Lab: the float32 Lab image equals scikit-image's bit for bit. It is computed in
  float64 by one compiled loop per pixel, within 7.3e-13 of scikit-image's float64
  values over all 2^24 8-bit colours (its cube root is a table's line and one Halley
  step, not libm's); where a value lies within `LAB_MARGIN` of a float32 rounding
  boundary (1 value in 30,000 over all colours), its image row is converted again with
  scikit-image's own numpy operations.
- Lab SSIM: in float32, where DSSIM near 0 amplifies every rounding, scikit-image's
  operations in its order (scipy's uniform_filter, numpy's float32 arithmetic), so the
  same bits with whatever scipy is installed.
- RGB SSIM: the 8-bit values make every 7x7 window sum of x, x^2 and x*y an integer,
  so the sums are exact (running sums, int64) and SSIM follows from them in float64
  with exact variances; it differs from scikit-image's float64 only by its rounding
  (DSSIM within 1e-9 relative even near SSIM 1, in the tests' kind of images).
- L2: Lab: numpy's float32 mean in LPIPS's (H, W, 3) order; RGB: the channel mean of the
  squares in one compiled loop with torch's float32 operations, then LPIPS's own torch means.

The compiled loops are cached beside this file after their first use (`__pycache__`,
a few seconds once). Each batch is cut into one part per torch thread, run on a thread
pool (the loops release the GIL), and malloc keeps freed memory (`keep_freed_memory`).

Images are float tensors in [0, 1], (N, 3, H, W), RGB, as everywhere in this project:

    PixelMetric("ssim", "Lab")(x0, x1)   # == lpips.DSSIM(colorspace="Lab") on 2x - 1, image by image

The split into `features` (per image: colour conversion, SSIM's local statistics) and
`distance` (per pair) lets a 2AFC reference serve both of its comparisons; `views` and
`compare` are the interface of experiment.py's evaluation (as `DistanceMetric`'s), so
`python experiment.py --net l2 ssim` scores these like any configuration.
"""
import contextlib
import ctypes
import functools
import math
import sys
from concurrent.futures import ThreadPoolExecutor

import numba
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
LAB_CUBE_ROOT_ABOVE = 0.008856  # below, Lab's f(t) is linear; no 8-bit colour has t within 2e-9 of it
# Our float64 Lab is within 7.3e-13 of scikit-image's for every 8-bit colour (measured on all 2^24
# with numba 0.68 / numpy 2.4); values this close to a float32 rounding boundary are redone exactly.
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
XYZ_OVER_WHITE = XYZ_FROM_RGB / D65_WHITE[:, None]
FLOAT32_ZERO, FLOAT32_ONE, FLOAT32_TWO, FLOAT32_THREE = np.float32(0), np.float32(1), np.float32(2), np.float32(3)
FLOAT32_HALF_LEVELS, FLOAT32_TOP = np.float32(127.5), np.float32(255)


M_TOP_PAD, M_MMAP_THRESHOLD = -2, -3  # glibc's mallopt parameters (malloc.h)


@functools.cache
def keep_freed_memory():
    """Have glibc's malloc keep freed memory for reuse: up to 64 MiB at the top of each arena, and
    arrays under 32 MiB served from it. Process-wide, once; a no-op off Linux.

    By default, a freed array of a few MiB goes back to the system and the next one is
    mapped afresh, a page fault per 4 KiB: with a batch's temporaries that was up to 3x the
    time of the arithmetic (50,000 page faults per 1,000 triplets of L2 RGB, counted with
    getrusage, which then ran at 1.5x LPIPS's speed instead of 6x).
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None) if sys.platform.startswith("linux") else None
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, 32 << 20)
        mallopt(M_TOP_PAD, 64 << 20)


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
    """[function(*part_i)] over the parts (sequences of equal length), one thread each: the compiled
    loops, torch's, numpy's and scipy's release the GIL. Run it within `torch_on_one_thread`."""
    return list(thread_pool(len(parts[0])).map(function, *parts))


@numba.njit(nogil=True, cache=True)
def lpips_input(v):
    """2v - 1: the [-1, 1] value LPIPS is given, in v's precision (2v is exact, the subtraction rounds once)."""
    return v * FLOAT32_TWO - FLOAT32_ONE


@numba.njit(nogil=True, cache=True)
def channel_mean_squared_difference(x0, x1):
    """lpips.L2's first step in RGB, for images in [0, 1] (N, 3, H, W) float32 or float64: the mean over the
    channels of (lpips_input(x0) - lpips_input(x1))^2, (N, H, W), as torch computes it in that dtype
    (the squares summed channel after channel, then divided by 3), in one pass."""
    mean = np.empty((x0.shape[0], x0.shape[2], x0.shape[3]), x0.dtype)
    for i in range(x0.shape[0]):
        for y in range(x0.shape[2]):
            for k in range(x0.shape[3]):
                d0 = lpips_input(x0[i, 0, y, k]) - lpips_input(x1[i, 0, y, k])
                d1 = lpips_input(x0[i, 1, y, k]) - lpips_input(x1[i, 1, y, k])
                d2 = lpips_input(x0[i, 2, y, k]) - lpips_input(x1[i, 2, y, k])
                mean[i, y, k] = (d0 * d0 + d1 * d1 + d2 * d2) / FLOAT32_THREE
    return mean


@numba.njit(nogil=True, cache=True)
def to_8bit(x):
    """LPIPS's `tensor2im` of the [-1, 1] image 2x - 1, for float32 images x (N, 3, H, W) in [0, 1]:
    ((2x - 1) + 1) * 127.5, each step rounded to float32, truncated to uint8.

    The constants are float32, so every step is the float32 operation torch and numpy do.
    """
    rgb8 = np.empty(x.shape, np.uint8)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            for y in range(x.shape[2]):
                for k in range(x.shape[3]):
                    v = (lpips_input(x[i, c, y, k]) + FLOAT32_ONE) * FLOAT32_HALF_LEVELS
                    rgb8[i, c, y, k] = min(max(v, FLOAT32_ZERO), FLOAT32_TOP)
    return rgb8


def lab_exact(rgb8):
    """scikit-image's rgb2lab of 8-bit pixels (..., W, 3), numpy array: its float64 operations, as float32."""
    xyz = SRGB_LINEAR[rgb8] @ XYZ_FROM_RGB.T
    xyz /= D65_WHITE
    f = np.where(xyz > LAB_CUBE_ROOT_ABOVE, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], -1).astype(np.float32)


def cube_root_table():
    """Lab's cube root at t = k / CUBE_ROOT_KNOTS over t in [0, 1.1] (8-bit colours reach 1.0888),
    and each knot's slope to the next."""
    root = np.cbrt(np.arange(int(1.1 * CUBE_ROOT_KNOTS) + 2) / CUBE_ROOT_KNOTS)
    return root, np.diff(root, append=root[-1]) * CUBE_ROOT_KNOTS


CUBE_ROOT_KNOTS = 4096  # a power of 2, so k / knots is exact
CUBE_ROOT, CUBE_ROOT_SLOPE = cube_root_table()


@numba.njit(nogil=True, cache=True)
def lab_f(t):
    """Lab's f(t): linear up to 0.008856, above it the cube root, within 7e-15 of np.cbrt.

    The root is the table's line between two knots (within 2e-5), then one Halley step
    (the error cubed): no libm call, which would cost more than the rest of a pixel.
    """
    if t <= LAB_CUBE_ROOT_ABOVE:
        return 7.787 * t + 16.0 / 116.0
    k = int(t * CUBE_ROOT_KNOTS)
    y = CUBE_ROOT[k] + CUBE_ROOT_SLOPE[k] * (t - k / CUBE_ROOT_KNOTS)
    y3 = y * y * y
    return y * (y3 + 2.0 * t) / (2.0 * y3 + t)


@numba.njit(nogil=True, cache=True)
def lab_float64(rgb8):
    """rgb2lab's formula on 8-bit images (N, 3, H, W), one pass per pixel in float64: (N, 3, H, W), within
    7.3e-13 of scikit-image's float64 values for every 8-bit colour.

    The white is folded into the matrix and the cube root is `lab_f`'s: other roundings
    than scikit-image's, far below float32's.
    """
    lab = np.empty(rgb8.shape)
    for i in range(rgb8.shape[0]):
        for y in range(rgb8.shape[2]):
            for x in range(rgb8.shape[3]):
                r, g, b = SRGB_LINEAR[rgb8[i, 0, y, x]], SRGB_LINEAR[rgb8[i, 1, y, x]], SRGB_LINEAR[rgb8[i, 2, y, x]]
                fx = lab_f(XYZ_OVER_WHITE[0, 0] * r + XYZ_OVER_WHITE[0, 1] * g + XYZ_OVER_WHITE[0, 2] * b)
                fy = lab_f(XYZ_OVER_WHITE[1, 0] * r + XYZ_OVER_WHITE[1, 1] * g + XYZ_OVER_WHITE[1, 2] * b)
                fz = lab_f(XYZ_OVER_WHITE[2, 0] * r + XYZ_OVER_WHITE[2, 1] * g + XYZ_OVER_WHITE[2, 2] * b)
                lab[i, 0, y, x] = 116.0 * fy - 16.0
                lab[i, 1, y, x] = 500.0 * (fx - fy)
                lab[i, 2, y, x] = 200.0 * (fy - fz)
    return lab


@numba.njit(nogil=True, cache=True)
def round_to_float32(lab64):
    """(lab64 as float32, unsure (N, H)): unsure marks the image rows holding a value within
    LAB_MARGIN of a float32 rounding boundary, which another float64 rounding could round otherwise."""
    lab = np.empty(lab64.shape, np.float32)
    unsure = np.zeros((lab64.shape[0], lab64.shape[2]), np.bool_)
    for i in range(lab64.shape[0]):
        for c in range(lab64.shape[1]):
            for y in range(lab64.shape[2]):
                near = False
                for x in range(lab64.shape[3]):
                    v = lab64[i, c, y, x]
                    lab[i, c, y, x] = v
                    near |= np.float32(v - LAB_MARGIN) != np.float32(v + LAB_MARGIN)
                unsure[i, y] |= near
    return lab, unsure


def rgb8_to_lab(rgb8):
    """scikit-image's rgb2lab of 8-bit images (N, 3, H, W) uint8, as float32 (N, 3, H, W): the same bits.

    The float64 values round to float32 as scikit-image's do unless they lie within
    LAB_MARGIN of a rounding boundary; the rows holding such a value are redone with
    scikit-image's operations (`lab_exact`).
    """
    lab, unsure = round_to_float32(lab_float64(rgb8))
    if unsure.any():
        lab.transpose(0, 2, 3, 1)[unsure] = lab_exact(rgb8.transpose(0, 2, 3, 1)[unsure])
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


@numba.njit(nogil=True, cache=True)
def window_sums(v):
    """The sum of every 7x7 window inside an integer plane v (H, W): (H - 6, W - 6) int64, exact.

    Running sums: each row of column sums from the one above (one row in, one out), then
    along each row the same; two additions per pixel and axis, not seven.
    """
    n = SSIM_WINDOW
    columns = np.zeros((v.shape[0] - n + 1, v.shape[1]), np.int64)
    for y in range(n):
        for x in range(v.shape[1]):
            columns[0, x] += v[y, x]
    for y in range(1, columns.shape[0]):
        for x in range(v.shape[1]):
            columns[y, x] = columns[y - 1, x] + v[y + n - 1, x] - v[y - 1, x]
    sums = np.empty((columns.shape[0], v.shape[1] - n + 1), np.int64)
    for y in range(columns.shape[0]):
        total = 0
        for x in range(n):
            total += columns[y, x]
        sums[y, 0] = total
        for x in range(1, sums.shape[1]):
            total += columns[y, x + n - 1] - columns[y, x - 1]
            sums[y, x] = total
    return sums


# C1 n^2 and C2 n (n - 1) for range 255: the constants of SSIM's window-sum form (`rgb_ssim`)
RGB_C1 = (SSIM_K1 * RGB_RANGE) ** 2 * WINDOW_PIXELS ** 2
RGB_C2 = (SSIM_K2 * RGB_RANGE) ** 2 * WINDOW_PIXELS * (WINDOW_PIXELS - 1)


@numba.njit(nogil=True, cache=True)
def rgb_ssim_stats(rgb8):
    """What RGB SSIM needs of 8-bit images (N, C, H, W) without their partners: the window sums of
    the values and of their squares, each (N, C, H - 6, W - 6) int64."""
    n, channels, h, w = rgb8.shape
    sums = np.empty((2, n, channels, h - SSIM_WINDOW + 1, w - SSIM_WINDOW + 1), np.int64)
    for i in range(n):
        for c in range(channels):
            v = rgb8[i, c].astype(np.int64)
            sums[0, i, c] = window_sums(v)
            sums[1, i, c] = window_sums(v * v)
    return sums[0], sums[1]


@numba.njit(nogil=True, cache=True)
def rgb_ssim(x0, stats0, x1, stats1):
    """structural_similarity(..., data_range=255, channel_axis) of 8-bit image pairs (N, C, H, W), with their
    `rgb_ssim_stats`: (N,) float64.

    With window sums a, b, sums of squares Saa, Sbb and of products Sab, and n = 49
    pixels, SSIM's map is (2ab + C1 n^2)(2(n Sab - ab) + C2 n(n-1)) / ((a^2 + b^2 + C1 n^2)
    (n (Saa + Sbb) - a^2 - b^2 + C2 n(n-1))): scikit-image's formula with the n's
    cancelled. The sums and their integer terms are exact, so the variances are too.
    """
    (a, aa), (b, bb) = stats0, stats1
    similarity = np.zeros(x0.shape[0])
    for i in range(x0.shape[0]):
        for c in range(x0.shape[1]):
            ab_sums = window_sums(x0[i, c].astype(np.int64) * x1[i, c])
            plane = 0.0
            for y in range(ab_sums.shape[0]):
                for x in range(ab_sums.shape[1]):
                    ab = a[i, c, y, x] * b[i, c, y, x]
                    squares = a[i, c, y, x] ** 2 + b[i, c, y, x] ** 2
                    spread = WINDOW_PIXELS * (aa[i, c, y, x] + bb[i, c, y, x]) - squares
                    plane += ((2 * ab + RGB_C1) * (2 * (WINDOW_PIXELS * ab_sums[y, x] - ab) + RGB_C2)
                              / ((squares + RGB_C1) * (spread + RGB_C2)))
            similarity[i] += plane / ab_sums.size
    return similarity / x0.shape[1]


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
        keep_freed_memory()

    def features(self, x):
        """What the comparisons need of images `x` in [0, 1], computed once per image (on the CPU).

        L2 in RGB needs the images themselves (float32, or float64 as given); the rest runs
        in parts on the pool, torch on one thread.
        """
        if self.net == "l2" and self.colorspace == "RGB":
            check_images(x, "images")
            return x.detach().cpu().to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        workers = max(1, min(torch.get_num_threads(), len(x)))
        with torch_on_one_thread():
            check_images(x, "images")
            if self.net == "ssim" and min(x.shape[-2:]) < SSIM_WINDOW:
                raise ValueError(f"images of {x.shape[-2]}x{x.shape[-1]} pixels are smaller than SSIM's "
                                 f"{SSIM_WINDOW}x{SSIM_WINDOW} window: use images of at least that size")
            return in_threads(self.part_features, x.detach().cpu().tensor_split(workers))

    def part_features(self, x):
        """`features` of a part of the batch, on one thread."""
        rgb8 = to_8bit(x.float().numpy())
        if self.colorspace == "RGB":
            return rgb8, rgb_ssim_stats(rgb8)
        lab = rgb8_to_lab(rgb8)
        if self.net == "l2":
            return np.ascontiguousarray((lab / LAB_RANGE).transpose(0, 2, 3, 1))  # LPIPS's (H, W, 3) order
        return ssim_stats(lab)

    def distance(self, f0, f1):
        """Distance (N,) float32 between two images' `features`, rounded as LPIPS rounds it."""
        if self.net == "l2" and self.colorspace == "RGB":  # one loop over the pixels, then lpips.L2's torch means
            dtype = torch.promote_types(f0.dtype, f1.dtype)
            channel_mean = channel_mean_squared_difference(f0.to(dtype).numpy(), f1.to(dtype).numpy())
            return torch.from_numpy(channel_mean).mean(1).mean(1).float()
        with torch_on_one_thread():
            distances = in_threads(self.part_distance, f0, f1)
        return torch.from_numpy(np.concatenate(distances).astype(np.float32))

    def part_distance(self, f0, f1):
        """`distance` between the features of a part of the batch, in float64 or LPIPS's float32 (numpy)."""
        if self.colorspace == "RGB":
            return (1 - rgb_ssim(f0[0], f0[1], f1[0], f1[1])) / 2
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
