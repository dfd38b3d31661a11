"""What every command-line front door shares: flag types, the backbone-weights flags and their
check, metric builders, safe output files, and one way to report errors and exit.

The front doors (`experiment.py`, `analysis.py`, `feature_map.py`, `distance.py`) take the same
`--weights-dir`, `--random-init` and `--seed` (`add_weights_flags`, `Backbones`), check every
weights file a run needs before computing anything (`preflight`: all missing files in one
message), build their metrics here, write their files here (`write_atomic`, `atomic_open`:
complete or absent) and run their `main` through `run_main`, so that every problem a user can
fix reaches them as one line, `<program>: error: <what was wrong and the fix>`, with exit status
1 (2 for a usage error, from argparse), and an interruption (Ctrl-C or SIGTERM) as one line with
status 130.
"""
import argparse
import contextlib
import os
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None

from loss_networks import (NETWORKS, FeatureExtractor, WeightsUnavailableError, canonical_net, checkpoint_path,
                           fetch_pretrained)
from metric import (COLORSPACES, METHODS, NORMALIZATIONS, NOT_APPLICABLE, OFFICIAL_VERSIONS, PIXEL_METRICS, VARIANTS,
                    DistanceMetric, config_points, official_lpips_path)

CHANNEL_NORMS = {"on": (True,), "off": (False,), "both": (True, False)}
SEED_LIMIT = 2 ** 32  # numpy's generators take seeds below it
# what a front door reports as one line: the user's to fix (files, flags, weights; BAPPS's DatasetError is an OSError)
USER_ERRORS = (ValueError, OSError, WeightsUnavailableError)


class UserError(ValueError):
    """A problem with the paths, files or flags, for the user to fix; the message says how."""


# ---------------------------------------------------------------- flag types


