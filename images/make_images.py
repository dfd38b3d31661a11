"""Generate the flaw-analysis test images and images/manifest.csv, deterministically.

Every image is procedural (seeded value noise and analytic shapes), so a rotated
variant is the same picture rendered at rotated coordinates: a rotation of an
unbounded canvas followed by a centre crop, with no black corners and no
resampling blur. Translated variants are windows cropped from one larger canvas.

    python images/make_images.py [--out DIR]

Running it twice gives byte-identical PNG files (for one Pillow/zlib build).
"""
import argparse
import csv
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

SIZE = 96
SUPERSAMPLE = 4  # sub-samples per pixel side, for anti-aliased edges
MARGIN = 8  # extra canvas around translated images, larger than any shift
ANGLES = (22.5, 45, 67.5, 90, 180)
SHIFTS = ((1, 0), (0, 3), (6, 6))
REFS = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
}
# Colours hidden under fully transparent pixels, one per variant, so that a
# loader which drops alpha instead of compositing sees different backgrounds.
HIDDEN = ((255, 0, 255), (0, 255, 255), (255, 255, 0), (0, 0, 0), (255, 0, 0), (0, 0, 255))


# ---------------------------------------------------------------- sampling

def sample_grid(size, angle=0.0):
    """Sub-sample coordinates (x, y) in pixels from the image centre, y down.

    Sampling at the turned coordinates shows the content turned by `angle`
    degrees counter-clockwise, as PIL's Image.rotate does. Multiples of 90
    degrees use exact sines, so those variants equal numpy's rot90.
    """
    n = size * SUPERSAMPLE
    axis = (np.arange(n) + 0.5) / SUPERSAMPLE - size / 2
    x, y = np.meshgrid(axis, axis)
    rad = np.deg2rad(angle)
    cos, sin = np.cos(rad), np.sin(rad)
    if angle % 90 == 0:
        cos, sin = round(cos), round(sin)
    return cos * x - sin * y, sin * x + cos * y


def block_mean(a):
    """Average SUPERSAMPLE x SUPERSAMPLE blocks of an (n, n, ...) array."""
    n = a.shape[0] // SUPERSAMPLE
    return a.reshape(n, SUPERSAMPLE, n, SUPERSAMPLE, *a.shape[2:]).mean(axis=(1, 3))


def to_uint8(a):
    """[0, 1] floats to 0..255 integers (rounded, clipped)."""
    return np.round(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8)


def render(field, size=SIZE, angle=0.0):
    """Render a colour field f(x, y) -> (..., 3) in [0, 1] to a uint8 RGB array."""
    x, y = sample_grid(size, angle)
    return to_uint8(block_mean(field(x, y)))


def render_shape(ink, paper, ink_colour, size=SIZE, angle=0.0):
    """Render a two-colour picture; `ink(x, y)` is a boolean mask.

    Coverage is averaged before mixing colours, so the result is exact for
    any sub-sample order (rotations by 90 degrees stay exact).
    """
    x, y = sample_grid(size, angle)
    cover = block_mean(ink(x, y).astype(np.float64))[..., None]
    paper, ink_colour = np.asarray(paper, float), np.asarray(ink_colour, float)
    return to_uint8(paper + (ink_colour - paper) * cover)


def render_cutout(mask, field, size=SIZE, angle=0.0):
    """Render a shape with straight alpha: (colour averaged over the shape, alpha)."""
    x, y = sample_grid(size, angle)
    inside = mask(x, y).astype(np.float64)
    colour = field(x, y)
    weights = block_mean(inside)
    sums = block_mean(colour * inside[..., None])
    colour = sums / np.maximum(weights, 1e-12)[..., None]
    return to_uint8(colour), to_uint8(weights)


# ---------------------------------------------------------------- noise

class ValueNoise:
    """Smoothly interpolated random values on a periodic integer lattice."""

    def __init__(self, seed, period=64):
        self.table = np.random.default_rng(seed).random((period, period))
        self.period = period

    def __call__(self, x, y):
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = smoothstep(x - x0), smoothstep(y - y0)
        i, j = x0.astype(np.int64) % self.period, y0.astype(np.int64) % self.period
        i1, j1 = (i + 1) % self.period, (j + 1) % self.period
        t = self.table
        top = t[j, i] + (t[j, i1] - t[j, i]) * fx
        bottom = t[j1, i] + (t[j1, i1] - t[j1, i]) * fx
        return top + (bottom - top) * fy


