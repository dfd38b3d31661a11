"""The BAPPS experiments: score deep perceptual similarity metrics on the 2AFC and JND validation sets.

    python experiment.py --net alex squeeze vgg --method all --channel-norm both
    python experiment.py --net alex --variant lin --normalize lpips --lpips-weights official
    python experiment.py --net alex --variant lin --normalize signed --lpips-weights official-v0.0  # LPIPS v0.0
    python experiment.py --net resnet50 --layers 2 4 5 7 --per-layer    # any torchvision net, any points
    python experiment.py --preset paper --method all                    # the original's 14-network grid
    python experiment.py --net l2 ssim alex                             # the pixel metrics beside a network

networks x methods x channel norms x variants, one backbone pass per image for all
configurations (`evaluation.py`), into `OUT/results.csv` (`results.py`) and the table
`OUT/results.md`. `--train` trains LPIPS calibrations (`training.py`, the recipe of the LPIPS
paper, imported only then: it brings Lightning) on BAPPS train, then evaluates each trained
version the same way:

    python experiment.py --net alex --variant lin --train --repetitions 3
    python experiment.py --net vgg --variant tune --train --devices 4 --strategy ddp

The metric itself is `metric.py`; its names are re-exported here, so that
`from experiment import DistanceMetric, METHODS, score_2afc, score_jnd` keeps working, as do
`experiment.LPIPSTraining` and the other training names (imported on first use).
"""
import argparse
import os
import re
import sys
from pathlib import Path

import torch

from cli import (Backbones, add_config_flags, add_weights_flags, build_metrics, check_writable,
                 pick_device, preflight, requested_configs, run_main)
from bapps_archives import SUBSPLITS, retry_settings
from bootstrap import METHOD
from distance_files import FOLDER as DISTANCES_FOLDER
from distance_files import compare_2afc, comparison_report, config_label, distances_folder, find_config
from evaluation import BAPPS_SETS, bapps_sets, evaluate_net, net_configs
from loss_networks import (DEFAULT_LAYERS, DEFAULT_RULE, LPIPS_NETS, PRESET, canonical_net, check_layers,
                           default_layers, layers_text, load_state_dict_file)
from metric import (ALL_CONFIGS, COLORSPACES, INITS, METHODS, NORMALIZATIONS, NOT_APPLICABLE,  # noqa: F401
                    OFFICIAL_VERSIONS, PARTS, PIXEL_METRICS, TRAINED_VARIANTS, VARIANTS, DistanceMetric, LinearLayer,
                    channel_normalize, check_images, official_lpips_path, score_2afc, score_jnd)
from results import (backbones_identity, report, results_path, results_table, run_columns, run_marks,  # noqa: F401
                     weights_identity)
from shift_study import SHIFT_OFFSET, check_shifts

PRESETS = {"paper": PRESET}  # --preset: {net: extraction points}
OUTPUTS = ("results.csv", "results.md")
# flags a run of pixel metrics alone would ignore (beside a network they are the network's)
NETWORK_FLAGS = ("preset", "layers", "per_layer", "method", "channel_norm", "variant", "normalize", "lpips_weights",
                 "weights_dir", "random_init")
TRAINING_NAMES = ("RankingHead", "lr_factor", "LPIPSTraining", "version_dir", "save_lpips_weights",
                  "train_version")


def __getattr__(name):
    """`experiment.LPIPSTraining` and the other training names, importing Lightning only when asked."""
    if name in TRAINING_NAMES:
        import training
        return getattr(training, name)
    raise AttributeError(f"module 'experiment' has no attribute {name!r}")


# ---------------------------------------------------------------- command line