def whole_number_at_least(least):
    """An argparse type: a whole number >= `least`."""
    def whole_number(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return whole_number


positive_int = whole_number_at_least(1)
non_negative_int = whole_number_at_least(0)


def pick_device(name="auto"):
    """torch.device for --device: auto is cuda when there is one, else cpu; ValueError for any other kind
    (mps only where it is available) or a CUDA device this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    usage = "use auto, cpu, cuda or cuda:N"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device: {usage}") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices here; "
                         f"use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS (Apple GPU) is not available here; {usage}")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: {device.type} devices are not supported; {usage}")
    return device


def device_arg(name):
    """argparse type for --device: `pick_device`, its error turned into a usage error."""
    try:
        return pick_device(name)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--device ")) from None


def network_name(name):
    """argparse type: the canonical network name, or an error listing the valid ones."""
    try:
        return canonical_net(name)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def requested_configs(methods, channel_norm="on"):
    """[(method, channel_norm)] for method names (or "all") and "on", "off" or "both"."""
    methods = METHODS if "all" in methods else tuple(dict.fromkeys(methods))
    return [(method, norm) for method in methods for norm in CHANNEL_NORMS[channel_norm]]


def seed_arg(text):
    """argparse type for --seed: a whole number from 0 to 2**32 - 1 (what numpy's generators take)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be from 0 to {SEED_LIMIT - 1}, got {value}")
    return value


# ---------------------------------------------------------------- backbone weights


def add_config_flags(parser, variants=VARIANTS, variant_help="", defaults=True):
    """--method, --channel-norm, --variant and the input flags (`add_input_flags`): how images are compared.
    Without `defaults`, --method and --channel-norm are None when not given (to tell them from a choice)."""
    parser.add_argument("--method", nargs="+", default=["spatial"] if defaults else None,
                        choices=[*METHODS, "all"], metavar="METHOD",
                        help=f"how activations are compared: {', '.join(METHODS)}, or all (the five); "
                             f"default: spatial")
    parser.add_argument("--channel-norm", choices=tuple(CHANNEL_NORMS), default="on" if defaults else None,
                        help="normalise activations over channels: on, off, or both (each) (default: on)")
    parser.add_argument("--variant", choices=variants, default="baseline",
                        help=f"baseline: plain sum over channels; lin: LPIPS linear weights from --lpips-weights"
                             f"{variant_help} (default: %(default)s)")
    add_input_flags(parser)


def add_input_flags(parser):
    """--lpips-weights, --normalize and --colorspace, the same in every front door that compares images."""
    parser.add_argument("--lpips-weights", metavar="PATH|official|official-v0.0",
                        help="linear weights for --variant lin: 'official' (LPIPS v0.1, shipped with the lpips "
                             "package; with --normalize lpips this is lpips.LPIPS), 'official-v0.0' (LPIPS v0.0; "
                             "with --normalize signed, lpips.LPIPS(version='0.0')) or an LPIPS-format file; a file "
                             "in a folder version_K gives its rows version K")
    parser.add_argument("--normalize", choices=tuple(NORMALIZATIONS), default="imagenet",
                        help="the networks' input normalisation; lpips: the one LPIPS v0.1's weights were trained "
                             "with; signed: 2x - 1 alone, LPIPS v0.0's input (default: %(default)s)")
    parser.add_argument("--colorspace", choices=COLORSPACES, default="Lab",
                        help="where the pixel metrics l2 and ssim compare, as LPIPS's --colorspace: Lab (the 8-bit "
                             "image in CIE Lab, range 100) or RGB; their rows have normalize lab or rgb and "
                             f"'{NOT_APPLICABLE}' in the columns that do not apply to them (default: %(default)s)")


def add_weights_flags(parser, seed_help="the seed of --random-init's weights"):
    """--weights-dir, --random-init and --seed, the same in every front door."""
    group = parser.add_argument_group("backbone weights", "torchvision's ImageNet weights, read from "
                                      "$TORCH_HOME/hub/checkpoints (downloaded there when missing), unless:")
    group.add_argument("--weights-dir", metavar="DIR",
                       help="read the weights files from DIR instead, named as torchvision names them "
                            "(alexnet-owt-7be5be79.pth, vgg16-397923af.pth, ...); nothing is downloaded")
    group.add_argument("--random-init", action="store_true",
                       help="randomly initialised backbones (torchvision's initialisation, drawn from --seed), the "
                            "untrained control of DPS studies; outputs say weights random:seed<seed>")
    group.add_argument("--seed", type=seed_arg, default=0, help=f"{seed_help} (default: %(default)s)")


@dataclass(frozen=True)
class Backbones:
    """Where the backbones' weights come from: torchvision's cache (`folder` None), a folder of files with
    torchvision's names (--weights-dir), or random initialisation drawn from `random_seed` (--random-init)."""
    folder: str = None
    random_seed: int = None

    @classmethod
    def from_flags(cls, args):
        return cls(args.weights_dir, args.seed if args.random_init else None)

    @property
    def pretrained(self):
        return self.random_seed is None

    def file(self, net):
        """The weights file of `net` (None for random weights)."""
        if not self.pretrained:
            return None
        name = os.path.basename(checkpoint_path(net))
        return os.path.join(self.folder, name) if self.folder is not None else checkpoint_path(net)

    def metric_kwargs(self, net):
        """DistanceMetric's `pretrained` and `weights` for `net`, its random generator seeded when random."""
        if not self.pretrained:
            torch.manual_seed(self.random_seed)  # a net's random weights do not depend on what was built before
            return {"pretrained": False, "weights": None}
        return {"pretrained": True, "weights": self.file(net) if self.folder is not None else None}


def missing_weights(nets, backbones, lpips_weights=None):
    """(backbone files, linear-weights files) that a run on `nets` needs and lacks, as readable lines.

    An ImageNet file missing from torchvision's cache is downloaded there first when possible;
    one missing from --weights-dir is never downloaded.
    """
    backbone, linear = [], []
    for net in dict.fromkeys(net for net in nets if net not in PIXEL_METRICS and backbones.pretrained):
        path = backbones.file(net)
        if os.path.isfile(path):
            continue
        if backbones.folder is None:
            try:
                fetch_pretrained(net)
                continue
            except WeightsUnavailableError:
                pass
        backbone.append(f"{os.path.basename(path)} ({net}, {NETWORKS[canonical_net(net)][1].url})")
    if lpips_weights in OFFICIAL_VERSIONS:
        linear += [f"{official_lpips_path(net, lpips_weights)} (LPIPS's {lpips_weights} weights of {net}; "
                   f"pip install lpips)" for net in nets
                   if net not in PIXEL_METRICS and not os.path.isfile(official_lpips_path(net, lpips_weights))]
    elif lpips_weights is not None and not os.path.isfile(lpips_weights):
        linear.append(f"{lpips_weights} (--lpips-weights)")
    return backbone, linear


def preflight(nets, backbones, lpips_weights=None):
    """Before any compute: raise WeightsUnavailableError naming every weights file the run lacks, where
    each goes, and the flags that help (--weights-dir, --random-init)."""
    backbone, linear = missing_weights(nets, backbones, lpips_weights)
    problems = [f"no such linear-weights file {line}" for line in linear]
    if backbone:
        folder = backbones.folder or f"{os.path.dirname(checkpoint_path('alex'))} ($TORCH_HOME/hub/checkpoints)"
        problems.insert(0, f"missing weights file{'s' * (len(backbone) > 1)} {', '.join(backbone)}: without "
                           f"network, download {'them' if len(backbone) > 1 else 'it'} elsewhere and place "
                           f"{'them' if len(backbone) > 1 else 'it'} in {folder}, or pass --weights-dir DIR (a "
                           f"folder holding them) or --random-init (untrained backbones)")
    if problems:
        raise WeightsUnavailableError("; ".join(problems))


# ---------------------------------------------------------------- metrics


def build_metrics(net, variant, configs, normalize="imagenet", lpips_weights=None, backbones=Backbones(),
                  colorspace="Lab", layers=None):
    """{config: DistanceMetric} for `configs`, all running one FeatureExtractor.

    A configuration is (method, channel_norm), over `layers` (default: the net's), or
    (method, channel_norm, points) for some of the extraction points (see
    `metric.batch_distances`). A pixel metric (`l2`, `ssim`) is a `pixel_metrics.PixelMetric`
    in `colorspace` instead. One baseline metric computes every configuration. `lin` needs a
    metric per configuration for its linear weights (`lpips_weights`, loaded strictly into
    each); they all run one backbone with every point, so each image still goes through it
    once (their own copies, read from the memory-mapped weights file, are dropped).
    """
    if net in PIXEL_METRICS:
        from pixel_metrics import PixelMetric  # scipy and scikit-image, only when asked for
        return dict.fromkeys(configs, PixelMetric(net, colorspace))
    points = sorted({p for config in configs for p in config_points(config) or ()}) or layers
    if variant == "baseline":
        return dict.fromkeys(configs, DistanceMetric(net, *configs[0][:2], normalize=normalize, layers=points,
                                                     **backbones.metric_kwargs(net)))
    if variant != "lin":
        raise ValueError(f"variant {variant!r} trains the network: it needs --train")
    metrics = {}
    for config in configs:
        metrics[config] = DistanceMetric(net, *config[:2], lin=True, normalize=normalize, lpips_weights=lpips_weights,
                                         layers=config_points(config) or layers, **backbones.metric_kwargs(net))
    shared = next(iter(metrics.values())).net
    if points is not None and shared.layers != points:
        shared = FeatureExtractor(net, layers=points, **backbones.metric_kwargs(net))
    for metric in metrics.values():
        metric.net = shared
    return metrics


def build_metric(net, backbones=Backbones(), device="cpu", layers=None):
    """A baseline DistanceMetric for `net` at `layers` (default: the net's), its weights from `backbones`."""
    return DistanceMetric(net, layers=layers, **backbones.metric_kwargs(net)).to(device)


# ---------------------------------------------------------------- output files


def check_writable(folder, outputs=()):
    """Raise UserError unless files can be written in `folder` (created later if missing) under the names
    `outputs`; checked before any computation, creating nothing."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    fix = "choose another folder with --out"
    if not os.path.isdir(existing):
        raise UserError(f"--out {folder}: {existing} is a file, not a folder; {fix}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UserError(f"--out {folder}: cannot write in {existing} ({err.strerror}); {fix}") from None
    taken = [name for name in outputs if os.path.isdir(os.path.join(folder, name))]
    if taken:
        raise UserError(f"--out {folder}: {os.path.join(folder, taken[0])} is a folder, where an output "
                        f"file goes; move it away or {fix}")


def write_atomic(path, data):
    """Write `data` (str or bytes) to a temporary file beside `path`, then rename it over `path`.

    An interrupted or failed write leaves the old file as it was and no temporary file.
    """
    with atomic_open(path) as file:
        file.write(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def atomic_open(path, mode="wb", **kwargs):
    """`open` a temporary file beside `path` and rename it over `path` when the block ends without error.

    An interrupted or failed block leaves the old file as it was and no temporary file,
    so output written piece by piece is complete or absent.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(folder, waiting=None):
    """Hold an exclusive advisory lock on `folder` (created if missing) while the block runs: another process
    in `locked(folder)` waits, after printing `waiting` (if given) on stderr. A no-op where the system has no
    flock (Windows)."""
    os.makedirs(folder, exist_ok=True)
    if fcntl is None:
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                print(waiting, file=sys.stderr)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


# ---------------------------------------------------------------- errors and exit


def one_line(err):
    """An exception's message on one line."""
    return " ".join(str(err).split("\n"))


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a job scheduler's stop, `kill`) handled as Ctrl-C, so that it cleans up the same way."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():  # signal handlers belong to the main thread
        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)
    else:
        yield


def run_main(program, work, interrupted="interrupted"):
    """Run `work()`, a front door's job, and return the exit status for `sys.exit`.

    A problem the user can fix (`USER_ERRORS`) is one line on stderr, `<program>: error: ...`,
    status 1; Ctrl-C or SIGTERM prints `<program>: <interrupted>`, status 130; a reader of
    stdout that went away (`| head`) ends the run quietly.
    """
    try:
        with sigterm_as_interrupt():
            return work() or 0
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{program}: {interrupted}", file=sys.stderr)
        return 130
    except torch.cuda.OutOfMemoryError:
        print(f"{program}: error: out of GPU memory: pass a smaller --batch-size", file=sys.stderr)
        return 1
    except USER_ERRORS as err:
        print(f"{program}: error: {one_line(err)}", file=sys.stderr)
        return 1
