"""Graded flaw sweeps: how far a metric moves an image from itself as one change grows.

For an image x and a transformation at magnitudes m_0 = 0 < m_1 < ..., each transformed image
T_m(x) is compared with the original, and the distance is divided by the original's median
distance to the reference images (unrelated pictures): a ratio of 1 means "as far as an
unrelated image". The tolerance of a configuration on an image is the largest magnitude up to
which every transformed image is still closer to the original than every reference.

Transformations (`TRANSFORMS`), each with its default series of magnitudes:

- translate: the window moves m pixels to the right over the image: the original is the
  columns [0, W - M), T_m the columns [m, W - M + m), M the largest magnitude (new content
  comes in at the edge, nothing wraps around); the references are cropped as the original.
- rotate: m degrees counter-clockwise about the centre (multiples of 90 exactly, with
  `torch.rot90`, others bicubic), then the central square that stays inside the image at every
  angle (side floor(min(H, W) / sqrt 2)); the original and the references are cropped to it.
- invert: the colours moved a fraction m of the way to their inversion, x + m (1 - 2x).
- stain: a red square of m x m pixels at the centre.

An image equal to its original (magnitude 0) has distance 0 without a pass through the
network; every other image goes through it once.
"""
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm import tqdm

STAIN_COLOUR = (1.0, 0.0, 0.0)


def crop_columns(x, start, stop):
    return x[..., start:stop].contiguous()


def translate_frame(x, magnitudes):
    return crop_columns(x, 0, x.shape[-1] - max(magnitudes))


def translate(x, m, magnitudes):
    return crop_columns(x, m, x.shape[-1] - max(magnitudes) + m)


def central_square(x):
    """The central square of side floor(min(H, W) / sqrt 2): inside the image turned by any angle."""
    height, width = x.shape[-2:]
    side = math.floor(min(height, width) / math.sqrt(2))
    top, left = (height - side) // 2, (width - side) // 2
    return x[..., top:top + side, left:left + side].contiguous()


def rotated(x, degrees):
    """`x` (3, H, W) turned `degrees` counter-clockwise about its centre (as PIL's Image.rotate), same size."""
    turns, rest = divmod(degrees, 90)
    if rest == 0:
        return torch.rot90(x, int(turns), dims=(-2, -1))
    height, width = x.shape[-2:]
    rad = math.radians(degrees)
    cos, sin = math.cos(rad), math.sin(rad)
    # output pixel (u, v), centred, y down, shows the input at the point turned by the angle
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5 - height / 2,
                          torch.arange(width, dtype=torch.float64) + 0.5 - width / 2, indexing="ij")
    grid = torch.stack([(cos * u - sin * v) / (width / 2), (sin * u + cos * v) / (height / 2)], dim=-1)
    out = F.grid_sample(x[None].double(), grid[None], mode="bicubic", padding_mode="border", align_corners=False)
    return out[0].to(x.dtype).clamp_(0, 1)


def rotate_frame(x, magnitudes):
    return central_square(x)


def rotate(x, m, magnitudes):
    return central_square(rotated(x, m))


def unframed(x, magnitudes):
    return x


def invert(x, m, magnitudes):
    return x + m * (1 - 2 * x)


def stain(x, m, magnitudes):
    height, width = x.shape[-2:]
    top, left = (height - m) // 2, (width - m) // 2
    out = x.clone()
    out[:, top:top + m, left:left + m] = torch.tensor(STAIN_COLOUR, dtype=x.dtype)[:, None, None]
    return out


class Transform(NamedTuple):
    """One graded change: `make(x, m, magnitudes)` the transformed image, `frame(x, magnitudes)` the view of the
    original (and of the references) it is compared with; `axis` labels the magnitudes."""
    name: str
    axis: str
    magnitudes: tuple
    make: object
    frame: object
    whole: bool  # magnitudes are whole numbers