def build_parser():
    parser = argparse.ArgumentParser(
        description="Score deep perceptual similarity metrics on the BAPPS validation sets (2AFC and JND). "
                    "Results go to OUT/results.csv (configurations already there are skipped) and the "
                    "table to OUT/results.md.")
    add_network_flags(parser)
    add_config_flags(parser, variant_help="; tune, scratch: trained backbones, need --train")
    add_data_flags(parser)
    add_weights_flags(parser, seed_help="the seed of --random-init's weights and of training (version k: "
                                        "seed + k)")
    add_training_flags(parser)
    add_study_flags(parser)
    return parser


def add_network_flags(parser):
    """--net, --layers, --per-layer, --preset: which networks, at which extraction points."""
    parser.add_argument("--net", nargs="+", metavar="NET",
                        help="loss networks, loaded one at a time: alex, squeeze, vgg (aliases alexnet, squeezenet, "
                             "squeezenet1_1, vgg16) or any torchvision classifier of the registry under its "
                             "torchvision name: vgg11/13/16/19[_bn], resnet18/34/50/101/152, wide_resnet50_2/101_2, "
                             "resnext50_32x4d/101_32x8d, densenet121/161/169/201, squeezenet1_0, "
                             "shufflenet_v2_x1_0/x2_0, mobilenet_v2, mobilenet_v3_large/small, "
                             "mnasnet0_5/0_75/1_0/1_3, efficientnet_b0..b7, regnet_x_*/regnet_y_* (400mf, 800mf, "
                             "1_6gf, 3_2gf, 8gf, 16gf, 32gf), googlenet, inception_v3; and the pixel metrics l2, "
                             "ssim (LPIPS's L2 and DSSIM, see --colorspace), alone or beside networks; default: "
                             "alex (with --preset: the preset's networks)")
    parser.add_argument("--layers", nargs="+", type=int, metavar="I",
                        help="extraction points, for every --net: point k is the k-th child module of the net's "
                             "`features` (of the whole model for ResNets, ResNeXts, Wide ResNets, ShuffleNets, "
                             "GoogLeNet and Inception v3, without their classification head and auxiliary "
                             "classifiers; of `layers` for MNASNet; of `stem` then `trunk_output` for RegNets), "
                             "as the original repository counts them; the activation is taken after it. "
                             f"Default: {DEFAULT_RULE}")
    parser.add_argument("--per-layer", action="store_true",
                        help="one configuration per extraction point instead of one with all of them (like the "
                             "original's --no_multilayer); all come from one backbone pass per image")
    parser.add_argument("--preset", choices=tuple(PRESETS),
                        help="paper: the original repository's grid, 14 networks at four points each: "
                             + ", ".join(f"{net} {'-'.join(map(str, points))}" for net, points in PRESET.items())
                             + "; whole, or point by point with --per-layer; --net picks some of them")


