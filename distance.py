"""Perceptual distances between two image files, two folders, or all pairs of one folder.

    python distance.py A.png B.png                       # the distance alone, as the last line of stdout
    python distance.py A.png B.png --net vgg --method spatial+sort
    python distance.py A.png B.png --variant lin --lpips-weights official --normalize lpips   # LPIPS v0.1
    python distance.py A.png B.png --variant lin --lpips-weights official-v0.0 --normalize signed   # LPIPS v0.0
    python distance.py A.png B.png --all-configs         # the ten baseline configurations, one pass
    python distance.py DIR0 DIR1 --out pairs.csv         # files paired by relative path, recursively
    python distance.py DIR0 DIR1 --net alex l2 ssim --layer-columns   # beside the pixel metrics, per layer
    python distance.py --all-pairs DIR --out matrix.csv --plot

Two folders: image files are paired by their path relative to each folder, in
subfolders too; a file in only one folder is listed on stderr and skipped (an error with
--strict). The CSV has the columns path0,path1,distance (paths relative to their
folders) and the configuration net,layers,variant,method,channel_norm,normalize: one
row per pair and configuration (each network of --net with each method and channel
norm; l2 and ssim with `-` in the columns that do not apply to them, normalize lab or
rgb, as in experiment.py's results). --layer-columns adds d_<point>, each extraction
point's distance (DistanceMetric.layer_distances), `-` where the row's network has no
such point. The rows go to --out, written to a temporary file that is renamed only once
complete (an interrupted run leaves no output file), or to stdout. The count and mean ±
standard deviation are printed at the end (to stderr when the rows go to stdout). The CSV is
UTF-8; a file name that is not valid UTF-8 is written as its bytes (Python reads it back with
errors="surrogateescape", and os.fsencode gives the name again).

Two files: the distance alone when one configuration is asked for, else a table (also
with --layer-columns); --out writes the CSV row(s) as well.

All pairs: one row per image and configuration: path, the distance to each image of
the folder (columns in the order of the rows), then the configuration columns. --plot
draws the matrices as a PNG heat map (matrix_plot.py): a panel per configuration, titled with
it and its weights, the diagonal blank, values in the cells up to 12 images, file names as
ticks up to 30 and beyond that indices with a key of file names beside the matrices.

Images load as image_io.load_image reads them: RGB, transparency composited over white,
grayscale replicated. The two images of a pair must have one size, or --size N resizes
every image to N x N. Files stream in batches (image_stream.py): the next batch is
decoded (by a thread, or by --num-workers processes) while the networks work on this
one, and each image goes through each backbone once for all configurations. Without
--batch-size, each batch is sized by its own images (their headers): at most 204,800
pixels per image of a pair (50 pairs of 64x64 images; --all-pairs: twice that, in single
images), at least one pair, so that peak memory stays bounded whatever the first file is.
"""
import argparse
import contextlib
import csv
import math
import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from cli import (Backbones, add_config_flags, add_weights_flags, atomic_open, build_metrics, device_arg, positive_int,
                 preflight, requested_configs, run_main, write_atomic)
from distance_paths import DistanceError, check_outputs, folder_images, paired_names, path_kind
from image_stream import MAX_BATCH, PIXELS_PER_IMAGE_BATCH, batch_for, image_batches, size_mismatch
from loss_networks import canonical_net, layers_text
from metric import (ALL_CONFIGS, NOT_APPLICABLE, PIXEL_CONFIG, PIXEL_METRICS, batch_distances, compare_views,
                    metrics_views)

PAIR_COLUMNS = ("path0", "path1", "distance")
CONFIG_COLUMNS = ("net", "layers", "variant", "method", "channel_norm", "normalize")
VARIANTS = ("baseline", "lin")


# ---------------------------------------------------------------- metrics and rows


def load_metrics(args, device):
    """{net: {config: metric}} for the flags, on `device`: the configurations of each network share its one
    backbone; a pixel metric (l2, ssim) has its one configuration."""
    backbones = Backbones.from_flags(args)
    preflight(args.net, backbones, args.lpips_weights)
    nets = {}
    for net in args.net:
        configs = [PIXEL_CONFIG] if net in PIXEL_METRICS else args.configs
        nets[net] = build_metrics(net, args.variant, configs, args.normalize, args.lpips_weights, backbones,
                                  colorspace=args.colorspace, layers=args.layers)
        for metric in dict.fromkeys(nets[net].values()):
            metric.to(device).eval()
    return nets


