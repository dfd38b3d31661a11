"""Feature-map pictures: what a loss network sees in one image, and where two images differ.

    python feature_map.py --image rings _inv --network alexnet
    python feature_map.py --path photo.png --network vgg16 --max-channels 32
    python feature_map.py --image rings _inv --network resnet50 --layers 2 4 5 7
    python feature_map.py --image rotate/clouds. --compare images/rotate/clouds_rot90.png --method sort

`--image` picks the one file under `--image-dir` whose path (relative to it) contains
every given substring, ignoring case; `--path` names a file directly.

An image's pictures are named after its path under `--image-dir` without the extension
(`<name>`: `rotate/clouds`, so that `translate/clouds.png` does not overwrite them), or
after its file name when it lies elsewhere. For each extraction point k of the network
(its default points or `--layers`, counted as experiment.py counts them: `--layers 1 4` gives
`point1` and `point4`) `OUT/<name>_<net>_point<k>.png` shows a thumbnail of the image, then
the first `--max-channels` channels as a grid: the raw activations, and apart from them the
channel-normalised ones (divided by the L2 norm over channels at each position). Each
channel map is stretched to [0, 1] on its own for display; `--shared-scale` draws every
value of both grids on one colour scale instead, so that what channel norm changes shows.

With `--compare PATH`, `OUT/<name>_vs_<name2>_<net>_<method>_<norm|raw>.png` (`/` in
`<name2>` written as `-`) shows both
images and the per-pixel distance map of `--method` overlaid on the first
(`DistanceMetric.distance_map`): for each layer and each position of the method's view,
the sum over channels of the squared difference, upsampled (bilinear) to the image size,
then summed over layers (as LPIPS's spatial output), so the map's mean is close to the
metric's value. What a position is
depends on the method, and the map's title says it: `spatial` compares the same place in
both images (the map is drawn over the first image); `sort` compares the k-th smallest
value of each channel, laid out row by row over the layer's grid, so its map tells where in
that order the images differ, not where in the image (drawn on its own);
`mean` has one position per layer and adds a constant.

Both images are loaded and checked, and `--out` checked writable, before anything is
written. The paths written are printed; `--show` opens them in the system's image viewer
(xdg-open, eog, feh, display or xv, found on PATH; macOS's open), or says on stderr that there
is none.
"""
import argparse
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from cli import (Backbones, UserError, add_weights_flags, build_metric, check_writable, device_arg, network_name,
                 positive_int, preflight, run_main, write_atomic)
from image_io import figure_png, image_files, load_image
from loss_networks import check_layers, point_names
from metric import METHODS, channel_normalize


def find_image(image_dir, substrings):
    """The one image under `image_dir` whose relative path contains every substring (case-insensitive)."""
    if not os.path.isdir(image_dir):
        raise UserError(f"no image folder {image_dir}: pass --image-dir FOLDER, or --path FILE")
    candidates = image_files(image_dir)
    matches = [p for p in candidates if all(s.lower() in p.lower() for s in substrings)]
    if len(matches) == 1:
        return os.path.join(image_dir, matches[0])
    shown = matches or candidates
    raise UserError(
        f"--image {' '.join(substrings)} matches {len(matches)} of the {len(candidates)} images "
        f"in {image_dir}; "
        f"give substrings that match exactly one, or --path FILE. "
        f"{'Matches' if matches else 'Images'}:\n  " + "\n  ".join(shown))


def picture_name(path, image_dir):
    """The name an image's pictures are called by: its path under `image_dir` without the extension
    ('rotate/clouds'), or its file name without the extension when it is not under `image_dir`."""
    try:
        name = Path(path).resolve().relative_to(Path(image_dir).resolve())
    except ValueError:
        name = Path(Path(path).name)
    return name.with_suffix("").as_posix()


def channel_mosaic(f, max_channels, stretch=True):
    """The first `max_channels` maps of `f` (C, H, W), each stretched to [0, 1] (`stretch`; else as they are),
    tiled with NaN gaps."""
    f = f[:max_channels].float().cpu()
    c, h, w = f.shape
    if stretch:
        lo, hi = f.amin((1, 2), keepdim=True), f.amax((1, 2), keepdim=True)
        f = (f - lo) / (hi - lo).clamp_min(1e-12)
    f = f.numpy()
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    grid = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i in range(c):
        r, q = divmod(i, cols)
        grid[r * (h + 1): r * (h + 1) + h, q * (w + 1): q * (w + 1) + w] = f[i]
    return grid