def add_data_flags(parser):
    """The BAPPS data, the loading and the outputs."""
    parser.add_argument("--data-root", default="datasets/BAPPS", help="BAPPS folder (default: %(default)s)")
    parser.add_argument("--no-download", action="store_true",
                        help="fail instead of downloading BAPPS parts missing under --data-root")
    parser.add_argument("--splits", nargs="+", choices=tuple(BAPPS_SETS), default=list(BAPPS_SETS),
                        help="BAPPS parts to evaluate: val (2AFC), jnd (JND); default: both")
    parser.add_argument("--subsplits", nargs="+", metavar="NAME",
                        help="only these subsplits, in each split that has them "
                             f"(val: {' '.join(SUBSPLITS['val'])}; jnd: {' '.join(SUBSPLITS['jnd/val'])}); "
                             "default: all")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N examples of each set")
    parser.add_argument("--batch-size", type=int, default=50, help="examples per batch (default: %(default)s)")
    parser.add_argument("--num-workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="DataLoader worker processes, 0: load in the main process (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="auto (cuda when available, else cpu), cpu, cuda, cuda:N (default: %(default)s)")
    parser.add_argument("--out", default="logs/perceptual_metric",
                        help="folder of results.csv and results.md (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="recompute configurations already in results.csv")
    parser.add_argument("--table", choices=("run", "all"), default="run",
                        help="run: print the table of this run's configurations, each marked computed (now) or "
                             "reused (from results.csv); all: of every configuration in results.csv. results.md "
                             "always holds all of them (default: %(default)s)")


def parse_args(argv=None):
    """Parsed and checked flags (nets canonical); a bad combination exits with a usage error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.points = network_points(args)
        args.net = list(args.points)
        check_args(args)
        check_pixel_args(args, parser)
    except ValueError as err:
        parser.error(str(err))
    return args


def network_points(args):
    """{canonical net: its extraction points} for --net, --layers and --preset, checked."""
    nets = list(dict.fromkeys(net if net in PIXEL_METRICS else canonical_net(net) for net in args.net or ()))
    pixel = {net: None for net in nets if net in PIXEL_METRICS}  # no extraction points
    nets = [net for net in nets if net not in PIXEL_METRICS]
    if args.preset is None:
        return {**pixel, **{net: check_layers(net, args.layers) for net in nets or ([] if pixel else ["alex"])}}
    grid = PRESETS[args.preset]
    if args.layers is not None:
        raise ValueError(f"--preset {args.preset} sets the extraction points of each network: drop --layers, "
                         f"or drop --preset and pass --net and --layers")
    outside = [net for net in nets if net not in grid]
    if outside:
        raise ValueError(f"--preset {args.preset} has no {', '.join(outside)}; its networks: {', '.join(grid)}")
    return {**pixel, **{net: list(grid[net]) for net in nets or ([] if pixel else grid)}}


def check_args(args):
    """Raise ValueError, saying the fix, for flags that cannot run together."""
    pixel = [net for net in args.net if net in PIXEL_METRICS]
    if pixel and args.train:
        raise ValueError(f"--train trains networks; the pixel metrics ({', '.join(pixel)}) have nothing to "
                         f"train: evaluate them in a run without --train")
    if args.variant in ("tune", "scratch") and not args.train:
        raise ValueError(f"--variant {args.variant} trains the backbone: it needs --train")
    if args.variant == "baseline" and args.lpips_weights:
        raise ValueError("--variant baseline has no linear layers: drop --lpips-weights or use --variant lin")
    if args.variant == "lin" and not args.lpips_weights and not args.train:
        raise ValueError("--variant lin without training evaluates given linear weights: pass --lpips-weights "
                         "official (LPIPS v0.1), official-v0.0 (LPIPS v0.0) or PATH (an LPIPS-format file), "
                         "or --train")
    check_training_args(args)
    check_network_args(args)
    check_study_args(args)
    valid = [s for split in args.splits for s in SUBSPLITS[BAPPS_SETS[split][1]]]
    unknown = [s for s in args.subsplits or () if s not in valid]
    if unknown:
        raise ValueError(f"--subsplits {' '.join(unknown)}: no such subsplit in --splits {' '.join(args.splits)}; "
                         f"valid: {' '.join(dict.fromkeys(valid))}")
    for flag, value, least in (("--limit", args.limit, 1), ("--batch-size", args.batch_size, 1),
                               ("--num-workers", args.num_workers, 0)):
        if value is not None and value < least:
            raise ValueError(f"{flag} must be at least {least}, got {value}")
    pick_device(args.device)
    if not args.no_download:
        retry_settings()


def check_pixel_args(args, parser):
    """Raise ValueError for flags that do not apply to a run of pixel metrics alone (they have no backbone)."""
    if any(net not in PIXEL_METRICS for net in args.net):
        return
    given = [f"--{name.replace('_', '-')}" for name in NETWORK_FLAGS if getattr(args, name) != parser.get_default(name)]
    if given:
        raise ValueError(f"{' '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to the pixel metrics "
                         f"({' '.join(args.net)}), which have no network: drop {'it' if len(given) == 1 else 'them'}, "
                         f"or add the networks {'it is' if len(given) == 1 else 'they are'} for to --net")


def check_network_args(args):
    """Raise ValueError, saying the fix, for --layers, --per-layer and --random-init that cannot run."""
    official_nets = [net for net, points in args.points.items() if net not in PIXEL_METRICS
                     and (points != DEFAULT_LAYERS.get(net) or net not in LPIPS_NETS)]
    if args.lpips_weights in OFFICIAL_VERSIONS and official_nets:
        raise ValueError(f"--lpips-weights {args.lpips_weights} holds LPIPS's weights for alex, squeeze and vgg "
                         f"at their default points, not for {', '.join(official_nets)} at "
                         f"{'; '.join(layers_text(args.points[net]) for net in official_nets)}: train weights "
                         f"with --train, or pass an LPIPS-format file that fits")
    if args.per_layer and args.variant == "lin" and args.lpips_weights and not args.train:
        check_single_point_weights(official_lpips_path(args.net[0], args.lpips_weights)
                                   if args.lpips_weights in OFFICIAL_VERSIONS else args.lpips_weights)
    if args.random_init and args.train:
        raise ValueError("--random-init evaluates untrained backbones; to train from a random backbone use "
                         "--variant scratch --train")


def check_single_point_weights(path):
    """Raise ValueError unless the LPIPS-format file `path` (if it exists) holds linear weights for one point."""
    if not os.path.isfile(path):
        return  # the evaluation says which file is missing
    count = len({re.sub(r"^(?:\w+_)?lin(\d+)\..*", r"\1", key) for key in load_state_dict_file(path)})
    if count > 1:
        raise ValueError(f"--per-layer scores each extraction point on its own, but {path} holds linear "
                         f"weights for {count} points: pass weights trained for one point (--layers P "
                         f"--variant lin --train), or drop --per-layer")


def weights_version(lpips_weights):
    """The version a linear-weights file was trained as (its folder `version_K`), else 0."""
    if lpips_weights is None or lpips_weights in OFFICIAL_VERSIONS:
        return 0
    match = re.fullmatch(r"version_(\d+)", Path(lpips_weights).parent.name)
    return int(match.group(1)) if match else 0


# ---------------------------------------------------------------- training flags


def add_training_flags(parser):
    """The --train flags: the LPIPS recipe by default, Lightning's scaling options passed through."""
    group = parser.add_argument_group(
        "training", "--train learns --variant lin (linear weights on the frozen backbone), tune (also the "
        "pretrained backbone) or scratch (also a randomly initialised backbone) on BAPPS train with the LPIPS "
        "recipe, then evaluates each trained version. Checkpoints and lin.pth (LPIPS format, for "
        "--lpips-weights and lpips.LPIPS(model_path=...)) go to OUT/<net>[_<points>]_<variant>_<method>_"
        "<cn|nocn>_<normalize>/version_K (<points> such as 1-4-7-11 when not the net's default), with "
        "training.json, the settings and data it is trained with; an interrupted training resumes from its last "
        "finished epoch (to the same weights as without the stop), a finished one is reused, either only with "
        "the same settings (others are an error naming them). With --per-layer each point is trained on its "
        "own. results.csv names each version's rows by the file they are computed from (lin.pth for lin, "
        "last.ckpt for tune and scratch), so they never mix with rows of other weights (such as --lpips-weights "
        "official); a version trained anew replaces the old one in the table.")
    group.add_argument("--train", action="store_true", help="train, then evaluate")
    group.add_argument("--train-subsplits", nargs="+", choices=SUBSPLITS["train"], default=list(SUBSPLITS["train"]),
                       metavar="NAME", help=f"BAPPS train subsplits (default: {' '.join(SUBSPLITS['train'])})")
    group.add_argument("--epochs", type=int, default=10,
                       help="epochs in all: the first half at --lr, the second decaying linearly to 0 "
                            "(default: %(default)s)")
    group.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: %(default)s)")
    group.add_argument("--repetitions", type=int, default=1, metavar="K",
                       help="train K independent versions, version_0..K-1 with seeds --seed + k; the table shows "
                            "their mean ± standard deviation (default: %(default)s)")
    group.add_argument("--init", choices=INITS, default="lpips",
                       help="lpips: the recipe's initialisation; stable: non-negative linear weights and a zero "
                            "output layer in the ranking head, which avoids trainings that stall with the linear "
                            "weights at the clamp on small data (see LPIPSTraining.initialise) "
                            "(default: %(default)s)")
    group.add_argument("--logger", choices=("wandb", "csv", "tensorboard"), default="wandb",
                       help="training logs under OUT; wandb without an API key logs offline "
                            "(default: %(default)s)")
    group.add_argument("--devices", type=devices_arg,
                       help="Lightning Trainer devices: a number, a list such as 0,1, or auto (default: as --device)")
    group.add_argument("--num-nodes", type=int, default=1, help="Lightning Trainer num_nodes (default: 1)")
    group.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp (default: auto)")
    group.add_argument("--precision", help="Lightning precision, e.g. 16-mixed, bf16-mixed (default: 32-true)")


def check_training_args(args):
    """Raise ValueError, saying the fix, for training flags that cannot run together."""
    if not args.train:
        return
    if args.variant not in TRAINED_VARIANTS:
        raise ValueError(f"--train learns linear weights: use --variant {', '.join(TRAINED_VARIANTS)}")
    if args.lpips_weights:
        raise ValueError("--train learns the linear weights: drop --lpips-weights")
    for flag, value in (("--epochs", args.epochs), ("--repetitions", args.repetitions),
                        ("--num-nodes", args.num_nodes)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if args.lr <= 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")


# ---------------------------------------------------------------- running


def evaluate_flags(net, args, sets, device, configs, version=0, lpips_weights=None, build=None):
    """Score `net` on `sets` for those of `configs` (see `evaluation.net_configs`) that OUT/results.csv lacks.

    `build(configs)` returns {config: metric} (default: `build_metrics` with the flags); `lpips_weights`
    (default --lpips-weights) names the linear weights the rows are computed with. Returns the table rows of
    `configs`, each marked computed now or reused (`results.run_marks`).
    """
    lpips_weights = args.lpips_weights if lpips_weights is None else lpips_weights
    backbones = Backbones.from_flags(args)
    run = flag_run_columns(net, args, version, lpips_weights)
    if build is None:
        def build(needed):
            return build_metrics(net, args.variant, needed, args.normalize, lpips_weights, backbones,
                                 colorspace=args.colorspace)
    computed = evaluate_net(net, configs, sets, results_path(args.out), run, build, device, args.batch_size,
                            args.num_workers, args.overwrite, shifts=args.shift or (),
                            distances_dir=saved_distances_dir(args))
    return run_marks(run, configs, sets, computed)


def flag_run_columns(net, args, version=0, lpips_weights=None):
    """The columns every results row of `net` shares under the flags (`results.run_columns`)."""
    if net in PIXEL_METRICS:
        weights = None
    elif args.variant == "scratch":  # trained from a random backbone, each version from its own seed
        weights = weights_identity(net, None, lpips_weights, random_seed=args.seed + version)
    else:
        weights = backbones_identity(net, Backbones.from_flags(args), lpips_weights)
    return run_columns(net, args.variant, args.colorspace if net in PIXEL_METRICS else args.normalize, version,
                       args.limit, weights)


def train_net(training, net, args, sets, device):
    """Train --repetitions versions of each configuration of `net`, evaluating each into results.csv.

    A configuration is a method and channel norm on the net's extraction points, or with
    --per-layer on each point alone. Finished versions are reused (if trained with the same settings).
    Rows name each version by the file they are computed from (`training.trained_file`), so a version
    trained anew is evaluated anew. With several processes (DDP) only the first evaluates; the others
    wait for it. Lightning's information lines are left out. Returns the table rows marked as
    `evaluate_flags` does.
    """
    data = training.training_set(args.data_root, args.train_subsplits, args.limit, not args.no_download)
    points, marks = args.points[net], {}
    with training.lightning_quiet():
        for layers in [[p] for p in points] if args.per_layer else [points]:
            for method, norm in requested_configs(args.method, args.channel_norm):
                for version in range(args.repetitions):
                    marks.update(train_one(training, net, args, sets, data, device, (method, norm, tuple(layers)),
                                           version))
    return marks


def train_one(training, net, args, sets, data, device, config, version):
    """Train (or reuse) one version of one configuration (method, channel_norm, points), then evaluate it
    (in the first process only); returns its table row marked (`evaluate_flags`), {} in the other processes."""
    method, norm, layers = config
    # the net's default points stay unnamed, as in the versions trained before points could be chosen
    named = None if list(layers) == default_layers(net) else list(layers)
    weights = Backbones.from_flags(args).file(net) if args.weights_dir else None
    module = training.train_version(data, args.out, version, seed=args.seed, batch_size=args.batch_size,
                                    num_workers=args.num_workers, logger=args.logger, scale=trainer_scale(args),
                                    net=net, method=method, channel_norm=norm, variant=args.variant,
                                    normalize=args.normalize, lr=args.lr, epochs=args.epochs, init=args.init,
                                    layers=named, weights=weights)
    marks = {}
    if training.is_global_zero():
        folder = training.version_dir(args.out, version, net, args.variant, method, norm, args.normalize, named)
        marks = evaluate_flags(net, args, sets, device, [config], version,
                               lpips_weights=training.trained_file(folder, args.variant),
                               build=lambda configs: dict.fromkeys(configs, module.metric))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return marks


def devices_arg(text):
    """argparse type for --devices: what Lightning takes, as text: auto, a count (-1: all), or indices 0,1."""
    if text == "auto" or re.fullmatch(r"-1|[1-9]\d*|\d+(,\d+)*,?", text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not auto, a number of devices (-1: all) or a list of device "
                                     f"indices such as 0,1")


def trainer_scale(args):
    """Lightning Trainer device options from --device, --devices, --num-nodes, --strategy, --precision."""
    device = pick_device(args.device) if args.device != "auto" else None
    accelerator = "auto" if device is None else {"cuda": "gpu"}.get(device.type, device.type)
    devices = args.devices or ([device.index] if device is not None and device.index is not None else "auto")
    return {"accelerator": accelerator, "devices": devices, "num_nodes": args.num_nodes,
            "strategy": args.strategy, "precision": args.precision}


def run(args):
    """Evaluate (or train, then evaluate) every --net, then print the table."""
    check_writable(args.out, OUTPUTS)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    if args.train:
        import training  # Lightning, only when training
    needs_backbone = not (args.train and args.variant == "scratch")
    preflight(args.net if needs_backbone else [], Backbones.from_flags(args), args.lpips_weights)
    sets = bapps_sets(args.data_root, args.splits, args.subsplits, not args.no_download, args.limit)
    marks = {}
    for net in args.net:
        if args.train:
            marks.update(train_net(training, net, args, sets, device))
        else:
            configs = requested_configs(args.method, args.channel_norm)
            marks.update(evaluate_flags(net, args, sets, device,
                                        net_configs(net, configs, args.points[net], args.per_layer),
                                        version=weights_version(args.lpips_weights)))
    if not args.train or training.is_global_zero():
        report(args.out, None if args.table == "all" else marks)
    if args.compare:
        print(compare_flags(args, sets))


# ---------------------------------------------------------------- robustness studies


def add_study_flags(parser):
    """--shift, --save-distances, --compare: the shift study, every example's distances, paired comparisons."""
    group = parser.add_argument_group(
        "robustness studies", f"Every score in results.csv comes with its interval (ci_low, ci_high): the {METHOD} "
        "(the same seed on every run, so the same examples give the same interval); the table shows value ± the "
        "interval's half-width on its farther side, a mean over subsplits ± their half-widths added in quadrature "
        "over their number.")
    group.add_argument("--shift", nargs="+", type=int, metavar="N",
                       help="the n-pixel shift study of ST-LPIPS on the 2AFC val subsplits, for N in 1..3: p0 and p1 "
                            f"cropped to the columns [N, W-{SHIFT_OFFSET}+N), the reference to [0, W-{SHIFT_OFFSET})"
                            " (all rows kept); rows with dataset shift<N> (shift0: the cropped baseline, always "
                            "computed) and measures score, accuracy and, from N = 1, rank_flips (the fraction of "
                            "triplets whose d0 < d1 differs from shift 0); the table adds the mean 2AFC at each "
                            "shift and the mean rank-flip rate. E.g. --shift 1 2 3")
    group.add_argument("--save-distances", action="store_true",
                       help="also keep every example's distances, per configuration and set, in "
                            f"OUT/{DISTANCES_FOLDER}/<configuration>/<dataset>_<subsplit>_<data>.npz (numpy arrays "
                            "d0, d1, judge for 2AFC and shift sets, d, same for JND, in the examples' order; "
                            "np.load reads them); a configuration whose distances are not saved yet is computed "
                            "again")
    group.add_argument("--compare", nargs=2, metavar=("A", "B"),
                       help="after the evaluation, the paired comparison of two of this run's configurations on "
                            "the 2AFC val subsplits: B's mean 2AFC minus A's with its paired (stratified) bootstrap "
                            "interval and p-value; A and B name a configuration by its net, layers, method and "
                            "cn or nocn joined by '/', as far as needed to tell it apart (e.g. --method spatial "
                            "spatial+sort --compare spatial spatial+sort; alex/nocn vgg/cn); implies "
                            "--save-distances")


def check_study_args(args):
    """Raise ValueError, saying the fix, for study flags that cannot run."""
    if args.shift is not None:
        check_shifts(args.shift)
    if (args.shift or args.compare) and "val" not in args.splits:
        raise ValueError(f"--{'shift' if args.shift else 'compare'} works on the 2AFC val subsplits: add val to "
                         f"--splits")
    if args.compare:
        if args.train:
            raise ValueError("--compare compares evaluated configurations: train first, then compare the trained "
                             "versions in runs with --lpips-weights OUT/<experiment>/version_K/lin.pth")
        for spec in args.compare:
            find_config(spec, compared_candidates(args))


def saved_distances_dir(args):
    """Where --save-distances (and --compare) keep the distances; None without them."""
    return distances_folder(args.out) if args.save_distances or args.compare else None


def compared_candidates(args):
    """[(net, config)] of every configuration of the run, as --compare names them."""
    configs = requested_configs(args.method, args.channel_norm)
    return [(net, config) for net in args.net
            for config in net_configs(net, configs, args.points[net], args.per_layer)]


def compare_flags(args, sets):
    """The --compare report, from the saved distances of the two configurations."""
    chosen = [find_config(spec, compared_candidates(args)) for spec in args.compare]
    runs = [(flag_run_columns(net, args, weights_version(args.lpips_weights), args.lpips_weights), config)
            for net, config in chosen]
    twoafc = [bapps_set for bapps_set in sets if bapps_set.dataset == "2afc"]
    comparison = compare_2afc(saved_distances_dir(args), *runs, twoafc)
    return comparison_report(*(config_label(*c) for c in chosen), comparison)


def main(argv=None):
    args = parse_args(argv)
    resumes = "; a training resumes from its last finished epoch" if args.train else ""
    return run_main("experiment.py", lambda: run(args),
                    interrupted=f"interrupted: finished sets are saved in {results_path(args.out)}; "
                                f"rerun the same command to compute the rest{resumes}")


if __name__ == "__main__":
    sys.exit(main())