def row_keys(nets):
    """Every (net, method, channel_norm) the rows are computed for, in order."""
    return [(net, *config) for net, metrics in nets.items() for config in metrics]


def config_columns(nets, variant):
    """{(net, method, channel_norm): the CSV cells net, layers, variant, method, channel_norm, normalize};
    a pixel metric has `-` where a column does not apply (as results.csv)."""
    columns = {}
    for net, metrics in nets.items():
        for (method, norm), metric in metrics.items():
            if net in PIXEL_METRICS:
                columns[net, method, norm] = [net, *[NOT_APPLICABLE] * 4, metric.normalize]
            else:
                columns[net, method, norm] = [net, layers_text(metric.net.layers), variant, method,
                                              str(norm).lower(), metric.normalize]
    return columns


def network_points(nets):
    """{net: its extraction points} for the networks (not the pixel metrics)."""
    return {net: next(iter(metrics.values())).net.layers for net, metrics in nets.items() if net not in PIXEL_METRICS}


def point_columns(points):
    """The --layer-columns header, d_<point> for every point of any network, in ascending order."""
    return [f"d_{point}" for point in sorted({p for layers in points.values() for p in layers})]


def layer_cells(points, net, layers):
    """A row's --layer-columns cells: its network's distance at each point, `-` at points it lacks."""
    if points is None:
        return []
    mine = dict(zip(points.get(net, ()), layers or ()))
    return [number(mine[p]) if p in mine else NOT_APPLICABLE
            for p in sorted({p for layers in points.values() for p in layers})]


def number(value):
    """A distance as text: 9 significant digits give a float32 back exactly."""
    return f"{value:.9g}"


class RunningStats:
    """Count, mean and (sample) standard deviation of a stream of numbers in constant memory (Welford)."""

    def __init__(self):
        self.n, self.mean, self._squares = 0, 0.0, 0.0

    def add(self, value):
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self._squares += delta * (value - self.mean)

    @property
    def std(self):
        return math.sqrt(self._squares / (self.n - 1)) if self.n > 1 else math.nan


def aligned(rows):
    """Rows of cells as lines of left-aligned columns."""
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def print_summary(stats, what, file):
    """'N pairs: mean ± std' for one configuration, a line per configuration for several.

    `stats`: {(net, method, channel_norm): (count, mean, standard deviation)}."""
    def text(mean, std):
        return number(mean) + (f" ± {number(std)}" if not math.isnan(std) else "")

    count = next(iter(stats.values()))[0]
    if len(stats) == 1:
        print(f"{count} {what}: distance {text(*next(iter(stats.values()))[1:])} (mean ± standard deviation)",
              file=file)
        return
    print(f"{count} {what}, distance mean ± standard deviation:", file=file)
    rows = [[net, method, str(norm).lower(), text(mean, std)] for (net, method, norm), (_, mean, std) in stats.items()]
    for line in aligned(rows):
        print(f"  {line}", file=file)


@contextlib.contextmanager
def output(path):
    """A text file for CSV rows: `path`, written atomically, or stdout when `path` is None. UTF-8, except that a
    file name that is not (os.fsdecode's surrogates) is written as its own bytes, as stdout and `ls` show it."""
    if path is None:
        yield sys.stdout
        return
    with atomic_open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as file:
        yield file


# ---------------------------------------------------------------- pairs


def batch_values(nets, x0, x1):
    """{(net, method, channel_norm): (distances [N], each extraction point's distances [N][L] or None for a
    pixel metric)} of one batch of pairs; a distance is the sum of its points' (`compare_layers`)."""
    found = {}
    for net, metrics in nets.items():
        by_layer = net not in PIXEL_METRICS
        with torch.inference_mode():
            values = batch_distances(metrics, {"0": x0, "1": x1}, [("0", "1")], by_layer)
        for (method, norm), (d,) in values.items():
            layers = d.float().tolist() if by_layer else None
            found[net, method, norm] = ((d.sum(1) if by_layer else d).float().tolist(), layers)
    return found


