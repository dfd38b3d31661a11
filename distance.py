"""Perceptual distances between two image files, two folders, or all pairs of one folder.

    python distance.py A.png B.png                       # the distance alone, as the last line of stdout
    python distance.py A.png B.png --net vgg --method spatial+sort
    python distance.py A.png B.png --variant lin --lpips-weights official --normalize lpips   # LPIPS v0.1
    python distance.py A.png B.png --all-configs         # the ten baseline configurations, one pass
    python distance.py DIR0 DIR1 --out pairs.csv         # files paired by relative path, recursively
    python distance.py --all-pairs DIR --out matrix.csv --plot

Two folders: image files are paired by their path relative to each folder, in
subfolders too; a file in only one folder is listed on stderr and skipped (an error with
--strict). The CSV has the columns path0,path1,distance (paths relative to their
folders) and the configuration net,layers,variant,method,channel_norm,normalize: one
row per pair and configuration. It goes to --out, written to a temporary file that is
renamed only once complete (an interrupted run leaves no output file), or to stdout.
The count and mean ± standard deviation are printed at the end (to stderr when the
rows go to stdout).

All pairs: one row per image and configuration: path, the distance to each image of
the folder (columns in the order of the rows), then the configuration columns. --plot
draws the matrix as a PNG heat map.

Images load as dataset_collector.load_image reads them: RGB, transparency composited
over white, grayscale replicated. The two images of a pair must have one size, or
--size N resizes every image to N x N. Files stream in batches: the next batch is
decoded (by a thread, or by --num-workers processes) while the network works on this
one, and each image goes through the backbone once for all configurations.
"""
import argparse
import contextlib
import csv
import io
import math
import os
import queue
import sys
import threading
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cli import (CHANNEL_NORMS, Backbones, UserError, add_weights_flags, atomic_open, build_metrics, device_arg,
                 positive_int, preflight, requested_configs, run_main, write_atomic)
from image_io import IMAGE_EXTENSIONS, ImageLoadError, image_files, load_image
from loss_networks import canonical_net
from metric import ALL_CONFIGS, METHODS, NORMALIZATIONS, batch_distances, compare_views, metrics_views

PAIR_COLUMNS = ("path0", "path1", "distance")
CONFIG_COLUMNS = ("net", "layers", "variant", "method", "channel_norm", "normalize")
VARIANTS = ("baseline", "lin")
MAX_BATCH = 50
PIXELS_PER_IMAGE_BATCH = MAX_BATCH * 64 * 64  # the evaluation's batch of 64x64 images; larger images, fewer
SHOWN = 5  # file names listed in a message before "... (N more)"


class DistanceError(UserError):
    """A problem with the paths, the files or the flags, for the user to fix."""


# ---------------------------------------------------------------- files


def path_kind(path):
    """"file" or "folder"; a missing path is an error."""
    if os.path.isdir(path):
        return "folder"
    if os.path.isfile(path):
        return "file"
    raise DistanceError(f"no such file or folder: {path}")


def listing(names):
    """'a.png, b.png' or, for long lists, the first few and how many more."""
    more = f", ... ({len(names) - SHOWN} more)" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def folder_images(folder):
    """The image files under `folder` (relative paths, sorted); none is an error."""
    names = image_files(folder)
    if not names:
        raise DistanceError(f"no image files in {folder} (looked for {' '.join(IMAGE_EXTENSIONS)}, "
                            f"in subfolders too)")
    return names


def paired_names(dir0, dir1, strict=False):
    """Relative paths present in both folders; the others are reported on stderr (an error if `strict`)."""
    names0, names1 = folder_images(dir0), folder_images(dir1)
    common = sorted(set(names0) & set(names1))
    if not common:
        raise DistanceError(f"{dir0} and {dir1} have no image file in common (files are paired by their path "
                            f"relative to the folder): {dir0} has {listing(names0)}; {dir1} has {listing(names1)}")
    unpaired = [f"{len(only)} file{'s' * (len(only) > 1)} only in {folder}: {listing(only)}"
                for folder, only in ((dir0, sorted(set(names0) - set(names1))),
                                     (dir1, sorted(set(names1) - set(names0)))) if only]
    if unpaired and strict:
        raise DistanceError("; ".join(unpaired) + " (--strict: every file must have its pair)")
    for line in unpaired:
        print(f"skipped, unpaired: {line}", file=sys.stderr)
    return common


def size_mismatch(paths, shapes):
    """The error text for images of different sizes, with both sizes (width x height) and the fix."""
    sizes = ", ".join(f"{path} is {shape[-1]}x{shape[-2]}" for path, shape in zip(paths, shapes))
    return (f"images of different sizes: {sizes}; pass --size N to resize every image to N x N "
            f"(the loader's antialiased bicubic resize)")