def smoothstep(t):
    return t * t * (3 - 2 * t)


def fbm(noise, x, y, octaves):
    """Fractal sum of noise octaves, normalised to [0, 1]."""
    total, amplitude, norm = 0.0, 1.0, 0.0
    for k in range(octaves):
        # Offsets decorrelate the octaves, which share one lattice.
        total = total + amplitude * noise(x * 2**k + 17.3 * k, y * 2**k + 31.7 * k)
        norm += amplitude
        amplitude *= 0.5
    return total / norm


def ramp(t, stops):
    """Piecewise-linear colour map; stops are (position, (r, g, b)) in [0, 1]."""
    positions = [p for p, _ in stops]
    channels = [np.interp(t, positions, [c[k] for _, c in stops]) for k in range(3)]
    return np.stack(channels, axis=-1)


# ---------------------------------------------------------------- textures

def clouds(x, y):
    n = fbm(ValueNoise(1), x / 30, y / 30, 6)
    return ramp(n, [(0.0, (0.2, 0.4, 0.85)), (0.4, (0.4, 0.6, 0.92)),
                    (0.6, (0.95, 0.96, 0.98)), (1.0, (0.75, 0.78, 0.84))])


def marble(x, y):
    turbulence = fbm(ValueNoise(2), x / 28, y / 28, 6)
    veins = np.abs(np.sin((0.8 * x + 0.5 * y) / 9 + 9 * turbulence)) ** 0.4
    return ramp(veins, [(0.0, (0.2, 0.25, 0.25)), (0.6, (0.78, 0.78, 0.74)),
                        (1.0, (0.96, 0.94, 0.9))])


def wood(x, y):
    warp = 3 * fbm(ValueNoise(3), x / 40, y / 40, 4)
    rings = np.hypot(x + 70, (y + 110) * 0.4) / 4.5 + warp
    grain = fbm(ValueNoise(4), x / 1.5, y / 25, 3)
    t = (rings - np.floor(rings)) ** 2.5 * 0.75 + grain * 0.35
    return ramp(t, [(0.0, (0.85, 0.64, 0.4)), (0.5, (0.68, 0.45, 0.24)),
                    (1.0, (0.42, 0.24, 0.11))])


def bark(x, y):
    n = fbm(ValueNoise(5), x / 7, y / 45, 5)
    ridges = 1 - np.abs(2 * n - 1)
    detail = fbm(ValueNoise(6), x / 3, y / 6, 3)
    t = np.clip(ridges * 1.3 - 0.3, 0, 1) * 0.8 + detail * 0.2
    return ramp(t, [(0.0, (0.1, 0.08, 0.06)), (0.45, (0.35, 0.29, 0.22)),
                    (1.0, (0.62, 0.57, 0.5))])


def grass(x, y):
    # Blades: fine across, long along a slightly bent direction.
    u = x + 0.25 * y + 4 * fbm(ValueNoise(7), x / 30, y / 30, 2)
    blades = fbm(ValueNoise(8), u / 1.8, y / 16, 3)
    light = fbm(ValueNoise(9), x / 20, y / 20, 3)
    t = np.clip((blades - 0.5) * 2.2 + 0.5, 0, 1) * 0.75 + light * 0.25
    return ramp(t, [(0.0, (0.05, 0.18, 0.03)), (0.5, (0.25, 0.5, 0.1)),
                    (0.85, (0.55, 0.72, 0.2)), (1.0, (0.8, 0.82, 0.45))])


def terrain(x, y):
    """A map seen from above: sea, beach, meadow, forest, rock and snow by height."""
    h = fbm(ValueNoise(10), x / 45, y / 45, 6)
    return ramp(h, [(0.0, (0.03, 0.1, 0.35)), (0.4, (0.15, 0.4, 0.65)),
                    (0.43, (0.85, 0.8, 0.55)), (0.46, (0.35, 0.6, 0.2)),
                    (0.62, (0.1, 0.35, 0.12)), (0.7, (0.45, 0.4, 0.33)),
                    (0.76, (0.6, 0.58, 0.55)), (0.8, (0.95, 0.95, 0.97)),
                    (1.0, (1.0, 1.0, 1.0))])


def wall(x, y):
    n = fbm(ValueNoise(11), x / 12, y / 12, 4)
    return ramp(n, [(0.0, (0.8, 0.74, 0.62)), (1.0, (0.9, 0.85, 0.75))])