TRANSFORMS = {t.name: t for t in (
    Transform("translate", "shift (pixels to the right)", (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
              translate, translate_frame, whole=True),
    Transform("rotate", "rotation (degrees counter-clockwise)", (0, 2, 5, 10, 15, 22.5, 30, 45, 60, 90, 135, 180),
              rotate, rotate_frame, whole=False),
    Transform("invert", "inversion strength (0: none, 1: full)", (0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1),
              invert, unframed, whole=False),
    Transform("stain", "side of the red stain (pixels)", (0, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64),
              stain, unframed, whole=True),
)}


def parse_sweep(text):
    """(Transform, magnitudes) of `--sweep NAME` or `NAME=M1,M2,...`: sorted, 0 added; ValueError saying the fix."""
    name, _, listed = text.partition("=")
    if name not in TRANSFORMS:
        raise ValueError(f"--sweep {text}: unknown transformation {name!r}; choose from {', '.join(TRANSFORMS)}")
    transform = TRANSFORMS[name]
    if not listed:
        return transform, transform.magnitudes
    try:
        values = [float(v) for v in listed.split(",")]
    except ValueError:
        raise ValueError(f"--sweep {text}: magnitudes are numbers separated by commas, e.g. {name}=0,1,2") from None
    if any(v < 0 or not math.isfinite(v) or (transform.whole and v != int(v)) for v in values):
        kind = "whole numbers" if transform.whole else "numbers"
        raise ValueError(f"--sweep {text}: the magnitudes of {name} are {kind} >= 0")
    if name == "invert" and max(values) > 1:
        raise ValueError(f"--sweep {text}: inversion strengths go from 0 to 1")
    return transform, tuple(sorted({0, *(int(v) if v == int(v) else v for v in values)}))


def check_fits(transform, magnitudes, shape, path):
    """ValueError naming the image if the largest magnitude does not fit an image of `shape` (3, H, W)."""
    height, width = shape[-2:]
    if transform.name == "translate" and max(magnitudes) >= width:
        raise ValueError(f"--sweep translate shifts by up to {max(magnitudes)} pixels, but {path} is {width} pixels "
                         f"wide: choose smaller magnitudes (translate=0,1,2,...)")
    if transform.name == "stain" and max(magnitudes) > min(height, width):
        raise ValueError(f"--sweep stain: a stain of {max(magnitudes)} pixels does not fit {path} "
                         f"({height}x{width}): choose smaller magnitudes")


class ImageSweep(NamedTuple):
    """One image's sweep: {config: [distance per magnitude]} and {config: [distance per reference]}."""
    distances: dict
    ref_distances: dict


def batched_views(metric, images, configs, batch_size, device):
    """Each image's views (a batch of one), the images through the network `batch_size` at a time."""
    views = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack(images[start:start + batch_size]).to(device)
        found = metric.views(metric.features(batch), configs)
        views += [{key: [t[i:i + 1] for t in layers] for key, layers in found.items()} for i in range(len(batch))]
    return views


def distances_to(metric, view, others, configs):
    """{config: [distance from the image of `view` to each of `others`]}, compared all at once."""
    if not others:
        return {config: [] for config in configs}
    stacked = {key: [torch.cat([o[key][k] for o in others]) for k in range(len(layers))]
               for key, layers in view.items()}
    repeated = {key: [t.expand(len(others), *t.shape[1:]) for t in layers] for key, layers in view.items()}
    return {config: d.tolist() for config, d in metric.compare(repeated, stacked, configs).items()}


def sweep(metric, configs, originals, refs, transform, magnitudes, device="cpu", batch_size=16, desc=None):
    """{path: ImageSweep} of every image of `originals` ({path: (3, H, W)}) against `refs` ({path: image}).

    References are framed as each original and passed once per distinct frame size; every
    transformed image differing from its original goes through the network once.
    """
    ref_views, out = {}, {}
    with torch.inference_mode():
        for path, x in tqdm(originals.items(), desc=desc, unit="image"):
            check_fits(transform, magnitudes, x.shape, path)
            original = transform.frame(x, magnitudes)
            shape = tuple(original.shape)
            if shape not in ref_views:
                framed = [transform.frame(ref, magnitudes) for ref in refs.values()]
                for ref_path, ref in zip(refs, framed):
                    if ref.shape != original.shape:
                        raise ValueError(f"{ref_path} is {tuple(refs[ref_path].shape[1:])} pixels but {path} is "
                                         f"{tuple(x.shape[1:])}: compared images need one size; pass --size N")
                ref_views[shape] = batched_views(metric, framed, configs, batch_size, device)
            transformed = [transform.make(x, m, magnitudes) for m in magnitudes]
            moved = [i for i, t in enumerate(transformed) if not torch.equal(t, original)]
            views = batched_views(metric, [original] + [transformed[i] for i in moved], configs, batch_size, device)
            found = distances_to(metric, views[0], views[1:], configs)
            distances = {config: [0.0] * len(magnitudes) for config in configs}
            for config in configs:
                for i, d in zip(moved, found[config]):
                    distances[config][i] = d
            out[path] = ImageSweep(distances, distances_to(metric, views[0], ref_views[shape], configs))
    return out


def tolerance(magnitudes, distances, ref_distances):
    """The largest magnitude up to which every transformed image is closer than every reference (None: not even
    magnitude 0, where a reference equals the original)."""
    nearest = min(ref_distances)
    found = None
    for m, d in zip(magnitudes, distances):
        if not d < nearest:
            break
        found = m
    return found