class ImageTuples(Dataset):
    """Item i: (i, [image of each file of items[i]], None), or (i, None, message) when they cannot be compared."""

    def __init__(self, items, size=None):
        self.items, self.size = items, size

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        paths = self.items[index]
        try:
            images = [load_image(path, self.size) for path in paths]
        except ImageLoadError as err:
            return index, None, str(err)
        if len({image.shape for image in images}) > 1:
            return index, None, size_mismatch(paths, [image.shape for image in images])
        return index, images, None


def collate_by_size(batch):
    """(groups, errors) of a batch of `ImageTuples` items: groups [(indices, [stacked images per position])],
    one per image size, so that folders of mixed sizes still batch; errors [(index, message)]."""
    groups, errors = {}, []
    for index, images, error in batch:
        if error is not None:
            errors.append((index, error))
            continue
        indices, stacks = groups.setdefault(images[0].shape, ([], [[] for _ in images]))
        indices.append(index)
        for stack, image in zip(stacks, images):
            stack.append(image)
    return [(indices, [torch.stack(stack) for stack in stacks]) for indices, stacks in groups.values()], errors


def prefetched(batches, depth=2):
    """Iterate `batches` in a background thread, up to `depth` ahead: PIL and torch release the GIL,
    so decoding the next batch overlaps the network's work on this one."""
    ready, stop, end = queue.Queue(depth), threading.Event(), object()

    def put(item):
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        try:
            for batch in batches:
                if not put((batch, None)):
                    return
            put((end, None))
        except Exception as err:  # handed to the consumer, which raises it
            put((None, err))

    threading.Thread(target=produce, daemon=True).start()
    try:
        while True:
            batch, error = ready.get()
            if error is not None:
                raise error
            if batch is end:
                return
            yield batch
    finally:
        stop.set()


def image_batches(items, size, batch_size, num_workers, device):
    """`collate_by_size` batches of the files of `items` (tuples of paths), decoded ahead of use."""
    loader = DataLoader(ImageTuples(items, size), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=collate_by_size, pin_memory=device.type == "cuda")
    return loader if num_workers or len(loader) < 2 else prefetched(loader)