TEXTURES = {"clouds": clouds, "marble": marble, "wood": wood, "bark": bark,
            "grass": grass, "terrain": terrain, "wall": wall}


# ---------------------------------------------------------------- shapes

def chessboard(x, y):
    return (np.floor(x / 12) + np.floor(y / 12)) % 2 == 0


def stripes(x, y):
    return np.floor((x + y) / (8 * np.sqrt(2))) % 2 == 0


def rings(x, y):
    return np.floor(np.hypot(x, y) / 6) % 2 == 0


def hex_offset(x, y, width=16.0):
    """Offset (..., 2) of each point from its nearest centre on a hexagonal lattice."""
    cell = np.array([width, width * np.sqrt(3)])
    p = np.stack([x, y], axis=-1)
    a = np.mod(p, cell) - cell / 2
    b = np.mod(p - cell / 2, cell) - cell / 2
    return np.where((a * a).sum(-1, keepdims=True) < (b * b).sum(-1, keepdims=True), a, b)


def honeycomb(x, y):
    """Walls of a hexagonal tiling (cells 16 px across)."""
    q = np.abs(hex_offset(x, y))
    hex_dist = np.maximum(q[..., 0] * 0.5 + q[..., 1] * np.sqrt(3) / 2, q[..., 0])
    return hex_dist > 8 - 1.5


def disc(x, y, radius=44):
    return np.hypot(x, y) < radius


def yin_yang(x, y, radius=44):
    """True where the yin-yang is black (inside `disc`)."""
    upper = np.hypot(x, y + radius / 2) < radius / 2
    lower = np.hypot(x, y - radius / 2) < radius / 2
    black = np.where(upper, False, np.where(lower, True, x < 0))
    black = np.where(np.hypot(x, y + radius / 2) < radius / 7, True, black)
    black = np.where(np.hypot(x, y - radius / 2) < radius / 7, False, black)
    return black | (np.hypot(x, y) > radius - 2)


def square(x, y):
    # 68 px side: half of the image is black, so inversion keeps the mean.
    return (np.abs(x) < 34) & (np.abs(y) < 34)


def dots(x, y):
    q = hex_offset(x, y)
    return np.hypot(q[..., 0], q[..., 1]) < 6


def letter_f(x, y):
    stem = (x > -20) & (x < -8) & (np.abs(y) < 30)
    top = (x > -20) & (x < 22) & (y > -30) & (y < -18)
    middle = (x > -20) & (x < 12) & (np.abs(y) < 6)
    return stem | top | middle


def leaf_frame(x, y):
    """Coordinates along (u) and across (v) a leaf lying at 30 degrees."""
    rad = np.deg2rad(30)
    u = np.cos(rad) * x + np.sin(rad) * y + 6
    v = -np.sin(rad) * x + np.cos(rad) * y
    return u, v


def leaf_mask(x, y):
    u, v = leaf_frame(x, y)
    blade = (np.abs(u) < 34) & (np.abs(v) < 16 * (1 - (u / 34) ** 2))
    stem = (u > 30) & (u < 44) & (np.abs(v) < 1.3)
    return blade | stem


def leaf_colour(x, y):
    u, v = leaf_frame(x, y)
    side = np.abs(np.mod(u + 0.9 * np.abs(v), 9) - 4.5) < 0.7
    vein = (np.abs(v) < 0.9) | side
    base = ramp((u + 34) / 78, [(0.0, (0.3, 0.55, 0.1)), (1.0, (0.12, 0.35, 0.06))])
    return np.where(vein[..., None], np.array([0.6, 0.75, 0.3]), base)


MUSHROOM = [
    "....RRRR....",
    "..RRWWRRRR..",
    ".RRWWWWRRRR.",
    ".RRWWRRRWWR.",
    "RRRRRRRWWWWR",
    "RWWRRRRRWWRR",
    "RWWWRRRRRRRR",
    ".RRKSSSSKRR.",
    "...SSKSKS...",
    "...SSSSSS...",
    "...SSSSSS...",
    "....SSSS....",
]
SPRITE_PALETTE = {".": 0, "R": 1, "W": 2, "S": 3, "K": 4}
SPRITE_COLOURS = [(0, 0, 0), (200, 30, 30), (250, 250, 245), (240, 215, 170), (30, 20, 20)]


# ---------------------------------------------------------------- output