def pair_distances(nets, pairs, size, batch_size, num_workers, device):
    """Yield (index, {key: (distance, point distances or None)}, None), or (index, None, message) for a pair
    that cannot be compared, for each (path0, path1) of `pairs`, in order, batch by batch."""
    for groups, errors in image_batches(pairs, size, batch_size, num_workers, device):
        results = {index: (None, message) for index, message in errors}
        for indices, (x0, x1) in groups:
            values = batch_values(nets, x0.to(device), x1.to(device))
            results.update((index, ({key: (d[k], layers and layers[k]) for key, (d, layers) in values.items()}, None))
                           for k, index in enumerate(indices))
        for index in sorted(results):
            yield (index, *results[index])


def skip_or_raise(message, skip_bad):
    """With --skip-bad, list a pair (or image) that cannot be compared on stderr; else it is the error."""
    if not skip_bad:
        raise DistanceError(f"{message}; or --skip-bad to list and skip what cannot be compared")
    tqdm.write(f"skipped: {message}", file=sys.stderr)


class PairRows:
    """The CSV layout of pairs: header and one row per pair and configuration (--layer-columns: d_<point>)."""

    def __init__(self, nets, args):
        self.columns = config_columns(nets, args.variant)
        self.points = network_points(nets) if args.layer_columns else None

    def header(self):
        return [*PAIR_COLUMNS, *CONFIG_COLUMNS, *(point_columns(self.points) if self.points is not None else [])]

    def rows(self, names, values):
        return [[*names, number(value), *self.columns[key], *layer_cells(self.points, key[0], layers)]
                for key, (value, layers) in values.items()]


def compare_pairs(args, nets, pairs, names, device, file):
    """Distances of `pairs` (path0, path1), their CSV rows (labelled `names`) written to `file` as each batch
    finishes; returns ({key: RunningStats}, number of pairs skipped)."""
    layout = PairRows(nets, args)
    stats, skipped = {key: RunningStats() for key in row_keys(nets)}, 0
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow(layout.header())
    with tqdm(total=len(pairs), unit="pair") as bar:
        for index, values, error in pair_distances(nets, pairs, args.size, args.batch_size, args.num_workers,
                                                   device):
            bar.update()
            if error is not None:
                skip_or_raise(error, args.skip_bad)
                skipped += 1
                continue
            writer.writerows(layout.rows(names[index], values))
            for key, (value, _) in values.items():
                stats[key].add(value)
    if not next(iter(stats.values())).n:
        raise DistanceError(f"none of the {len(pairs)} pairs could be compared")
    return stats, skipped


def two_files(args, nets, path0, path1, device):
    """Print the distance (one configuration: the number alone) or a table (several, or --layer-columns);
    the CSV too with --out."""
    ((_, values, error),) = pair_distances(nets, [(path0, path1)], args.size, 1, 0, device)
    if error is not None:
        raise DistanceError(error)
    layout = PairRows(nets, args)
    if args.out:
        with output(args.out) as file:
            csv.writer(file, lineterminator="\n").writerows([layout.header(), *layout.rows((path0, path1), values)])
    if len(values) == 1 and not args.layer_columns:
        print(number(next(iter(values.values()))[0]))
        return
    points = point_columns(layout.points) if layout.points is not None else []
    table = [["net", "method", "channel_norm", "distance", *points]]
    for row in layout.rows((path0, path1), values):
        table.append([row[3], row[6], row[7], row[2], *row[len(PAIR_COLUMNS) + len(CONFIG_COLUMNS):]])
    print("\n".join(aligned(table)))


def two_folders(args, nets, dir0, dir1, names, device):
    """CSV rows for the files `names` (relative paths) of both folders, then the summary."""
    pairs = [(os.path.join(dir0, name), os.path.join(dir1, name)) for name in names]
    with output(args.out) as file:
        stats, skipped = compare_pairs(args, nets, pairs, [(name, name) for name in names], device, file)
    report = sys.stdout if args.out else sys.stderr
    stats = {key: (stat.n, stat.mean, stat.std) for key, stat in stats.items()}
    print_summary(stats, "pairs" + (f" ({skipped} skipped)" if skipped else ""), report)
    if args.out:
        print(f"wrote {args.out}", file=report)


# ---------------------------------------------------------------- all pairs