def auto_batch_size(path, size=None):
    """Images per batch: the evaluation's 50 at 64x64, fewer for larger images (from `path`'s header)."""
    if size is None:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Exception:  # PIL reports bad files many ways; loading the file names the problem later
            return MAX_BATCH
    else:
        width = height = size
    return max(1, min(MAX_BATCH, PIXELS_PER_IMAGE_BATCH // (width * height)))


def auto_workers(batches, device):
    """Decoding processes: none on the CPU (the decoding thread overlaps compute; processes would take
    cores from torch's threads) or for a short job (starting them costs more than they save)."""
    if device.type == "cpu" or batches < 8:
        return 0
    return min(4, max(1, (os.cpu_count() or 2) // 2))


# ---------------------------------------------------------------- metric


def load_metrics(args, device):
    """{(method, channel_norm): DistanceMetric} for the flags, sharing one backbone, on `device`."""
    backbones = Backbones.from_flags(args)
    preflight([args.net], backbones, args.lpips_weights)
    metrics = build_metrics(args.net, args.variant, args.configs, args.normalize, args.lpips_weights, backbones,
                            layers=args.layers)
    for metric in dict.fromkeys(metrics.values()):
        metric.to(device).eval()
    return metrics


def config_columns(metrics, args):
    """{config: the CSV cells net, layers, variant, method, channel_norm, normalize}."""
    extractor = next(iter(metrics.values())).net
    layers = "-".join(map(str, extractor.layers))
    return {(method, norm): [extractor.net, layers, args.variant, method, str(norm).lower(), args.normalize]
            for method, norm in metrics}


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


def print_summary(stats, what, file):
    """'N pairs: mean ± std' for one configuration, a line per configuration for several.

    `stats`: {config: (count, mean, standard deviation)}."""
    def text(mean, std):
        return number(mean) + (f" ± {number(std)}" if not math.isnan(std) else "")

    count = next(iter(stats.values()))[0]
    if len(stats) == 1:
        print(f"{count} {what}: distance {text(*next(iter(stats.values()))[1:])} (mean ± standard deviation)",
              file=file)
        return
    print(f"{count} {what}, distance mean ± standard deviation:", file=file)
    for (method, norm), (_, mean, std) in stats.items():
        print(f"  {method:<13} channel_norm={str(norm).lower():<6} {text(mean, std)}", file=file)


@contextlib.contextmanager
def output(path):
    """A text file for CSV rows: `path`, written atomically, or stdout when `path` is None."""
    if path is None:
        yield sys.stdout
        return
    with atomic_open(path, "w", newline="", encoding="utf-8") as file:
        yield file


# ---------------------------------------------------------------- pairs


def pair_distances(metrics, pairs, size, batch_size, num_workers, device):
    """Yield (index, {config: distance}, None), or (index, None, message) for a pair that cannot be
    compared, for each (path0, path1) of `pairs`, in order, batch by batch."""
    for groups, errors in image_batches(pairs, size, batch_size, num_workers, device):
        results = {index: (None, message) for index, message in errors}
        for indices, (x0, x1) in groups:
            with torch.inference_mode():
                found = batch_distances(metrics, {"0": x0.to(device), "1": x1.to(device)}, [("0", "1")])
            values = {config: d.float().tolist() for config, (d,) in found.items()}
            results.update((index, ({config: v[k] for config, v in values.items()}, None))
                           for k, index in enumerate(indices))
        for index in sorted(results):
            yield (index, *results[index])


def skip_or_raise(message, skip_bad):
    """With --skip-bad, list a pair (or image) that cannot be compared on stderr; else it is the error."""
    if not skip_bad:
        raise DistanceError(f"{message}; or --skip-bad to list and skip what cannot be compared")
    tqdm.write(f"skipped: {message}", file=sys.stderr)


def compare_pairs(args, metrics, pairs, names, device, file, progress=True):
    """Distances of `pairs` (path0, path1), their CSV rows (labelled `names`) written to `file` as each batch
    finishes; returns ({config: RunningStats}, number of pairs skipped)."""
    columns = config_columns(metrics, args)
    stats, skipped = {config: RunningStats() for config in metrics}, 0
    batch_size = args.batch_size or auto_batch_size(pairs[0][0], args.size)
    workers = args.num_workers if args.num_workers is not None else auto_workers(len(pairs) / batch_size, device)
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow(PAIR_COLUMNS + CONFIG_COLUMNS)
    with tqdm(total=len(pairs), unit="pair", disable=not progress) as bar:
        for index, distances, error in pair_distances(metrics, pairs, args.size, batch_size, workers, device):
            bar.update()
            if error is not None:
                skip_or_raise(error, args.skip_bad)
                skipped += 1
                continue
            for config, value in distances.items():
                writer.writerow([*names[index], number(value), *columns[config]])
                stats[config].add(value)
    if not next(iter(stats.values())).n:
        raise DistanceError(f"none of the {len(pairs)} pairs could be compared")
    return stats, skipped


def two_files(args, metrics, path0, path1, device):
    """Print the distance (one configuration: the number alone) or a table (several); CSV too with --out."""
    with output(args.out) if args.out else contextlib.nullcontext(io.StringIO()) as file:
        stats, _ = compare_pairs(args, metrics, [(path0, path1)], [(path0, path1)], device, file, progress=False)
    if len(stats) == 1:
        print(number(next(iter(stats.values())).mean))
        return
    print(f"{'method':<14}{'channel_norm':<14}distance")
    for (method, norm), stat in stats.items():
        print(f"{method:<14}{str(norm).lower():<14}{number(stat.mean)}")


def two_folders(args, metrics, dir0, dir1, names, device):
    """CSV rows for the files `names` (relative paths) of both folders, then the summary."""
    pairs = [(os.path.join(dir0, name), os.path.join(dir1, name)) for name in names]
    with output(args.out) as file:
        stats, skipped = compare_pairs(args, metrics, pairs, [(name, name) for name in names], device, file)
    report = sys.stdout if args.out else sys.stderr
    stats = {config: (stat.n, stat.mean, stat.std) for config, stat in stats.items()}
    print_summary(stats, "pairs" + (f" ({skipped} skipped)" if skipped else ""), report)
    if args.out:
        print(f"wrote {args.out}", file=report)


# ---------------------------------------------------------------- all pairs


def folder_views(metrics, paths, args, batch_size, device):
    """(indices of the images kept, their views stacked), each image through the backbone once."""
    workers = args.num_workers if args.num_workers is not None else auto_workers(len(paths) / batch_size, device)
    store, kept, first = None, [], None
    with tqdm(total=len(paths), unit="image", desc="features") as bar:
        for groups, errors in image_batches([(path,) for path in paths], args.size, batch_size, workers, device):
            bar.update(len(errors) + sum(len(indices) for indices, _ in groups))
            for _, message in errors:
                skip_or_raise(message, args.skip_bad)
            for indices, (x,) in groups:
                first = first or (paths[indices[0]], x.shape)
                if x.shape[1:] != first[1][1:]:
                    raise DistanceError(size_mismatch([first[0], paths[indices[0]]], [first[1], x.shape]))
                with torch.inference_mode():
                    views = metrics_views(metrics, x.to(device))
                if store is None:  # one allocation for the whole folder: memory is known from the first batch
                    store = {key: [t.new_empty((len(paths), *t.shape[1:])) for t in layers]
                             for key, layers in views.items()}
                for key, layers in views.items():
                    for full, t in zip(store[key], layers):
                        full[len(kept): len(kept) + len(t)] = t
                kept += indices
    if len(kept) < 2:
        raise DistanceError(f"--all-pairs needs at least two readable images, found {len(kept)}")
    return kept, {key: [t[:len(kept)] for t in layers] for key, layers in store.items()}


def distance_matrices(metrics, views, chunk):
    """{config: (n, n) symmetric matrix with a zero diagonal}, each pair of images compared once."""
    n = len(next(iter(views.values()))[0])
    rows, cols = torch.triu_indices(n, n, offset=1, dtype=torch.int32)
    matrices = {config: torch.zeros(n, n) for config in metrics}
    device = next(iter(views.values()))[0].device
    for start in tqdm(range(0, len(rows), chunk), unit="batch", desc="pairs"):
        i, j = rows[start: start + chunk].long(), cols[start: start + chunk].long()
        pair_views = {name: {key: [t[index.to(device)] for t in layers] for key, layers in views.items()}
                      for name, index in (("0", i), ("1", j))}
        with torch.inference_mode():
            found = compare_views(metrics, pair_views, [("0", "1")])
        for config, (d,) in found.items():
            matrices[config][i, j] = matrices[config][j, i] = d.float().cpu()
    return matrices


def plot_matrices(matrices, names):
    """The matrices as heat maps, one panel per configuration, as PNG bytes."""
    from matplotlib.figure import Figure  # only --plot needs matplotlib
    count = len(matrices)
    columns = min(count, 5)
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(4.5 * columns, 4 * rows + 0.5), layout="constrained")
    for ax, ((method, norm), matrix) in zip(fig.subplots(rows, columns, squeeze=False).flat, matrices.items()):
        off_diagonal = matrix.clone().fill_diagonal_(float("nan"))  # the zeros would set the colour scale
        image = ax.imshow(off_diagonal.numpy(), cmap="viridis")
        ax.set_title(f"{method}, channel norm {'on' if norm else 'off'}")
        if len(names) <= 30:
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
            ax.set_yticks(range(len(names)), names, fontsize=6)
        fig.colorbar(image, ax=ax, shrink=0.8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def all_pairs(args, metrics, folder, names, device):
    """The distance matrix of the images `names` of `folder` as CSV (and a PNG with --plot), then the summary."""
    paths = [os.path.join(folder, name) for name in names]
    pairs_per_batch = args.batch_size or auto_batch_size(paths[0], args.size)
    kept, views = folder_views(metrics, paths, args, 2 * pairs_per_batch, device)
    names = [names[index] for index in kept]
    matrices = distance_matrices(metrics, views, pairs_per_batch)
    columns = config_columns(metrics, args)
    with output(args.out) as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["path", *names, *CONFIG_COLUMNS])
        for config, matrix in matrices.items():
            writer.writerows([name, *map(number, row), *columns[config]] for name, row in zip(names, matrix.tolist()))
    if args.plot is not None:
        write_atomic(args.plot, plot_matrices(matrices, names))
    report = sys.stdout if args.out else sys.stderr
    upper = torch.ones(len(names), len(names), dtype=torch.bool).triu(1)
    values = {config: matrix[upper].double() for config, matrix in matrices.items()}
    stats = {config: (len(v), v.mean().item(), v.std().item() if len(v) > 1 else math.nan)
             for config, v in values.items()}
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
                             "--all-configs four), plus the n x n matrix per configuration")
    parser.add_argument("--out", metavar="FILE", help="CSV file to write (default: the rows go to stdout)")
    parser.add_argument("--plot", nargs="?", const="", metavar="PNG",
                        help="with --all-pairs: also draw the matrix as a PNG heat map (default file: --out with "
                             "the suffix .png)")
    config = parser.add_argument_group("metric", "as experiment.py's flags (one network here)")
    config.add_argument("--net", default="alex",
                        help="the loss network, a name experiment.py's --net takes (alex, squeeze, vgg, ...); "
                             "default: alex")
    config.add_argument("--layers", nargs="+", type=int, metavar="N",
                        help="extraction points of the network (default: the LPIPS layers)")
    config.add_argument("--method", nargs="+", choices=[*METHODS, "all"], metavar="METHOD",
                        help=f"{', '.join(METHODS)}, or all (default: spatial)")
    config.add_argument("--channel-norm", choices=tuple(CHANNEL_NORMS),
                        help="normalise activations over channels: on, off, or both (default: on)")
    config.add_argument("--all-configs", action="store_true",
                        help="the ten baseline configurations (--method all --channel-norm both) from one "
                             "backbone pass per image")
    config.add_argument("--variant", choices=VARIANTS, default="baseline",
                        help="baseline: plain sum over channels; lin: LPIPS linear weights from --lpips-weights "
                             "(default: %(default)s)")
    config.add_argument("--lpips-weights", metavar="PATH|official",
                        help="linear weights for --variant lin: official (LPIPS v0.1, with --normalize lpips "
                             "this is the lpips package's metric) or an LPIPS-format file")
    config.add_argument("--normalize", choices=tuple(NORMALIZATIONS), default="imagenet",
                        help="input normalisation; lpips: the one LPIPS's weights were trained with "
                             "(default: %(default)s)")
    config.add_argument("--device", type=device_arg, default="auto",
                        help="auto (cuda when available, else cpu), cpu, cuda, cuda:N (default: %(default)s)")
    add_weights_flags(parser)
    files = parser.add_argument_group("files")
    files.add_argument("--size", type=positive_int, metavar="N", help="resize every image to N x N (default: as stored; "
                                                             "the two images of a pair must then have one size)")
    files.add_argument("--strict", action="store_true", help="a file present in only one folder is an error")
    files.add_argument("--skip-bad", action="store_true",
                       help="list and skip pairs (or images) that cannot be read or differ in size, instead of "
                            "stopping at the first")
    files.add_argument("--batch-size", type=positive_int, metavar="N",
                       help=f"pairs per backbone pass, --all-pairs: twice as many images (default: {MAX_BATCH} "
                            f"for 64x64 images, fewer for larger ones, so that memory stays flat)")
    files.add_argument("--num-workers", type=int, metavar="N",
                       help="image-decoding processes (default: 0 on the CPU or for short jobs, where a thread "
                            "decodes the next batch while this one is computed; else up to 4)")
    args = parser.parse_args(argv)
    try:
        check_args(args)
    except ValueError as err:
        parser.error(str(err))
    return args


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
        args.plot = str(Path(args.out).with_suffix(".png"))
    if args.all_configs and (args.method or args.channel_norm):
        raise ValueError("--all-configs is --method all --channel-norm both: drop --method and --channel-norm")
    if args.all_configs and args.variant != "baseline":
        raise ValueError("--all-configs compares the ten baseline configurations: drop --variant lin")
    if args.variant == "baseline" and args.lpips_weights:
        raise ValueError("--variant baseline has no linear layers: drop --lpips-weights or use --variant lin")
    if args.variant == "lin" and not args.lpips_weights:
        raise ValueError("--variant lin needs linear weights: --lpips-weights official (LPIPS v0.1) or "
                         "--lpips-weights PATH (an LPIPS-format file)")
    if args.num_workers is not None and args.num_workers < 0:
        raise ValueError(f"--num-workers must be at least 0, got {args.num_workers}")
    args.net = canonical_net(args.net)
    args.configs = ALL_CONFIGS if args.all_configs else requested_configs(args.method or ["spatial"],
                                                                           args.channel_norm or "on")


def run(args):
    """Check the paths, then load the metric and compare: a bad path fails before the network loads."""
    device = args.device
    if args.all_pairs is not None:
        if path_kind(args.all_pairs) != "folder":
            raise DistanceError(f"--all-pairs takes a folder, {args.all_pairs} is a file")
        names = folder_images(args.all_pairs)
        all_pairs(args, load_metrics(args, device), args.all_pairs, names, device)
        return
    kinds = [path_kind(path) for path in args.paths]
    if kinds == ["file", "file"]:
        two_files(args, load_metrics(args, device), *args.paths, device)
    elif kinds == ["folder", "folder"]:
        names = paired_names(*args.paths, args.strict)
        two_folders(args, load_metrics(args, device), *args.paths, names, device)
    else:
        raise DistanceError(f"{args.paths[0]} is a {kinds[0]} and {args.paths[1]} a {kinds[1]}: "
                            f"give two image files or two folders")


def main(argv=None):
    args = parse_args(argv)
    return run_main("distance.py", lambda: run(args), interrupted="interrupted: no output file was written")


if __name__ == "__main__":
    sys.exit(main())