def save_png(image, path):
    """Write a PNG atomically (temporary file, then os.replace)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def save(array, out, rel):
    """Write a uint8 array as a PNG at out/rel and return rel."""
    save_png(Image.fromarray(array), out / rel)
    return rel


def hide(image, k):
    """Put HIDDEN[k] under the fully transparent pixels of an RGBA or P image."""
    if image.mode == "RGBA":
        a = np.array(image)
        a[a[..., 3] == 0, :3] = HIDDEN[k]
        return Image.fromarray(a)
    if image.mode == "P":
        image = image.copy()
        palette = image.getpalette()
        palette[:3] = HIDDEN[k]
        image.putpalette(palette)
    return image


def invert(image):
    """Colour inversion; alpha is kept."""
    a = np.array(image)
    if image.mode in ("LA", "RGBA"):
        a[..., :-1] = 255 - a[..., :-1]
    else:
        a = 255 - a
    return Image.fromarray(a)


# ---------------------------------------------------------------- pictures
# Each drawer takes (size, angle) and returns a PIL image.

def texture(field):
    return lambda size, angle: Image.fromarray(render(field, size, angle))


def two_colour(ink, paper, ink_colour):
    return lambda size, angle: Image.fromarray(render_shape(ink, paper, ink_colour, size, angle))


def gray_pattern(ink):
    """Black ink on white paper, stored as a grayscale (mode L) image."""
    return lambda size, angle: Image.fromarray(render_shape(ink, 1, 0, size, angle)[..., 0])


def draw_leaf(size, angle):
    colour, alpha = render_cutout(leaf_mask, leaf_colour, size, angle)
    return Image.fromarray(np.dstack([colour, alpha]))


def draw_yin_yang(size, angle):
    """Mode LA: the symbol on a transparent background that hides black."""
    def paint(x, y):
        return np.repeat(np.where(yin_yang(x, y), 0.0, 1.0)[..., None], 3, axis=-1)
    lum, alpha = render_cutout(disc, paint, size, angle)
    return Image.fromarray(np.dstack([lum[..., 0], alpha]))


def draw_mushroom(size, angle):
    """Mode P pixel art with a transparent palette entry 0, centred."""
    if angle:
        raise ValueError(f"the mushroom sprite is only drawn upright, not at {angle} degrees")
    art = np.array([[SPRITE_PALETTE[c] for c in row] for row in MUSHROOM], np.uint8)
    art = np.kron(art, np.ones((6, 6), np.uint8))
    index = np.zeros((size, size), np.uint8)
    top = (size - art.shape[0]) // 2
    index[top:top + art.shape[0], top:top + art.shape[1]] = art
    image = Image.frombytes("P", (size, size), index.tobytes())
    image.putpalette([v for colour in SPRITE_COLOURS for v in colour])
    image.info["transparency"] = 0
    return image


PICTURES = {
    **{name: texture(field) for name, field in TEXTURES.items()},
    "chessboard": gray_pattern(chessboard),
    "stripes": gray_pattern(stripes),
    "rings": gray_pattern(rings),
    "honeycomb": gray_pattern(honeycomb),
    "square": gray_pattern(square),
    "dots": two_colour(dots, (0.1, 0.15, 0.4), (0.95, 0.55, 0.1)),
    "letter_f": two_colour(letter_f, (0.98, 0.94, 0.75), (0.1, 0.15, 0.45)),
    "leaf": draw_leaf,
    "yin_yang": draw_yin_yang,
    "mushroom": draw_mushroom,
}


# ---------------------------------------------------------------- categories
# Each maker writes its images under `out` and returns its manifest rows.

def make_refs(out):
    for name, rgb in REFS.items():
        save(np.full((SIZE, SIZE, 3), rgb, np.uint8), out, f"ref/{name}.png")
    noise = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    save(noise, out, "ref/noise.png")
    return []


def make_rotate(out):
    rows = []
    for name in ("clouds", "marble", "wood", "bark", "grass", "letter_f", "leaf"):
        image = f"rotate/{name}.png"
        save_png(hide(PICTURES[name](SIZE, 0.0), 0), out / image)
        for k, angle in enumerate(ANGLES, start=1):
            variant = f"rotate/{name}_rot{angle:g}.png"
            save_png(hide(PICTURES[name](SIZE, angle), k), out / variant)
            rows.append(("rotate", image, variant, "closer_than_refs"))
    return rows


def make_translate(out):
    """Windows of one larger canvas, so shifts show new content at the edge."""
    rows = []
    for name in ("clouds", "grass", "bark", "chessboard", "mushroom"):
        canvas = PICTURES[name](SIZE + 2 * MARGIN, 0.0)
        image = f"translate/{name}.png"
        save_png(hide(window(canvas, 0, 0), 0), out / image)
        for k, (dx, dy) in enumerate(SHIFTS, start=1):
            variant = f"translate/{name}{shift_suffix(dx, dy)}.png"
            save_png(hide(window(canvas, dx, dy), k), out / variant)
            rows.append(("translate", image, variant, "closer_than_refs"))
    return rows


def shift_suffix(dx, dy):
    """File-name suffix of a shift: `_dx1`, `_dy3`, `_dx6_dy6`."""
    return (f"_dx{dx}" if dx else "") + (f"_dy{dy}" if dy else "")


def window(canvas, dx, dy):
    """The SIZE x SIZE window moved dx right and dy down from the canvas centre."""
    left, top = MARGIN + dx, MARGIN + dy
    return canvas.crop((left, top, left + SIZE, top + SIZE))


def make_invert(out):
    rows = []
    for name in ("chessboard", "stripes", "rings", "honeycomb", "square", "yin_yang",
                 "dots", "marble"):
        picture = PICTURES[name](SIZE, 0.0)
        image, variant = f"invert/{name}.png", f"invert/{name}_inv.png"
        save_png(picture, out / image)
        save_png(invert(picture), out / variant)
        rows.append(("invert", image, variant, "closer_than_refs"))
    return rows


# name: (stain centre x, y from the image centre, stain colour, direction of the global offset)
STAINS = {
    "clouds": ((-18, 12), (0.85, 0.1, 0.1), (-1, -1, -1)),
    "grass": ((20, -14), (0.9, 0.2, 0.8), (1, 0, -1)),
    "terrain": ((-10, -20), (0.95, 0.1, 0.6), (1, 1, 1)),
    "wood": ((14, 18), (0.1, 0.4, 0.9), (-1, 0, 1)),
    "marble": ((-22, -8), (0.9, 0.55, 0.0), (-1, -1, -1)),
    "bark": ((8, -24), (0.2, 0.8, 0.9), (1, 1, 1)),
    "wall": ((16, 10), (0.6, 0.05, 0.1), (-1, -1, -1)),
}


def make_color_stain(out):
    """An image, a small stain on it, and a global offset with at least the stain's MSE."""
    rows = []
    for seed, (name, (centre, colour, direction)) in enumerate(STAINS.items(), start=20):
        picture = render(TEXTURES[name])
        stained = add_stain(picture, stain_mask(centre, seed), colour)
        shifted = global_offset(picture, direction, mse(picture, stained))
        image = save(picture, out, f"color_stain/{name}.png")
        stain = save(stained, out, f"color_stain/{name}_stain.png")
        variant = save(shifted, out, f"color_stain/{name}_global.png")
        rows.append(("color_stain", image, variant, f"closer_than:{stain}"))
    return rows