def image_views(nets, x):
    """{net: what its comparisons need of images `x`}: a network's views (one backbone pass), a pixel
    metric's images themselves ({"images": [x]}), as {key: [tensors]} alike."""
    with torch.inference_mode():
        return {net: {"images": [x]} if net in PIXEL_METRICS else metrics_views(metrics, x)
                for net, metrics in nets.items()}


def folder_views(nets, paths, args, device):
    """(indices of the images kept, {net: their `image_views` stacked}, their pixels each), each image decoded
    once and through each backbone once, in batches of twice --batch-size images (or twice the pixel budget)."""
    store, kept, first = None, [], None
    batches = image_batches([(path,) for path in paths], args.size, args.batch_size and 2 * args.batch_size,
                            args.num_workers, device, scale=2)
    with tqdm(total=len(paths), unit="image", desc="features") as bar:
        for groups, errors in batches:
            bar.update(len(errors) + sum(len(indices) for indices, _ in groups))
            for _, message in errors:
                skip_or_raise(message, args.skip_bad)
            for indices, (x,) in groups:
                first = first or (paths[indices[0]], x.shape)
                if x.shape[1:] != first[1][1:]:  # the first image read sets the size
                    for index in indices:
                        skip_or_raise(size_mismatch([first[0], paths[index]], [first[1], x.shape]), args.skip_bad)
                    continue
                views = image_views(nets, x.to(device))
                if store is None:  # one allocation for the whole folder: memory is known from the first batch
                    store = {net: {key: [t.new_empty((len(paths), *t.shape[1:])) for t in layers]
                                   for key, layers in net_views.items()} for net, net_views in views.items()}
                for net, net_views in views.items():
                    for key, layers in net_views.items():
                        for full, t in zip(store[net][key], layers):
                            full[len(kept): len(kept) + len(t)] = t
                kept += indices
    if len(kept) < 2:
        raise DistanceError(f"--all-pairs needs at least two readable images, found {len(kept)}")
    return kept, {net: {key: [t[:len(kept)] for t in layers] for key, layers in net_views.items()}
                  for net, net_views in store.items()}, first[1][-2] * first[1][-1]


def chunk_distances(nets, stores, i, j):
    """{(net, method, channel_norm): distances (len(i),)} between the stored images i and j. A pixel metric
    computes its features of both anew (they are not stored per image)."""
    found = {}
    for net, metrics in nets.items():
        pair = {name: {key: [t[index.to(t.device)] for t in layers] for key, layers in stores[net].items()}
                for name, index in (("0", i), ("1", j))}
        with torch.inference_mode():
            if net in PIXEL_METRICS:
                values = batch_distances(metrics, {name: views["images"][0] for name, views in pair.items()},
                                         [("0", "1")])
            else:
                values = compare_views(metrics, pair, [("0", "1")])
        found.update(((net, *config), d.float().cpu()) for config, (d,) in values.items())
    return found


def distance_matrices(nets, stores, n, chunk):
    """{(net, method, channel_norm): (n, n) symmetric matrix with a zero diagonal}, each pair compared once."""
    rows, cols = torch.triu_indices(n, n, offset=1, dtype=torch.int32)
    matrices = {key: torch.zeros(n, n) for key in row_keys(nets)}
    for start in tqdm(range(0, len(rows), chunk), unit="batch", desc="pairs"):
        i, j = rows[start: start + chunk].long(), cols[start: start + chunk].long()
        for key, d in chunk_distances(nets, stores, i, j).items():
            matrices[key][i, j] = matrices[key][j, i] = d
    return matrices


def matrix_weights(args, nets):
    """{net: the weights it ran with, as experiment.py's results name them} (`-` for the pixel metrics)."""
    from results import backbones_identity  # only --plot needs it
    backbones = Backbones.from_flags(args)
    return {net: NOT_APPLICABLE if net in PIXEL_METRICS else
            backbones_identity(net, backbones, args.lpips_weights) for net in nets}