def thumbnail(ax, x, name):
    """The input image (1, 3, H, W) in `ax`, titled `name`."""
    ax.imshow(x[0].permute(1, 2, 0).cpu().numpy())
    ax.set_title(name, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def layer_figure(raw, x, name, title, max_channels, shared_scale=False):
    """PNG bytes: the input image, then the channels of one activation (C, H, W), raw and channel-normalised,
    in two framed grids apart; each channel stretched to its own [min, max], or with `shared_scale` all
    values of both grids on one colour scale."""
    cmap = colormaps["viridis"].with_extremes(bad="white")
    grids = [channel_mosaic(f, max_channels, stretch=not shared_scale)
             for f in (raw, channel_normalize(raw[None])[0])]
    low, high = (0, 1) if not shared_scale else (min(np.nanmin(g) for g in grids), max(np.nanmax(g) for g in grids))
    fig = Figure(figsize=(13, 6.2), layout="constrained")
    fig.get_layout_engine().set(wspace=0.08)
    axes = fig.subplots(1, 3, width_ratios=(1, 3, 3))
    thumbnail(axes[0], x, f"input\n{name}")
    for ax, label, grid in zip(axes[1:], ("raw", "channel-normalised (÷ L2 norm over channels)"), grids):
        image = ax.imshow(grid, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
    scale = "one scale for both grids" if shared_scale else "each channel stretched\nto its own [min, max]"
    fig.colorbar(image, ax=axes[1:], shrink=0.6, label=f"activation, {scale}")
    fig.suptitle(title)
    return figure_png(fig, dpi=150)


def write_feature_maps(metric, x, name, out, max_channels, shared_scale=False):
    """One PNG per extraction point of `metric` for image `x` (1, 3, H, W), `OUT/<name>_<net>_point<k>.png`
    for point k; returns the paths."""
    with torch.inference_mode():
        feats = metric.features(x)
    net, paths = metric.net.net, []
    for index, f in zip(metric.net.layers, feats):
        c, h, w = f.shape[1:]
        shown = f", first {max_channels} shown" if c > max_channels else ""
        title = f"{name}: {net} point {index} ({point_names(net)[index]}), {c} channels of {h}x{w}{shown}"
        paths.append(os.path.join(out, f"{name}_{net}_point{index}.png"))
        write_atomic(paths[-1], layer_figure(f[0], x, name, title, max_channels, shared_scale))
    return paths


MAP_TITLES = {  # what a position of each method's distance map is (metric.DistanceMetric.distance_map)
    "spatial": "distance per pixel (the same place in both images)",
    "sort": "distance per rank, not per pixel: row by row over\neach layer's grid, position k compares the k-th\n"
            "smallest value of each channel (top left: the smallest)",
    "mean": "distance of the channel means: one value per layer,\nthe same at every position (no place in the image)",
    "spatial+sort": "spatial part per pixel + sort part per rank\n(the ranks are not places in the image)",
    "spatial+mean": "distance per pixel + the channel means' distance\n(a constant added everywhere)",
}
ON_THE_IMAGE = ("spatial", "spatial+mean")  # maps whose positions are places in the image


def compare_figure(x0, x1, dmap, names, title, method):
    """PNG bytes: both images, then the distance map of `method`, overlaid on the first image only where its
    positions are places in the image."""
    fig = Figure(figsize=(13, 4.9), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, x, name in zip(axes, (x0, x1), names):
        ax.imshow(x[0].permute(1, 2, 0).cpu().numpy())
        ax.set_title(name)
    if method in ON_THE_IMAGE:
        axes[2].imshow(x0[0].mean(0).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    # from 0: a distance is never negative, and mean's constant map stays one colour despite rounding
    overlay = axes[2].imshow(dmap.cpu().numpy(), cmap="inferno", alpha=0.6 if method in ON_THE_IMAGE else 1, vmin=0)
    axes[2].set_title(MAP_TITLES[method], fontsize=9)
    fig.colorbar(overlay, ax=axes[2], label="distance (summed over layers)")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title)
    return figure_png(fig, dpi=150)


def write_distance_map(metric, x0, x1, names, out, method, channel_norm, image_dir):
    """The comparison PNG of images x0 and x1 (1, 3, H, W) read from the files `names`; returns its path."""
    with torch.inference_mode():
        dmap = metric.distance_map(x0, x1, method, channel_norm)[0, 0]
        value = metric.distance(metric.features(x0), metric.features(x1), method, channel_norm).item()
    norm = "norm" if channel_norm else "raw"
    title = (f"{metric.net.net}, {method}, channel norm {'on' if channel_norm else 'off'}: "
             f"distance {value:.4g} (map mean {dmap.mean().item():.4g})")
    first, second = (picture_name(name, image_dir) for name in names)
    path = os.path.join(out, f"{first}_vs_{second.replace('/', '-')}_{metric.net.net}_{method}_{norm}.png")
    write_atomic(path, compare_figure(x0, x1, dmap, names, title, method))
    return path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--image", nargs="+", metavar="SUBSTRING",
                       help="substrings of the image's path under --image-dir (all must match, one file)")
    which.add_argument("--path", help="the image file")
    parser.add_argument("--image-dir", default="images", help="folder --image searches (default: images)")
    parser.add_argument("--network", type=network_name, default="alex",
                        help="alexnet, squeezenet or vgg16 (or alex, squeeze, vgg), or any other network of the "
                             "torchvision registry, such as resnet50 (python experiment.py --help lists them); "
                             "default: alexnet")
    parser.add_argument("--layers", nargs="+", type=int, metavar="I",
                        help="extraction points, counted as in experiment.py --layers (default: the network's)")
    parser.add_argument("--out", default=os.path.join("logs", "feature_maps"),
                        help="output folder (default: logs/feature_maps)")
    parser.add_argument("--max-channels", type=positive_int, default=64,
                        help="channels shown per layer (default: 64)")
    parser.add_argument("--shared-scale", action="store_true",
                        help="draw raw and channel-normalised activations on one colour scale (default: each "
                             "channel stretched to its own range, which hides what channel norm changes)")
    parser.add_argument("--size", type=positive_int, default=None, help="load the images at SIZE x SIZE")
    parser.add_argument("--compare", metavar="PATH", help="also draw the per-pixel distance to this image")
    parser.add_argument("--method", choices=METHODS, default="spatial",
                        help="method of --compare (default: spatial)")
    parser.add_argument("--channel-norm", choices=("on", "off"), default="on",
                        help="channel normalisation for --compare (default: on)")
    parser.add_argument("--device", type=device_arg, default="auto",
                        help="auto (cuda if available), cpu, cuda, ...")
    add_weights_flags(parser)
    parser.add_argument("--show", action="store_true",
                        help="open the pictures in the image viewer (xdg-open, eog, feh, display or xv on PATH; "
                             "macOS: open)")
    args = parser.parse_args(argv)
    try:
        check_layers(args.network, args.layers)
    except ValueError as err:
        parser.error(str(err))
    return args


def draw(args):
    """Write the pictures the arguments ask for, once both images are loaded; returns their paths."""
    check_writable(args.out)
    backbones = Backbones.from_flags(args)
    preflight([args.network], backbones)
    path = args.path if args.path is not None else find_image(args.image_dir, args.image)
    x = load_image(path, args.size)[None].to(args.device)
    if args.compare is not None:
        x1 = load_image(args.compare, args.size)[None].to(args.device)
        if x1.shape != x.shape:
            raise UserError(f"{path} is {tuple(x.shape[2:])} pixels but {args.compare} is "
                            f"{tuple(x1.shape[2:])}: pass --size N to load both at N x N")
    metric = build_metric(args.network, backbones, args.device, args.layers)
    paths = write_feature_maps(metric, x, picture_name(path, args.image_dir), args.out, args.max_channels,
                               args.shared_scale)
    if args.compare is not None:
        paths.append(write_distance_map(metric, x, x1, (path, args.compare), args.out, args.method,
                                        args.channel_norm == "on", args.image_dir))
    return paths


VIEWERS = ("xdg-open", "eog", "feh", "display", "xv")  # looked for on PATH (Linux, BSD); macOS has open


def viewer_command():
    """The command that opens an image file in the system's viewer, or None when there is none."""
    if sys.platform == "darwin":
        return "open"
    return next((name for name in VIEWERS if shutil.which(name)), None)


def show(paths, viewer):
    """Print the paths written; with `viewer`, open each in the system's image viewer (without waiting for it),
    or say on stderr, in one line, that there is none and where the pictures are."""
    for path in paths:
        print(path)
    if not viewer:
        return
    if sys.platform == "win32":
        for path in paths:
            os.startfile(path)
        return
    command = viewer_command()
    if command is None:
        folder = os.path.commonpath([os.path.dirname(os.path.abspath(path)) for path in paths])
        print(f"feature_map.py: --show found no image viewer (looked for {', '.join(VIEWERS)} on PATH); the "
              f"pictures are in {folder}", file=sys.stderr)
        return
    for path in paths:
        subprocess.Popen([command, path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def main(argv=None):
    args = parse_args(argv)
    return run_main("feature_map.py", lambda: show(draw(args), args.show))


if __name__ == "__main__":
    sys.exit(main())