def stain_mask(centre, seed):
    """A blot about 10 px across with a ragged edge."""
    def ink(x, y):
        wobble = 0.7 + 0.6 * fbm(ValueNoise(seed), x / 3, y / 3, 2)
        return np.hypot(x - centre[0], y - centre[1]) < 5 * wobble
    return ink


def add_stain(picture, ink, colour, opacity=0.85):
    x, y = sample_grid(SIZE)
    cover = block_mean(ink(x, y).astype(np.float64))[..., None] * opacity
    return to_uint8(picture / 255 * (1 - cover) + np.asarray(colour) * cover)


def mse(a, b):
    return float(np.mean((a / 255 - b / 255) ** 2))


def global_offset(picture, direction, target):
    """Add the smallest multiple of `direction` whose MSE reaches `target` (bisection)."""
    def offset(strength):
        return to_uint8(picture / 255 + strength * np.asarray(direction, float))
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        if mse(picture, offset(middle)) >= target:
            high = middle
        else:
            low = middle
    return offset(high)


# ---------------------------------------------------------------- main

def write_manifest(rows, path):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("category", "image", "variant", "rule"))
    writer.writerows(rows)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="folder to write into (default: the folder of this script)")
    args = parser.parse_args(argv)
    makers = (make_refs, make_rotate, make_translate, make_invert, make_color_stain)
    rows = []
    for maker in tqdm(makers, desc="images", unit="category"):
        rows += maker(args.out)
    write_manifest(rows, args.out / "manifest.csv")
    print(f"wrote {len(rows)} cases to {args.out / 'manifest.csv'}")


if __name__ == "__main__":
    main()