def all_pairs(args, nets, folder, names, device):
    """The distance matrix of the images `names` of `folder` as CSV (and a PNG with --plot), then the summary."""
    paths = [os.path.join(folder, name) for name in names]
    kept, stores, pixels = folder_views(nets, paths, args, device)
    names = [names[index] for index in kept]
    matrices = distance_matrices(nets, stores, len(kept), args.batch_size or batch_for(pixels))
    columns = config_columns(nets, args.variant)
    with output(args.out) as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["path", *names, *CONFIG_COLUMNS])
        for key, matrix in matrices.items():
            writer.writerows([name, *map(number, row), *columns[key]] for name, row in zip(names, matrix.tolist()))
    if args.plot is not None:
        from matrix_plot import plot_matrices  # only --plot needs matplotlib
        write_atomic(args.plot, plot_matrices(matrices, names, columns, matrix_weights(args, nets)))
    report = sys.stdout if args.out else sys.stderr
    upper = torch.ones(len(names), len(names), dtype=torch.bool).triu(1)
    values = {key: matrix[upper].double() for key, matrix in matrices.items()}
    stats = {key: (len(v), v.mean().item(), v.std().item() if len(v) > 1 else math.nan) for key, v in values.items()}
    print_summary(stats, f"pairs of {len(names)} images", report)
    for path in (args.out, args.plot):
        if path:
            print(f"wrote {path}", file=report)


# ---------------------------------------------------------------- command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("paths", nargs="*", metavar="PATH", help="two image files, or two folders")
    parser.add_argument("--all-pairs", metavar="DIR",
                        help="the distance matrix of every pair of images in DIR. Memory: every image's "
                             "activations stay in memory, about 0.13 MB per 64x64 image for alex and 2 MB for "
                             "vgg, growing with the pixels, once per view (spatial+sort keeps two, "
                             "--all-configs four), plus the n x n matrix per configuration; l2 and ssim keep the "
                             "images and compute their features anew for each pair")
    parser.add_argument("--out", metavar="FILE", help="CSV file to write (default: the rows go to stdout)")
    parser.add_argument("--plot", nargs="?", const="", metavar="PNG",
                        help="with --all-pairs: also draw the matrix as a PNG heat map (default file: --out with "
                             "the suffix .png)")
    parser.add_argument("--layer-columns", action="store_true",
                        help="two files or two folders: add the columns d_<point>, each extraction point's "
                             "distance (they sum to distance; spatial+sort and spatial+mean: both parts at that "
                             "point), '-' at points a row's network lacks and for l2 and ssim")
    add_metric_flags(parser.add_argument_group("metric", "as experiment.py's flags"))
    add_weights_flags(parser)
    add_file_flags(parser.add_argument_group("files"))
    args = parser.parse_args(argv)
    try:
        check_args(args)
    except ValueError as err:
        parser.error(str(err))
    return args


def add_metric_flags(config):
    """--net, --layers, the configuration flags (`cli.add_config_flags`: --method, --channel-norm, --variant,
    --lpips-weights, --normalize, --colorspace), --all-configs, --device."""
    config.add_argument("--net", nargs="+", default=["alex"], metavar="NET",
                        help="loss networks, names experiment.py's --net takes (alex, squeeze, vgg, resnet50, ...), "
                             "and the pixel metrics l2 and ssim (LPIPS's L2 and DSSIM), alone or beside networks; "
                             "the net column tells their rows apart (default: alex)")
    config.add_argument("--layers", nargs="+", type=int, metavar="N",
                        help="extraction points of the networks (default: the LPIPS layers)")
    add_config_flags(config, VARIANTS, defaults=False)
    config.add_argument("--all-configs", action="store_true",
                        help="the ten baseline configurations (--method all --channel-norm both) from one "
                             "backbone pass per image")
    config.add_argument("--device", type=device_arg, default="auto",
                        help="auto (cuda when available, else cpu), cpu, cuda, cuda:N (default: %(default)s)")


def add_file_flags(files):
    """--size, --strict, --skip-bad, --batch-size, --num-workers."""
    files.add_argument("--size", type=positive_int, metavar="N", help="resize every image to N x N (default: as "
                                                                      "stored; the two images of a pair must then "
                                                                      "have one size)")
    files.add_argument("--strict", action="store_true", help="a file present in only one folder is an error")
    files.add_argument("--skip-bad", action="store_true",
                       help="list and skip pairs (or images) that cannot be read or differ in size, instead of "
                            "stopping at the first")
    files.add_argument("--batch-size", type=positive_int, metavar="N",
                       help=f"pairs per backbone pass, --all-pairs: twice as many images (default: each batch "
                            f"sized by its own images, from their headers, to at most {PIXELS_PER_IMAGE_BATCH:,} "
                            f"pixels per image of a pair, {MAX_BATCH} pairs of 64x64 images, fewer of larger "
                            f"ones, at least one pair: memory stays flat)")
    files.add_argument("--num-workers", type=int, metavar="N",
                       help="image-decoding processes (default: 0 on the CPU or for short jobs, where a thread "
                            "decodes the next batch while this one is computed; else up to 4)")


def check_args(args):
    """Raise ValueError, saying the fix, for flags that cannot run together; fill in args.configs."""
    if args.all_pairs is not None and args.paths:
        raise ValueError("--all-pairs DIR compares the images of one folder: drop the other paths")
    if args.all_pairs is None and len(args.paths) != 2:
        raise ValueError(f"give two image files or two folders (or --all-pairs DIR), got {len(args.paths)} paths")
    if args.plot is not None and args.all_pairs is None:
        raise ValueError("--plot draws the matrix of --all-pairs DIR")
    if args.plot == "":
        if args.out is None:
            raise ValueError("--plot needs a file name (--plot matrix.png) or --out")
        if Path(args.out).suffix.lower() == ".png":
            raise ValueError(f"--plot without a file name writes --out's name with the suffix .png, which is --out "
                             f"{args.out} itself: name the CSV (--out {Path(args.out).with_suffix('.csv')}) or "
                             f"the picture (--plot FILE.png)")
        args.plot = str(Path(args.out).with_suffix(".png"))
    if args.layer_columns and args.all_pairs is not None:
        raise ValueError("--layer-columns adds columns to the rows of pairs, which --all-pairs' matrix has no "
                         "place for: drop it, or run --all-pairs once per point with --layers P")
    if args.all_configs and (args.method or args.channel_norm):
        raise ValueError("--all-configs is --method all --channel-norm both: drop --method and --channel-norm")
    if args.all_configs and args.variant != "baseline":
        raise ValueError("--all-configs compares the ten baseline configurations: drop --variant lin")
    if args.variant == "baseline" and args.lpips_weights:
        raise ValueError("--variant baseline has no linear layers: drop --lpips-weights or use --variant lin")
    if args.variant == "lin" and not args.lpips_weights:
        raise ValueError("--variant lin needs linear weights: --lpips-weights official (LPIPS v0.1), official-v0.0 "
                         "(LPIPS v0.0) or PATH (an LPIPS-format file)")
    if args.num_workers is not None and args.num_workers < 0:
        raise ValueError(f"--num-workers must be at least 0, got {args.num_workers}")
    args.net = list(dict.fromkeys(net if net in PIXEL_METRICS else canonical_net(net) for net in args.net))
    args.configs = (ALL_CONFIGS if args.all_configs
                    else requested_configs(args.method or ["spatial"], args.channel_norm or "on"))


def run(args):
    """Check the paths, then load the metrics and compare: a bad path fails before a network loads."""
    device = args.device
    if args.all_pairs is not None:
        if path_kind(args.all_pairs) != "folder":
            raise DistanceError(f"--all-pairs takes a folder, {args.all_pairs} is a file")
        names = folder_images(args.all_pairs)
        check_outputs(args.out, args.plot, [os.path.join(args.all_pairs, name) for name in names])
        all_pairs(args, load_metrics(args, device), args.all_pairs, names, device)
        return
    kinds = [path_kind(path) for path in args.paths]
    if kinds == ["file", "file"]:
        check_outputs(args.out, None, args.paths)
        two_files(args, load_metrics(args, device), *args.paths, device)
    elif kinds == ["folder", "folder"]:
        names = paired_names(*args.paths, args.strict)
        check_outputs(args.out, None, [os.path.join(folder, name) for folder in args.paths for name in names])
        two_folders(args, load_metrics(args, device), *args.paths, names, device)
    else:
        raise DistanceError(f"{args.paths[0]} is a {kinds[0]} and {args.paths[1]} a {kinds[1]}: "
                            f"give two image files or two folders")


def main(argv=None):
    args = parse_args(argv)
    return run_main("distance.py", lambda: run(args), interrupted="interrupted: no output file was written")


if __name__ == "__main__":
    sys.exit(main())
